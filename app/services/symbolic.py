"""Symbolic regression on a run's KAN: suggestions, fix / unfix, auto-symbolic, pruning,
formula, and retraining (a new child run that starts from the edited model).

Edits change the run's *current* model (``current_weights``); the trained weights stay as they
were, so the history is kept: a retrain is a new run whose ``parent_run_id`` points here. An
edit is computed outside any transaction and stored in a short one that checks the model's
revision (:func:`_edit`), so a long auto-symbolic never holds the database's write lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.db.models import ModelArtifact
from app.db.session import Database, rowcount
from app.services.ensembles import retrain_config
from app.services.errors import ConflictError, NotFoundError, ServiceError
from app.services.inspection import (
    LoadedModel,
    _check_edge,
    cached_result,
    load_model,
    model_bytes,
    output_names,
    require_kan,
)
from app.services.numbers import finite_or_none
from app.services.runs import create_run, get_run

#: rows a suggestion is fitted on at most (spread over the training rows)
SYMBOLIC_FIT_ROWS = 512


def suggestions(
    session: Session,
    run_id: int,
    layer: int,
    i: int,
    j: int,
    top: int = 8,
    library: list[str] | None = None,
) -> dict[str, Any]:
    from kan_core.symbolic import suggest

    loaded = load_model(session, run_id)
    require_kan(loaded)
    _check_edge(loaded, layer, i, j)
    key = (
        "suggest",
        str(session.get_bind().engine.url),
        run_id,
        loaded.version,
        layer,
        i,
        j,
        top,
        tuple(library or ()),
    )

    def compute() -> dict[str, Any]:
        # R² first (no complexity weight): fits within 0.05 decades of unexplained variance of
        # each other count as equal and the simpler is listed first; a `0` with R² 0 can no
        # longer outrank a fit that explains the edge
        x = loaded.x_within_budget("suggest")
        fits = suggest(
            loaded.model, x, layer, i, j, library=library, top=top, complexity_weight=0.0,
            max_points=SYMBOLIC_FIT_ROWS,
        )  # fmt: skip
        suggestions = [
            {
                "name": c.name,
                "r2": finite_or_none(c.r2),
                "complexity": c.complexity,
                "params": [finite_or_none(p) for p in c.params],
            }
            for c in fits
        ]
        used = min(x.shape[0], SYMBOLIC_FIT_ROWS)
        return {"suggestions": suggestions, **loaded.rows_used(used)}

    return {"run_id": run_id, "layer": layer, "i": i, "j": j, **cached_result(key, compute)}


#: tries of an edit whose model was changed by another edit while it was computed
EDIT_ATTEMPTS = 3

T = TypeVar("T")


def _edit(
    db: Database,
    run_id: int,
    apply: Callable[[LoadedModel, Any], T],
    changed: Callable[[T], bool] | None = None,
) -> T:
    """Apply ``apply(loaded, model)`` to a private copy of the run's current model and store it.

    The model is read in a read transaction and edited outside any transaction (an
    auto-symbolic on a large KAN takes minutes; on SQLite a write transaction would hold the
    database's only write lock all that time). The result is written in a short transaction
    with an optimistic check: only if the model's ``revision`` is still the one the edit
    started from. Otherwise another edit landed in between; the edit is computed again on the
    new model (up to ``EDIT_ATTEMPTS`` times, then 409). When ``changed(result)`` is False the
    model was left as it was and nothing is written."""
    from kan_core.io import model_from_bytes, model_to_bytes

    for _ in range(EDIT_ATTEMPTS):
        with db.read() as s:
            loaded = load_model(s, run_id)
            require_kan(loaded)
            row = s.execute(
                select(
                    ModelArtifact.revision, ModelArtifact.weights, ModelArtifact.current_weights
                ).where(ModelArtifact.run_id == run_id)
            ).one()  # revision and bytes from one statement: one snapshot on PostgreSQL too
        model, _ = model_from_bytes(row.current_weights or row.weights, device="cpu")
        result = apply(loaded, model)
        if changed is not None and not changed(result):
            return result
        blob = model_to_bytes(model, loaded.meta)
        if _store_edit(db, run_id, row.revision, blob):
            return result
    raise ConflictError(
        f"Run {run_id}'s model was changed by other edits while this one was computed, "
        f"{EDIT_ATTEMPTS} times in a row. Ask again once the other edits are done."
    )


def _store_edit(db: Database, run_id: int, revision: int | None, blob: bytes | None) -> bool:
    """Store an edited model (None: back to the trained one) if the model is still at
    ``revision``; False if another edit got there first. A short write transaction."""
    with db.write() as s:
        res = s.execute(
            update(ModelArtifact)
            .where(ModelArtifact.run_id == run_id, ModelArtifact.revision == revision)
            .values(current_weights=blob, revision=(revision or 0) + 1)
            .execution_options(synchronize_session=False)
        )
        if rowcount(res) == 1:
            return True
        if s.scalar(select(ModelArtifact.revision).where(ModelArtifact.run_id == run_id)) is None:
            raise NotFoundError(f"Run {run_id} and its model no longer exist.")
        return False


def fix_edge(db: Database, run_id: int, layer: int, i: int, j: int, name: str) -> dict[str, Any]:
    from kan_core.functions import get_function
    from kan_core.symbolic import fix

    get_function(name)  # unknown names → UnknownFunctionError (422) listing the options

    def apply(loaded: LoadedModel, model: Any) -> Any:
        _check_edge(loaded, layer, i, j)
        return fix(model, loaded.x_within_budget("fix"), layer, i, j, name)

    fit = _edit(db, run_id, apply)
    return {
        "run_id": run_id,
        "layer": layer,
        "i": i,
        "j": j,
        "symbolic": fit.name,
        "r2": finite_or_none(fit.r2),
    }


def unfix_edge(db: Database, run_id: int, layer: int, i: int, j: int) -> dict[str, Any]:
    from kan_core.symbolic import unfix

    def apply(loaded: LoadedModel, model: Any) -> None:
        _check_edge(loaded, layer, i, j)
        unfix(model, layer, i, j)

    _edit(db, run_id, apply)
    return {"run_id": run_id, "layer": layer, "i": i, "j": j, "symbolic": None, "r2": None}


def auto_symbolic(
    db: Database,
    run_id: int,
    r2_threshold: float,
    library: list[str] | None,
    complexity_weight: float,
    time_budget_s: float | None = None,
) -> dict[str, Any]:
    """Fix every live numeric edge whose best candidate reaches ``r2_threshold``.

    With ``time_budget_s`` (KANSCOPE_AUTO_SYMBOLIC_TIMEOUT_S) no batch of edges starts once
    the budget is spent, retries after a conflicting edit included: the edges fixed by then
    are stored (each one whole, in the short revision-checked write), the rest stay splines
    and are counted in ``n_out_of_time`` with a ``note``; calling again continues with them.
    """
    from kan_core.symbolic import auto_symbolic as _auto

    deadline = None if time_budget_s is None else time.monotonic() + time_budget_s

    def apply(loaded: LoadedModel, model: Any) -> tuple[Any, int]:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        report = _auto(
            model,
            loaded.x_within_budget("auto_symbolic", live_edges=_numeric_live_edges(model)),
            r2_threshold=r2_threshold,
            complexity_weight=complexity_weight,
            library=library,
            time_budget_s=left,
        )
        return report, sum(int(layer.in_dim * layer.out_dim) for layer in model.layers)

    report, n_edges = _edit(db, run_id, apply, changed=lambda result: bool(result[0].fixed))
    fixed = [
        {
            "run_id": run_id,
            "layer": c.layer,
            "i": c.i,
            "j": c.j,
            "symbolic": c.fit.name,
            "r2": finite_or_none(c.fit.r2),
        }
        for c in report.fixed
    ]
    n_late = len(report.out_of_time)
    note = None
    if n_late:
        note = (
            f"Time ran out after {time_budget_s:g} s (KANSCOPE_AUTO_SYMBOLIC_TIMEOUT_S): "
            f"{n_late} edge{'s were' if n_late != 1 else ' was'} not tried and left as "
            f"spline{'s' if n_late != 1 else ''}; the {len(fixed)} fixed edges are stored. Run "
            "auto-symbolic again to continue with the rest."
        )
    return {
        "run_id": run_id,
        "fixed": fixed,
        "n_fixed": len(fixed),
        "n_edges": n_edges,
        "n_numeric": len(report.numeric),
        "n_already_symbolic": report.already_symbolic,
        "n_inactive": report.inactive,
        "n_out_of_time": n_late,
        "note": note,
    }


def _numeric_live_edges(model: Any) -> list[int]:
    """Per layer, the edges auto-symbolic fits: live (reach an output) and still numeric."""
    from kan_core.symbolic import live_edges

    return [
        int((live & (layer.sym_mask == 0)).sum())
        for layer, live in zip(model.layers, live_edges(model), strict=True)
    ]


def prune(db: Database, run_id: int, threshold: float) -> dict[str, Any]:
    from kan_core.prune import prune_edges

    def apply(loaded: LoadedModel, model: Any) -> tuple[Any, list[str]]:
        x = loaded.x_within_budget("prune")
        return prune_edges(model, x, threshold), loaded.data.feature_names

    result, names = _edit(db, run_id, apply)
    return {
        "run_id": run_id,
        "pruned": result.pruned,
        "kept_inputs": [names[k] for k in result.kept_inputs],
    }


def reset_edits(db: Database, run_id: int) -> None:
    """Back to the model as trained (drops fixes and pruning)."""
    with db.read() as s:
        require_kan(load_model(s, run_id))
    with db.write() as s:  # whatever the edits were, this one wins: no revision check
        s.execute(
            update(ModelArtifact)
            .where(ModelArtifact.run_id == run_id)
            .values(current_weights=None, revision=func.coalesce(ModelArtifact.revision, 0) + 1)
            .execution_options(synchronize_session=False)
        )


def formula_result(session: Session, run_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """The formula per output in original units, rendered (text, LaTeX, srepr, Python).

    Computed by kan_core.symbolic.formula on the training data in a child process with a time
    limit (see formula_process); the result — or the failure — is cached per model version, and
    concurrent requests for the same version wait for one computation. While live edges are
    still numeric it is a partial formula (placeholders φ, ``numeric_edges``, ``note``; no R²
    of its own, no Python source): shown, never exported.
    """
    from app.services.formula_process import compute_formula, formula_calls
    from kan_core.io import model_to_bytes

    loaded = load_model(session, run_id)
    require_kan(loaded)
    model = loaded.model
    key = ("formula", str(session.get_bind().engine.url), run_id, loaded.version, timeout_s)

    def compute() -> tuple[str, Any]:
        d = loaded.data
        x = d.x_scaler.inverse_transform(d.x_train)
        if d.task == "regression":
            assert d.y_scaler is not None
            y, y_scaler = d.y_scaler.inverse_transform(d.y_train), d.y_scaler.to_dict()
        else:  # logits: the formula reproduces the network's class scores
            with torch.no_grad():
                y = model(d.x_train)
            y_scaler = None
        x_val = y_val = None  # the validation rows: the formula's R² where it was not fitted
        if d.x_val is not None and len(d.x_val):
            x_val = d.x_scaler.inverse_transform(d.x_val).numpy()
            if d.task == "regression":
                assert d.y_scaler is not None and d.y_val is not None
                y_val = d.y_scaler.inverse_transform(d.y_val).numpy()
            else:
                with torch.no_grad():
                    y_val = model(d.x_val).numpy()
        payload = {
            "model": model_to_bytes(model),
            "x": x.numpy(),
            "y": y.numpy(),
            "x_val": x_val,
            "y_val": y_val,
            "input_names": d.feature_names,
            "output_names": output_names(loaded),
            "x_scaler": d.x_scaler.to_dict(),
            "y_scaler": y_scaler,
        }
        try:
            return "ok", compute_formula(payload, timeout_s)
        except ServiceError as exc:  # remembered too: asking again gives the same answer now
            return "error", exc

    # concurrent requests for this model version share one computation (one sympy process)
    kind, value = formula_calls.run(key, lambda: cached_result(key, compute))
    if kind == "error":
        raise value
    return value


#: what the API shows of each output's formula (formula_process computes these and more)
FORMULA_OUTPUT_KEYS = (
    "name", "text", "latex", "r2", "val_r2", "rmse", "network_r2", "partial", "notes",
)  # fmt: skip


def formula_out(session: Session, run_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
    res = formula_result(session, run_id, timeout_s)
    loaded = load_model(session, run_id)
    n_edges = n_sym = 0
    for layer in loaded.model.layers:
        active = layer.mask > 0
        n_edges += int(active.sum())
        n_sym += int(((layer.sym_mask > 0) & active).sum())
    outputs = [{k: o[k] for k in FORMULA_OUTPUT_KEYS} for o in res["outputs"]]
    net = [o["network_r2"] for o in outputs if o["network_r2"] is not None]
    return {
        "run_id": run_id,
        "outputs": outputs,
        "network_r2": sum(net) / len(net) if net else None,
        "n_symbolic_edges": n_sym,
        "n_edges": n_edges,
        "complete": n_sym == n_edges,
        "numeric_edges": [{"layer": l, "i": i, "j": j} for l, i, j in res["numeric_edges"]],
        "note": res["note"],
    }


def retrain(
    session: Session,
    run_id: int,
    overrides: dict[str, Any],
    max_parameters: int,
    name: str | None = None,
) -> Any:
    """A new queued child run initialised from this run's current model (symbolic edges
    included). The caller commits and submits it. The child trains that one model: a retrain
    of an ensemble run is a single KAN (``ensembles.retrain_config``)."""
    parent = get_run(session, run_id)
    if not parent.has_model:
        raise ConflictError(f"Run {run_id} has no trained model to continue from.")
    if parent.model not in ("kan", "mlp"):
        raise ConflictError(f"Run {run_id} ({parent.model}) cannot be continued; retrain it anew.")
    weights = model_bytes(session, run_id, current=True)
    payload = dict(parent.config) | {k: v for k, v in overrides.items() if v is not None}
    payload = retrain_config(payload, parent.id)
    payload |= {
        "dataset_id": parent.dataset_id,
        "name": name or f"{parent.name or f'run {parent.id}'} (retrain)",
    }
    run, _ = create_run(
        session, payload, max_parameters, parent_run_id=parent.id, init_weights=weights
    )
    return run
