"""Formula extraction in a separate process with a time limit.

kan_core bounds every sympy rewrite by the size of the expression (``FormulaBounds``: a step
that would be too large is skipped and noted), but a very large network's composition still
takes time in sympy, and a thread cannot be stopped. So ``kan_core.symbolic.formula`` runs in a
child forked from a small fork server (started once, with torch/sympy/kan_core pre-imported,
single-threaded so forking is safe); past the limit the child is killed and the user gets a
422 saying what to simplify. The child returns plain strings (text, LaTeX, srepr, Python
source), so nothing is parsed or evaluated in the server.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

from app.services.errors import ServiceError
from app.services.numbers import finite_or_none

log = logging.getLogger("kanscope.formula")

PRELOAD = ["app.services.formula_process", "kan_core.symbolic", "kan_core.export", "kan_core.io"]

T = TypeVar("T")


class FormulaTimeoutError(ServiceError):
    status_code = 422


class FormulaFailedError(ServiceError):
    status_code = 422


def _context() -> Any:
    if sys.platform.startswith("linux") or sys.platform == "darwin":
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")  # pragma: no cover - Windows


def formula_strings(payload: dict[str, Any]) -> dict[str, Any]:
    """Run kan_core's formula and render it; called in the child (or directly in tests).

    Edges still numeric are shown as placeholders φ (a partial formula, ``numeric_edges``):
    such an output has LaTeX and text, no srepr and no R², and there is no Python source."""
    import torch

    from app.services.formula_scores import formula_scores, formula_values
    from kan_core.export import to_latex, to_python_source, to_sympy_srepr
    from kan_core.io import model_from_bytes
    from kan_core.model import KAN
    from kan_core.scaling import Standardizer
    from kan_core.symbolic import formula, numeric_edges_note

    torch.set_num_threads(1)
    model, _ = model_from_bytes(payload["model"])
    if not isinstance(model, KAN):  # the parent sends KANs only (formula_result checks)
        raise TypeError(f"a formula needs a KAN, got {type(model).__name__}")
    y_scaler = payload["y_scaler"]
    res = formula(
        model,
        torch.as_tensor(payload["x"]),
        torch.as_tensor(payload["y"]),
        input_names=payload["input_names"],
        output_names=payload["output_names"],
        x_scaler=Standardizer.from_dict(payload["x_scaler"]),
        y_scaler=Standardizer.from_dict(y_scaler) if y_scaler is not None else None,
        allow_numeric=True,
    )
    edges = [list(e) for e in res.numeric_edges]
    x_val, y_val = payload.get("x_val"), payload.get("y_val")

    def held_out_r2(f: Any, k: int) -> float | None:
        """Output ``k``'s formula on the run's validation rows, which it was not fitted on."""
        if f.partial or x_val is None or y_val is None:
            return None
        pred = formula_values(f.expr, res.inputs.symbols, x_val)
        return formula_scores(pred, y_val[:, k])["r2"]

    return {
        "outputs": [
            {
                "name": f.output,
                "text": str(f.expr),
                "latex": to_latex(f.expr, f.symbol.name),
                "srepr": None if f.partial else to_sympy_srepr(f.expr),
                "r2": finite_or_none(f.r2),
                "rmse": finite_or_none(f.rmse),
                "network_r2": finite_or_none(f.network_r2),
                "val_r2": held_out_r2(f, k),
                "partial": f.partial,
                "notes": list(f.notes),
            }
            for k, f in enumerate(res.formulas)
        ],
        "python": to_python_source(res.exprs(), res.inputs) if res.complete else None,
        "numeric_edges": edges,
        "note": numeric_edges_note(res.numeric_edges) if edges else None,
    }


def _child(conn: Any, payload: dict[str, Any]) -> None:
    from kan_core.errors import KanCoreError

    try:
        conn.send(("ok", formula_strings(payload)))
    except KanCoreError as exc:
        conn.send(("user", str(exc)))
    except Exception as exc:  # reported to the caller, who turns it into a 422 with the reason
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def compute_formula(payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The formula strings, or FormulaTimeoutError / KanCoreError-like 422s."""
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, payload), name="kanscope-formula", daemon=True)
    proc.start()
    log.info("formula process %s started", proc.pid)
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise FormulaTimeoutError(
                f"Simplifying the formula took longer than {timeout_s:g} s and was stopped. "
                "Fix simpler functions on the complex edges (e.g. x, x^2, exp, sin) or prune "
                "weak edges, then ask again."
            )
        try:
            kind, value = receiver.recv()
        except EOFError:
            raise FormulaFailedError(
                f"The formula process ended without an answer (exit code {proc.exitcode})."
            ) from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)
        receiver.close()
    if kind == "ok":
        return value
    if kind == "user":
        raise FormulaFailedError(value)
    raise FormulaFailedError(f"The formula could not be computed: {value}")


class SharedCalls:
    """Calls with the same key that overlap share one computation: the first caller computes,
    the others wait for its result (or its exception). Concurrent formula requests for one model
    version so start one sympy process, not one each. Per process; callers cache the result
    for the requests that come later."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future[Any]] = {}

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            future = self._running.get(key)
            first = future is None
            if future is None:
                future = self._running[key] = Future()
        if not first:
            return future.result()  # bounded: the computation has its own time limit
        try:
            value = compute()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._running[key]
        future.set_result(value)
        return value


formula_calls = SharedCalls()
