"""Memory budget: the peak memory of a training run or an inspection call, estimated before it
starts, against ``KANSCOPE_MAX_RUN_MEMORY_MB``.

A run that would need more is refused when it is created (422, nothing queued) with a message
that says which option to lower; an inspection call samples fewer rows until it fits, and is
refused (422) only when even the smallest sample does not. The local trainer also runs under an
operating-system limit on its private writable memory (:func:`limit_trainer_memory`), so an
estimate that is wrong ends the run ``failed`` with a message naming the setting
(:func:`out_of_memory_message`) instead of taking the machine down.

What is counted (bytes, float32 = 4): memory the run allocates on top of the interpreter and its
libraries (Python + torch + numba + the native operators, about 450 MB resident: not counted).

* persistent: the table (pandas float64 plus float32 tensors), the parameters, their gradients,
  the optimiser state (Adam 2 vectors, L-BFGS 2 × 10 history + 4) and an early-stopping copy;
* the largest of these phases:
  - a training step on ``batch`` rows: per layer rows × in × K basis buffers kept for backward
    (``FEATURE_COPIES_FIRST`` / ``_HIDDEN``: how many such buffers are live at the peak; the
    first layer's input needs no gradient, so it keeps fewer), hidden activations, rows × edges
    buffers when the sparsity penalty (lamb > 0) traces every edge, L-BFGS line-search copies;
  - evaluation (no gradients, one layer at a time) on up to 8192 rows;
  - a grid update on up to 4096 sampled rows (basis and edge values, least squares in float64);
  - a checkpoint (a copy of parameters and optimiser state, and its bytes);
* allocator slack: buffers under 32 MiB come from glibc's heap, which keeps freed memory (kan_core
  raises the trim threshold to 512 MiB): 1.3 × the heap-sized part of a KAN's largest phase, at
  most 1 GiB; plus ``FIXED_SLACK``.

Calibration (``python -m app.services.memory_calibration``: a fresh interpreter per
configuration, the growth of ``VmHWM`` over a few ``kan_core.train.fit`` steps; the table is in
that module's docstring): each constant is the measured count, per row and layer, rounded up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.services.errors import InvalidInputError

MB = 1024 * 1024
SETTING = "KANSCOPE_MAX_RUN_MEMORY_MB"

#: rows fit evaluates at once, rows a grid update samples, L-BFGS history (kan_core.train)
EVAL_ROWS = 8192
GRID_SAMPLE_ROWS = 4096
LBFGS_HISTORY = 10

#: live (rows × in × K) float32 buffers per layer at the peak of a training step, by basis
#: path (:func:`basis_path`); "cox_de_boor" counts per recursion level (k + 1 levels).
#: Measured (copies): cubic native ≈ 0 (features recomputed in backward), numba 1.0 / 1.25;
#: cardinal k=2 6.5 / 6.4, k=1 4.9; Cox–de Boor k=5 9.1 / 18.2, k=4 8.8 / 14.4; rbf 2.9 / 4.1;
#: relu_kan 4.3 / 5.95; chebyshev 2.5 / 6.0; rational 2.9 / 3.3 (first / hidden layers).
FEATURE_COPIES_FIRST = {
    "cubic": 0.1, "cubic_numba": 1.2, "cardinal": 7.0, "cox_de_boor": 1.9, "rbf": 3.3,
    "relu_kan": 4.8, "chebyshev": 2.8, "rational": 3.2, "af_kan": 6.0, "s_kan": 5.0,
}  # fmt: skip
FEATURE_COPIES_HIDDEN = {
    "cubic": 0.1, "cubic_numba": 1.5, "cardinal": 7.0, "cox_de_boor": 3.4, "rbf": 4.6,
    "relu_kan": 6.6, "chebyshev": 6.6, "rational": 3.7, "af_kan": 8.0, "s_kan": 7.0,
}  # fmt: skip
#: the same without gradients (evaluation, inspection): one layer at a time. Measured:
#: Cox–de Boor k=5 6.6, cardinal k=2 4.9, rbf 1.9, relu_kan 2.9, chebyshev 1.9, rational 2.0
FEATURE_COPIES_EVAL = {
    "cubic": 0.1, "cubic_numba": 1.2, "cardinal": 5.5, "cox_de_boor": 7.3, "rbf": 2.2,
    "relu_kan": 3.3, "chebyshev": 2.2, "rational": 2.3, "af_kan": 4.0, "s_kan": 3.5,
}  # fmt: skip
#: af_kan and s_kan (issue 25) are not measured: af_kan is relu_kan's passes plus two SiLUs,
#: s_kan its four families' features (bspline, rbf, chebyshev, rational) concatenated and masked
#: live (rows × Σ widths) buffers: activations and their gradients (KAN; MLP measured 2.1)
NODE_COPIES_KAN = 4.0
NODE_COPIES_MLP = 2.4
#: lamb > 0: live (rows × out × in) edge-value buffers with gradients, and extra feature copies
#: (the penalty's pass materialises the basis of every layer; measured 3.8 edge copies)
EDGE_COPIES_TRAIN = 4.2
PENALTY_FEATURE_COPIES = 3.0
#: grid update, bytes per sampled row and layer cell: in × K (basis, float64 copy, least
#: squares) and out × in (edge values before, float64 targets); measured 12.8 and 12.1
GRID_BYTES_PER_FEATURE = 9.0  # + 4 × the eval copies of the basis
GRID_BYTES_PER_EDGE = 14.0
#: L-BFGS's strong-Wolfe line search: parameter-sized copies during a step (measured ≈ 26)
LBFGS_STEP_VECTORS = 28
#: per table cell: pandas float64, float32 raw and standardised tensors, the CSV bytes
DATA_BYTES_PER_CELL = 8 * 3 + 4 * 2
#: the measured growth of a tiny fit (allocator arenas, autograd, thread buffers): 60-90 MB
FIXED_SLACK = 96 * MB
#: glibc serves allocations below 32 MiB from its heap (trainers raise the mmap threshold to
#: its maximum: `tune_trainer_allocator`) and keeps freed heap memory: measured 0.4-1.3 × the
#: heap-sized live bytes of a KAN's largest phase (an MLP's same-sized buffers are reused: none)
HEAP_BUFFER_LIMIT = 32 * MB
HEAP_SLACK_FACTOR = 1.3
HEAP_SLACK_MAX = 1024 * MB


def feature_count(basis: str, grid: int, k: int) -> int:
    """K, the basis functions per edge (kan_core.basis); for "rational", the powers of x its
    forward stacks (it has one feature)."""
    if basis == "rbf":
        return max(grid, 2)
    if basis == "chebyshev":
        return grid + 1
    if basis == "rational":
        return max(grid, 1) + max(k, 1) + 2
    if basis == "s_kan":  # kan_core.basis.SelectableBasis.FAMILIES side by side
        return sum(feature_count(f, grid, k) for f in ("bspline", "rbf", "chebyshev", "rational"))
    return grid + k


def basis_path(basis: str, k: int, adaptive: bool = False, cubic_engine: str = "native") -> str:
    """Which implementation computes the basis (and so how many buffers it keeps): "cubic"
    (native operators) or "cubic_numba" for cubic B-splines on the CPU, "cardinal" (uniform
    B-splines of order 1-2), "cox_de_boor" (order 4-5, or adaptive knots), else the basis."""
    if basis != "bspline":
        return basis
    if k == 3:
        return "cubic" if cubic_engine == "native" else "cubic_numba"
    if k <= 2 and not adaptive:
        return "cardinal"
    return "cox_de_boor"


def _copies(table: dict[str, float], path: str, k: int) -> float:
    c = table[path]
    return c * (k + 1) if path == "cox_de_boor" and table is not FEATURE_COPIES_EVAL else c


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes, and where they come from."""

    total_bytes: int
    parts: dict[str, int]  # persistent parts, the peak phase and the slack, bytes
    peak_phase: str  # "training step" | "evaluation" | "grid update" | "checkpoint"
    batch_rows: int  # rows per training step
    step_bytes_per_row: int  # training-step bytes per batch row

    @property
    def total_mb(self) -> float:
        return self.total_bytes / MB


def _heap_part(layer_bytes: list[tuple[float, float]]) -> float:
    """Of (live bytes, largest single buffer) per layer, the bytes that come from the heap."""
    return sum(live for live, biggest in layer_bytes if biggest < HEAP_BUFFER_LIMIT)


def estimate_run_memory_bytes(
    *,
    model: str,
    width: Sequence[int],
    n_train: int,
    n_val: int = 0,
    grid: int = 5,
    k: int = 3,
    basis: str = "bspline",
    batch_size: int | None = None,
    optimizer: str = "adam",
    dtype_bytes: int = 4,
    lamb: float = 0.0,
    update_grid_every: int = 0,
    grid_eps: float = 1.0,
    early_stopping: bool = False,
    cubic_engine: str = "native",
    n_table_columns: int | None = None,
) -> MemoryEstimate:
    """Peak memory of ``kan_core.train.fit`` for ``model`` ("kan" or "mlp") of ``width`` on
    ``n_train`` rows (``n_val`` validation rows), as the trainer runs it. Pure arithmetic.
    ``cubic_engine``: "native" (kan_core's C++ operators) or "numba"."""
    width = [int(w) for w in width]
    pairs = list(zip(width[:-1], width[1:], strict=False))
    n_train, n_val = max(1, int(n_train)), max(0, int(n_val))
    batch = n_train if not batch_size else min(int(batch_size), n_train)
    eval_rows = [min(EVAL_ROWS, n) for n in (n_train, n_val) if n]
    cols = n_table_columns if n_table_columns is not None else width[0] + width[-1]
    d = dtype_bytes
    edges = sum(a * b for a, b in pairs)
    nodes = sum(a + b for a, b in pairs)
    phases: dict[str, float] = {}
    heap: list[float] = []
    if model == "kan":
        n_feat = feature_count(basis, grid, k)
        span = n_feat + (k if basis == "bspline" else 0)  # the recursion's widest level
        path = basis_path(basis, k, update_grid_every > 0 and grid_eps < 1.0, cubic_engine)
        n_params = edges * (n_feat + 7) + sum(b for _, b in pairs)  # coef, w_base, affine, masks
        # per row: (live bytes, bytes of one buffer) of every layer's basis (and edge) buffers
        step: list[tuple[float, float]] = []
        for li, (a, b) in enumerate(pairs):
            table = FEATURE_COPIES_FIRST if li == 0 else FEATURE_COPIES_HIDDEN
            copies = _copies(table, path, k) + (PENALTY_FEATURE_COPIES if lamb > 0 else 0.0)
            step.append((a * n_feat * d * copies, a * span * d))
            if lamb > 0:  # the penalty's pass traces every edge with gradients
                step.append((a * b * d * EDGE_COPIES_TRAIN, a * b * d))
        step_row = sum(live for live, _ in step) + nodes * d * NODE_COPIES_KAN
        phases["training step"] = batch * step_row
        heap.append(_heap_part([(batch * live, batch * one) for live, one in step]))
        eval_copies = _copies(FEATURE_COPIES_EVAL, path, k)
        for rows in eval_rows:
            layer = [(rows * a * n_feat * d * eval_copies, rows * a * span * d) for a, _ in pairs]
            phases["evaluation"] = max(
                phases.get("evaluation", 0.0),
                max(live for live, _ in layer) + rows * nodes * d * 2,
            )
            heap.append(max(_heap_part([x]) for x in layer))
        if update_grid_every > 0 and basis in ("bspline", "rbf", "relu_kan", "af_kan", "s_kan"):
            g_rows = min(GRID_SAMPLE_ROWS, n_train)
            # the grid update computes the basis itself: numba for cubic splines, not native
            grid_path = basis_path(basis, k, grid_eps < 1.0, cubic_engine="numba")
            per_feature = GRID_BYTES_PER_FEATURE + d * _copies(FEATURE_COPIES_EVAL, grid_path, k)
            layer = [
                (
                    g_rows * (a * n_feat * per_feature + a * b * GRID_BYTES_PER_EDGE),
                    g_rows * a * max(span, b) * d,
                )
                for a, b in pairs
            ]
            phases["grid update"] = max(live for live, _ in layer)
            heap.append(max(_heap_part([x]) for x in layer))
    else:  # an MLP reuses same-sized buffers every step: no heap slack measured
        n_params = sum(a * b + b for a, b in pairs)
        step_row = nodes * d * NODE_COPIES_MLP
        phases["training step"] = batch * step_row
        phases["evaluation"] = max(eval_rows, default=0) * nodes * d
    lbfgs = optimizer == "lbfgs"
    state_vectors = 2 * LBFGS_HISTORY + 4 if lbfgs else 2
    if lbfgs:
        phases["training step"] += n_params * d * LBFGS_STEP_VECTORS
    phases["checkpoint"] = n_params * d * (1 + state_vectors) * 2  # CPU copy and its bytes
    parts = {
        "data": int((n_train + n_val) * cols * DATA_BYTES_PER_CELL),
        "parameters and optimiser state": int(
            n_params * d * (2 + state_vectors + (1 if early_stopping else 0))
        ),
    }
    peak_phase = max(phases, key=lambda p: phases[p])
    parts[peak_phase] = int(phases[peak_phase])
    parts["allocator slack"] = int(
        FIXED_SLACK + min(HEAP_SLACK_FACTOR * max(heap, default=0.0), HEAP_SLACK_MAX)
    )
    return MemoryEstimate(sum(parts.values()), parts, peak_phase, batch, int(step_row))


def max_run_memory_bytes(max_mb: int | None = None) -> int:
    if max_mb is None:
        from app.config import get_settings

        max_mb = get_settings().max_run_memory_mb
    return int(max_mb) * MB


class MemoryBudgetError(InvalidInputError):
    """The run or inspection would need more memory than KANSCOPE_MAX_RUN_MEMORY_MB (422)."""


def _fmt_mb(n: float) -> str:
    return f"{n / MB:,.0f} MB"


def cubic_engine_for(config: dict[str, Any]) -> str:
    """ "native" when the run will train on this machine's CPU with kan_core's C++ operators
    (local executor, CPU device, operators available here); else "numba", which keeps the
    features in memory (a Celery worker elsewhere may lack the operators; CUDA keeps them too)."""
    from app.config import get_settings

    settings = get_settings()
    device = config.get("device") or settings.device
    if settings.executor != "local" or device != "cpu":
        return "numba"
    try:
        from kan_core.engine import Engine, enabled

        return "native" if enabled(Engine.NATIVE) else "numba"
    except Exception:  # noqa: BLE001 - no operators: the numba figures
        return "numba"


def estimate_for_config(
    config: dict[str, Any],
    n_features: int,
    n_outputs: int,
    n_rows: int,
    cubic_engine: str | None = None,
) -> MemoryEstimate | None:
    """The estimate for a run config (as stored: the API's defaults filled in), or None for a
    model kind this module does not model (scikit-learn baselines, formula discovery)."""
    model = config.get("model", "kan")
    if model not in ("kan", "mlp"):
        return None
    if config.get("val_rows") is not None:
        n_val = len(config["val_rows"])
        n_train = len(config.get("train_rows") or []) or max(1, n_rows - n_val)
    else:
        n_val = int(round(n_rows * float(config.get("val_fraction", 0.2))))
        n_train = max(1, n_rows - n_val)
    width = [n_features, *[int(h) for h in config.get("hidden", [])], n_outputs]
    return estimate_run_memory_bytes(
        model=model,
        width=width,
        n_train=n_train,
        n_val=n_val,
        grid=int(config.get("grid", 5)),
        k=int(config.get("k", 3)),
        basis=str(config.get("basis", "bspline")),
        batch_size=config.get("batch_size"),
        optimizer=str(config.get("optimizer", "adam")),
        lamb=float(config.get("lamb", 0.0) or 0.0),
        update_grid_every=int(config.get("update_grid_every", 0) or 0),
        grid_eps=float(config.get("grid_eps", 1.0)),
        early_stopping=config.get("early_stopping_patience") is not None,
        cubic_engine=cubic_engine or cubic_engine_for(config),
    )


def check_run_memory(
    config: dict[str, Any],
    n_features: int,
    n_outputs: int,
    n_rows: int,
    max_mb: int | None = None,
) -> MemoryEstimate | None:
    """Raise MemoryBudgetError (422) if the run's estimated peak exceeds the cap; the message
    names the setting and the options that would make it fit (batch_size, grid, k, …)."""
    engine = cubic_engine_for(config) if config.get("model", "kan") == "kan" else "numba"
    est = estimate_for_config(config, n_features, n_outputs, n_rows, engine)
    cap = max_run_memory_bytes(max_mb)
    if est is None or est.total_bytes <= cap:
        return est

    def fits(**changes: Any) -> bool:
        e = estimate_for_config(config | changes, n_features, n_outputs, n_rows, engine)
        return e is not None and e.total_bytes <= cap

    raise MemoryBudgetError(_run_refusal(est, cap, config, fits, n_features))


def _largest(fits: Any, key: str, hi: int, **also: Any) -> int | None:
    """The largest value in 1..hi of option ``key`` that fits (the estimate grows with it)."""
    if hi < 1 or not fits(**also, **{key: 1}):
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(**also, **{key: mid}):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _run_refusal(
    est: MemoryEstimate, cap: int, config: dict[str, Any], fits: Any, n_features: int
) -> str:
    detail = ", ".join(f"{k} {_fmt_mb(v)}" for k, v in est.parts.items() if v >= MB)
    head = (
        f"This run would need about {_fmt_mb(est.total_bytes)} of memory ({detail}), more than "
        f"{SETTING} = {_fmt_mb(cap)}."
    )
    fixes: list[str] = []
    kan = config.get("model", "kan") == "kan"
    grid_updates = kan and int(config.get("update_grid_every", 0) or 0) > 0
    batch = _largest(fits, "batch_size", est.batch_rows - 1)
    if batch is not None:
        fixes.append(f"set batch_size to {batch:,} or less (rows per step; now {est.batch_rows:,})")
    elif grid_updates and fits(update_grid_every=0):
        fixes.append("set update_grid_every to 0 (a grid update samples up to 4,096 rows)")
    elif grid_updates:
        batch = _largest(fits, "batch_size", est.batch_rows - 1, update_grid_every=0)
        if batch is not None:
            fixes.append(f"set update_grid_every to 0 and batch_size to {batch:,} or less")
    if kan:
        grid = int(config.get("grid", 5))
        smaller = _largest(fits, "grid", grid - 1)
        if smaller is not None:
            fixes.append(f"lower grid to {smaller} or less (now {grid})")
        k = int(config.get("k", 3))
        if config.get("basis", "bspline") == "bspline" and k != 3 and fits(k=3):
            fixes.append(f"use k 3 (cubic splines keep far fewer buffers; now {k})")
    if config.get("optimizer") == "lbfgs" and fits(optimizer="adam"):
        fixes.append("use the adam optimizer (L-BFGS keeps about 50 copies of the parameters)")
    if fixes:
        advice = "Any one of these fits: " + "; ".join(fixes) + "."
    else:
        advice = "No single option change fits."
    hidden = [int(h) for h in config.get("hidden", [])]
    return (
        f"{head} {advice} Fewer feature columns (now {n_features}) or narrower hidden layers "
        f"(now {hidden}) need less too; or raise {SETTING}."
    )


# ── inspection ──────────────────────────────────────────────────────────────────────────────

#: the fewest rows an inspection call samples before it is refused: curves and scores, and
#: symbolic fits (fewer points rank candidate functions unreliably; kan_core fits on ≤ 512)
MIN_INSPECT_ROWS = 64
MIN_FIT_ROWS = 128
_FITS = ("suggest", "fix", "auto_symbolic")
#: per edge, Python objects of the network response (curve record, dict, pydantic, JSON)
NETWORK_BYTES_PER_EDGE = 2_000
#: symbolic fitting (kan_core.symbolic.fit_edge_candidates, Levenberg–Marquardt with autograd):
#: live float64 (edge × row) buffers, measured 51
FIT_COPIES = 56
#: live (rows × out × in) buffers while a layer's edge values are computed without gradients
#: (einsum output, SiLU term, sum, mask product), besides the one kept: measured 1.84
EDGE_COPIES_EVAL = 2.0


@dataclass(frozen=True)
class InspectionShape:
    """What an inspection estimate needs to know about a KAN."""

    width: list[int]
    n_features: int  # K per edge
    path: str  # basis path, see basis_path

    @classmethod
    def of(cls, model: Any) -> InspectionShape:
        first = model.layers[0].basis
        k = int(getattr(first, "k", 3))
        # edge_values computes the basis itself (numba on the CPU), never the native operators
        adaptive = not getattr(first, "_uniform", True)
        path = basis_path(first.name, k, adaptive, cubic_engine="numba")
        n_feat = max(int(layer.basis.num_features) for layer in model.layers)
        if first.name == "rational":
            n_feat = feature_count("rational", int(first.m), int(first.n))
        return cls([int(w) for w in model.width], n_feat, path)


def _traces_bytes(shape: InspectionShape, rows: int) -> float:
    """model.forward_with_activations on ``rows`` rows without gradients: every layer's edge
    values (rows × out × in) are kept; one layer's basis and edge intermediates at a time."""
    pairs = list(zip(shape.width[:-1], shape.width[1:], strict=False))
    # the basis module scales cubic features by 1/6 in a copy (the layer engines fold it in)
    copies = FEATURE_COPIES_EVAL[shape.path] + (1.0 if shape.path.startswith("cubic") else 0.0)
    kept = sum(rows * (a * b + a + b) * 4 for a, b in pairs)
    transient = max(
        rows * (a * shape.n_features * 4 * copies) + rows * a * b * 4 * EDGE_COPIES_EVAL
        for a, b in pairs
    )
    return kept + transient


def estimate_inspection_bytes(
    shape: InspectionShape,
    operation: str,
    rows: int,
    n_points: int = 32,
    live_edges: Sequence[int] | None = None,
) -> int:
    """Peak bytes of one inspection call on ``rows`` sampled rows.

    operation: "network" (all curves, ``n_points`` each), "edge" (one edge in detail),
    "suggest" / "fix" (one edge's candidates), "auto_symbolic" (every live numeric edge, per
    layer ``live_edges[l]``; default: all), "prune", "predict" (a batch of new rows)."""
    pairs = list(zip(shape.width[:-1], shape.width[1:], strict=False))
    edges = sum(a * b for a, b in pairs)
    traces = _traces_bytes(shape, rows)
    if operation == "network":
        sweep = max(n_points * a * b * 4 * (EDGE_COPIES_EVAL + 1) for a, b in pairs)
        total = traces + sweep + edges * NETWORK_BYTES_PER_EDGE
    elif operation == "edge":
        detail = max((200 + min(rows, 1000)) * a * b * 4 * EDGE_COPIES_EVAL for a, b in pairs)
        total = traces + detail
    elif operation == "auto_symbolic":
        per_layer = live_edges if live_edges is not None else [a * b for a, b in pairs]
        fit_rows = min(rows, 512)
        fit = max((int(e) * fit_rows * 8 * FIT_COPIES for e in per_layer), default=0)
        total = _traces_bytes(shape, fit_rows) + fit
    elif operation in ("suggest", "fix"):
        total = _traces_bytes(shape, min(rows, 512))
    elif operation in ("prune", "predict"):  # a plain forward keeps less: traces bound it
        total = traces
    else:
        raise ValueError(f"unknown inspection operation {operation!r}")
    return int(total + FIXED_SLACK)


def inspection_rows(
    shape: InspectionShape,
    operation: str,
    available_rows: int,
    max_mb: int | None = None,
    what: str = "this model",
    **kwargs: Any,
) -> int:
    """The most rows (≤ available_rows) an inspection call may sample to stay under the cap;
    MemoryBudgetError (422) when even MIN_INSPECT_ROWS (or all rows, if fewer) do not fit."""
    cap = max_run_memory_bytes(max_mb)
    rows = max(1, int(available_rows))
    if estimate_inspection_bytes(shape, operation, rows, **kwargs) <= cap:
        return rows
    floor = min(rows, MIN_FIT_ROWS if operation in _FITS else MIN_INSPECT_ROWS)
    need = estimate_inspection_bytes(shape, operation, floor, **kwargs)
    if need > cap:
        edges = sum(a * b for a, b in zip(shape.width[:-1], shape.width[1:], strict=False))
        raise MemoryBudgetError(
            f"{_OPERATION_NAMES[operation].capitalize()} of {what} (width {shape.width}, "
            f"{edges:,} edges) would need about {_fmt_mb(need)} of memory even on {floor} "
            f"sampled rows, more than {SETTING} = {_fmt_mb(cap)}. Prune the model first "
            "(fewer live edges), train a narrower model (fewer feature columns or hidden "
            f"units, a smaller grid), or raise {SETTING}."
        )
    lo, hi = floor, rows  # estimate grows with rows: the largest that fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate_inspection_bytes(shape, operation, mid, **kwargs) <= cap:
            lo = mid
        else:
            hi = mid
    return lo


_OPERATION_NAMES = {
    "network": "the network view",
    "edge": "the edge view",
    "suggest": "symbolic suggestions",
    "fix": "fixing an edge",
    "auto_symbolic": "auto-symbolic",
    "prune": "pruning",
    "predict": "predicting new rows",
}


# ── the trainer's operating-system limit ────────────────────────────────────────────────────

#: the trainer may grow its private writable memory by this multiple of the cap (at least the
#: cap + TRAINER_LIMIT_SLACK_MB) beyond what it holds when the limit is set: the estimate is an
#: upper bound, so only a wrong estimate meets the limit
TRAINER_LIMIT_FACTOR = 2.0
TRAINER_LIMIT_SLACK_MB = 1024


def _vm_data_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"^VmData:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def trainer_memory_limit_bytes(max_mb: int, current_bytes: int) -> int:
    cap = int(max_mb) * MB
    grow = max(int(cap * TRAINER_LIMIT_FACTOR), cap + TRAINER_LIMIT_SLACK_MB * MB)
    return current_bytes + grow


def limit_trainer_memory(max_mb: int) -> int | None:
    """Limit this process's private writable memory (RLIMIT_DATA: heap and anonymous mappings,
    what tensors live in) to what it holds now plus a multiple of the cap. An allocation beyond
    it fails at once (torch: "can't allocate memory", numpy/Python: MemoryError) instead of the
    machine swapping or the kernel killing a process. RLIMIT_AS is not used: torch, numba and
    the BLAS reserve gigabytes of address space they never touch. Returns the limit, or None
    where it is not applied (no /proc, or CUDA, which pins host memory of its own)."""
    import resource

    try:
        import torch

        if torch.cuda.is_available():
            return None
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    current = _vm_data_bytes()
    if current is None:
        return None
    limit = trainer_memory_limit_bytes(max_mb, current)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft < limit:
        return soft
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return limit


def tune_trainer_allocator() -> None:
    """A training process's opt-in to kan_core's glibc tuning (`cpu_kernels.tune_allocator`:
    freed feature buffers stay in the process instead of being page-faulted back every step;
    `HEAP_BUFFER_LIMIT` assumes it). The library never changes its host's allocator itself.
    KAN_CORE_MALLOC_TUNING=0 leaves the allocator alone."""
    if os.environ.get("KAN_CORE_MALLOC_TUNING") == "0":
        return
    from kan_core.cpu_kernels import tune_allocator

    tune_allocator()


_OOM_PATTERNS = ("can't allocate memory", "not enough memory", "cannot allocate memory",
                 "out of memory", "unable to allocate")  # fmt: skip


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(p in text for p in _OOM_PATTERNS)


def out_of_memory_message(exc: BaseException, what: str = "Training") -> str | None:
    """A message for an allocation failure that names the setting; None for other errors."""
    if not is_out_of_memory(exc):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    m = re.search(r"allocate (?:memory: you tried to allocate )?(\d+) bytes", first)
    size = f" ({int(m.group(1)) / MB:,.0f} MB in one piece)" if m else ""
    return (
        f"{what} ran out of memory{size}: it needed more than its estimate, and more than "
        f"{SETTING} allows for it. Lower batch_size (rows per step), grid, k, the hidden "
        f"widths or the feature columns, or raise {SETTING}. ({type(exc).__name__}: "
        f"{first[:200]})"
    )
