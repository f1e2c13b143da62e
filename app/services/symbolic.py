"""Symbolic regression on a run's KAN: suggestions, fix / unfix, auto-symbolic, pruning,
formula, and retraining (a new child run that starts from the edited model).

Edits change the run's *current* model (``current_weights``); the trained weights stay as they
were, so the history is kept: a retrain is a new run whose ``parent_run_id`` points here.
"""

from __future__ import annotations

from typing import Any

import torch
from sqlalchemy.orm import Session

from app.services.errors import ConflictError, ServiceError
from app.services.inspection import (
    _check_edge,
    cached_result,
    load_model,
    load_model_for_edit,
    model_bytes,
    output_names,
    require_kan,
    save_edited_model,
)
from app.services.numbers import finite_or_none
from app.services.runs import create_run, get_run


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
        str(session.get_bind().url),
        run_id,
        loaded.version,
        layer,
        i,
        j,
        top,
        tuple(library or ()),
    )

    def compute() -> list[dict[str, Any]]:
        fits = suggest(loaded.model, loaded.x_inspect, layer, i, j, library=library, top=top)
        return [
            {
                "name": c.name,
                "r2": finite_or_none(c.r2),
                "complexity": c.complexity,
                "params": [finite_or_none(p) for p in c.params],
            }
            for c in fits
        ]

    return {
        "run_id": run_id,
        "layer": layer,
        "i": i,
        "j": j,
        "suggestions": cached_result(key, compute),
    }


def fix_edge(
    session: Session, run_id: int, layer: int, i: int, j: int, name: str
) -> dict[str, Any]:
    from kan_core.functions import get_function
    from kan_core.symbolic import fix

    get_function(name)  # unknown names → UnknownFunctionError (422) listing the options
    loaded, model, art = load_model_for_edit(session, run_id)
    _check_edge(loaded, layer, i, j)
    fit = fix(model, loaded.x_inspect, layer, i, j, name)
    save_edited_model(session, art, model, loaded.meta)
    return {
        "run_id": run_id,
        "layer": layer,
        "i": i,
        "j": j,
        "symbolic": fit.name,
        "r2": finite_or_none(fit.r2),
    }


def unfix_edge(session: Session, run_id: int, layer: int, i: int, j: int) -> dict[str, Any]:
    from kan_core.symbolic import unfix

    loaded, model, art = load_model_for_edit(session, run_id)
    _check_edge(loaded, layer, i, j)
    unfix(model, layer, i, j)
    save_edited_model(session, art, model, loaded.meta)
    return {"run_id": run_id, "layer": layer, "i": i, "j": j, "symbolic": None, "r2": None}


def auto_symbolic(
    session: Session,
    run_id: int,
    r2_threshold: float,
    library: list[str] | None,
    complexity_weight: float,
) -> dict[str, Any]:
    from kan_core.symbolic import auto_symbolic as _auto

    loaded, model, art = load_model_for_edit(session, run_id)
    report = _auto(
        model,
        loaded.x_inspect,
        r2_threshold=r2_threshold,
        complexity_weight=complexity_weight,
        library=library,
    )
    save_edited_model(session, art, model, loaded.meta)
    n_edges = sum(int(layer.in_dim * layer.out_dim) for layer in model.layers)
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
    return {
        "run_id": run_id,
        "fixed": fixed,
        "n_fixed": len(fixed),
        "n_edges": n_edges,
        "n_numeric": len(report.numeric),
    }


def prune(session: Session, run_id: int, threshold: float) -> dict[str, Any]:
    from kan_core.prune import prune_edges

    loaded, model, art = load_model_for_edit(session, run_id)
    result = prune_edges(model, loaded.x_inspect, threshold)
    save_edited_model(session, art, model, loaded.meta)
    names = loaded.data.feature_names
    return {
        "run_id": run_id,
        "pruned": result.pruned,
        "kept_inputs": [names[k] for k in result.kept_inputs],
    }


def reset_edits(session: Session, run_id: int) -> None:
    """Back to the model as trained (drops fixes and pruning)."""
    loaded, _model, art = load_model_for_edit(session, run_id)
    art.current_weights = None
    art.revision = (art.revision or 0) + 1
    session.flush()


def formula_result(session: Session, run_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """The formula per output in original units, rendered (text, LaTeX, srepr, Python).

    Computed by kan_core.symbolic.formula on the training data in a child process with a time
    limit (see formula_process); the result — or the failure — is cached per model version.
    """
    from app.services.formula_process import compute_formula
    from kan_core.io import model_to_bytes
    from kan_core.symbolic import FormulaIncompleteError, live_edges

    loaded = load_model(session, run_id)
    require_kan(loaded)
    model = loaded.model
    numeric = [
        (li, int(i), int(j))
        for li, (layer, live) in enumerate(zip(model.layers, live_edges(model), strict=True))
        for j, i in zip(*torch.nonzero(live & (layer.sym_mask == 0), as_tuple=True), strict=True)
    ]
    if numeric:
        raise FormulaIncompleteError(numeric)
    key = ("formula", str(session.get_bind().url), run_id, loaded.version, timeout_s)

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
        payload = {
            "model": model_to_bytes(model),
            "x": x.numpy(),
            "y": y.numpy(),
            "input_names": d.feature_names,
            "output_names": output_names(loaded),
            "x_scaler": d.x_scaler.to_dict(),
            "y_scaler": y_scaler,
        }
        try:
            return "ok", compute_formula(payload, timeout_s)
        except ServiceError as exc:  # remembered too: asking again gives the same answer now
            return "error", exc

    kind, value = cached_result(key, compute)
    if kind == "error":
        raise value
    return value


def formula_out(session: Session, run_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
    res = formula_result(session, run_id, timeout_s)
    loaded = load_model(session, run_id)
    n_edges = n_sym = 0
    for layer in loaded.model.layers:
        active = layer.mask > 0
        n_edges += int(active.sum())
        n_sym += int(((layer.sym_mask > 0) & active).sum())
    outputs = [
        {k: o[k] for k in ("name", "text", "latex", "r2", "rmse", "network_r2")}
        for o in res["outputs"]
    ]
    net = [o["network_r2"] for o in outputs if o["network_r2"] is not None]
    return {
        "run_id": run_id,
        "outputs": outputs,
        "network_r2": sum(net) / len(net) if net else None,
        "n_symbolic_edges": n_sym,
        "n_edges": n_edges,
        "complete": n_sym == n_edges,
    }


def retrain(
    session: Session,
    run_id: int,
    overrides: dict[str, Any],
    max_parameters: int,
    name: str | None = None,
) -> Any:
    """A new queued child run initialised from this run's current model (symbolic edges
    included). The caller commits and submits it."""
    parent = get_run(session, run_id)
    if not parent.has_model:
        raise ConflictError(f"Run {run_id} has no trained model to continue from.")
    if parent.model not in ("kan", "mlp"):
        raise ConflictError(f"Run {run_id} ({parent.model}) cannot be continued; retrain it anew.")
    weights = model_bytes(session, run_id, current=True)
    payload = dict(parent.config) | {k: v for k, v in overrides.items() if v is not None}
    payload |= {
        "dataset_id": parent.dataset_id,
        "name": name or f"{parent.name or f'run {parent.id}'} (retrain)",
    }
    run, _ = create_run(
        session, payload, max_parameters, parent_run_id=parent.id, init_weights=weights
    )
    return run
