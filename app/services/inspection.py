"""Inspection of a trained run: model loading (cached), network structure with per-edge curves
and attribution, one edge in detail, predictions against the truth.

Curves are in standardised units (what the network sees); the scalers travel with the model so
formulas come out in original units.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from app.db.models import Dataset, ModelArtifact, Run
from app.services.datasets import frame_from_bytes
from app.services.ensemble_views import edge_band, prediction_intervals, stability
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.services.model_contract import PreparedData
from app.services.model_registry import get_model_spec
from app.services.run_data import prepare_data
from app.services.runs import get_run
from kan_core.metrics import r2_score

MAX_INSPECT_ROWS = 2048
#: the network response carries at most this many curve samples; wider models get fewer
#: points per edge, and beyond MAX_DRAWN_EDGES only the highest-scoring edges carry curves
MAX_CURVE_VALUES = 1_000_000
MAX_DRAWN_EDGES = 5_000


@dataclass
class LoadedModel:
    run_id: int
    model: Any  # kan_core KAN | MLP, eval mode, CPU — shared: never mutate
    meta: dict[str, Any]
    data: PreparedData
    version: str

    @property
    def x_inspect(self) -> torch.Tensor:
        x = self.data.x_train
        if x.shape[0] > MAX_INSPECT_ROWS:
            idx = torch.linspace(0, x.shape[0] - 1, MAX_INSPECT_ROWS).round().long()
            x = x[idx]
        return x

    def x_within_budget(self, operation: str, **kwargs: Any) -> torch.Tensor:
        """``x_inspect``, spread-sampled further so that ``operation`` stays under
        KANSCOPE_MAX_RUN_MEMORY_MB (app.services.memory; 422 when even the smallest sample
        does not fit). ``kwargs``: see ``estimate_inspection_bytes``."""
        from app.services.memory import InspectionShape, inspection_rows

        x = self.x_inspect
        rows = inspection_rows(
            InspectionShape.of(self.model), operation, x.shape[0],
            what=f"run {self.run_id}'s KAN", **kwargs,
        )  # fmt: skip
        if rows < x.shape[0]:
            x = x[torch.linspace(0, x.shape[0] - 1, rows).round().long()]
        return x

    def rows_used(self, used: int) -> dict[str, int]:
        """``rows_used`` / ``rows_total``: how many of the run's training rows an answer was
        computed on (fewer when they were sampled to keep it fast and within the budget)."""
        total = int(self.data.x_train.shape[0])
        return {"rows_used": min(int(used), total), "rows_total": total}


class _Cache:
    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._d: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
            return None

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_models = _Cache(8)
_results = _Cache(64)


def cached_result(key: tuple[Any, ...], compute: Any) -> Any:
    """Memoise an expensive derived result (network, formula) per model version."""
    value = _results.get(key)
    if value is None:
        value = compute()
        _results.put(key, value)
    return value


def _version(run: Run, art: ModelArtifact) -> str:
    """Changes with every edit, and differs between runs that reuse an id (SQLite can reuse
    the highest id after a delete)."""
    created = run.created_at.isoformat() if run.created_at else ""
    return f"{created}#{art.revision}"


def require_model(session: Session, run_id: int) -> tuple[Run, ModelArtifact]:
    run = get_run(session, run_id)
    art = session.get(ModelArtifact, run_id)
    if not run.has_model or art is None:
        raise ConflictError(
            f"Run {run_id} has no trained model yet (status {run.status}). "
            "Wait until it has succeeded."
        )
    return run, art


def run_data(session: Session, run: Run) -> PreparedData:
    ds = session.scalars(
        select(Dataset).where(Dataset.id == run.dataset_id).options(undefer(Dataset.content))
    ).one_or_none()
    if ds is None:
        raise NotFoundError(f"The dataset of run {run.id} no longer exists.")
    config = dict(run.config) | {"model": run.model, "task": run.task}
    return prepare_data(frame_from_bytes(ds.content), ds.columns, config)


def model_bytes(session: Session, run_id: int, current: bool = True) -> bytes:
    row = session.execute(
        select(ModelArtifact.weights, ModelArtifact.current_weights).where(
            ModelArtifact.run_id == run_id
        )
    ).one_or_none()
    if row is None or row.weights is None:
        raise ConflictError(f"Run {run_id} has no stored model weights.")
    return (row.current_weights or row.weights) if current else row.weights


def load_model(session: Session, run_id: int) -> LoadedModel:
    """The run's current model (after symbolic edits) with its data; cached per version."""
    from kan_core.io import model_from_bytes

    run, art = require_model(session, run_id)
    key = (str(session.get_bind().engine.url), run_id, _version(run, art))
    hit = _models.get(key)
    if hit is not None:
        return hit
    model, meta = model_from_bytes(model_bytes(session, run_id), device="cpu")
    loaded = LoadedModel(run_id, model, meta, run_data(session, run), _version(run, art))
    _models.put(key, loaded)
    return loaded


def load_model_for_edit(session: Session, run_id: int) -> tuple[LoadedModel, Any, ModelArtifact]:
    """A private, mutable copy of the current model, with the artifact row locked."""
    from kan_core.io import model_from_bytes

    loaded = load_model(session, run_id)
    require_kan(loaded)
    art = session.scalars(
        select(ModelArtifact).where(ModelArtifact.run_id == run_id).with_for_update()
    ).one()
    model, _ = model_from_bytes(model_bytes(session, run_id), device="cpu")
    return loaded, model, art


def save_edited_model(
    session: Session, art: ModelArtifact, model: Any, meta: dict[str, Any]
) -> None:
    from kan_core.io import model_to_bytes

    art.current_weights = model_to_bytes(model, meta)
    art.revision = (art.revision or 0) + 1
    session.flush()


def require_kan(loaded: LoadedModel) -> None:
    if getattr(loaded.model, "kind", None) != "kan":
        raise ConflictError(
            f"Run {loaded.run_id} is not a KAN; edges, curves and symbolic fitting need a KAN."
        )


def _floats(a: np.ndarray | list[float] | torch.Tensor) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(a).ravel()]


def input_scales(loaded: LoadedModel) -> list[list[float | None]]:
    """Per input column ``[mean, std]`` of the training rows: the network sees
    ``(value - mean) / std``, so an input edge's ``x`` is ``mean + std · x`` in the column's own
    units."""
    scaler = loaded.data.x_scaler
    return [list(pair) for pair in zip(_floats(scaler.mean), _floats(scaler.std), strict=True)]


def output_names(loaded: LoadedModel) -> list[str]:
    d = loaded.data
    return list(d.classes) if d.classes is not None else list(d.target_names)


def network(session: Session, run_id: int, n_points: int = 32) -> dict[str, Any]:
    loaded = load_model(session, run_id)
    require_kan(loaded)
    key = ("network", str(session.get_bind().engine.url), run_id, loaded.version, n_points)
    return cached_result(key, lambda: _network(loaded, n_points))


def _network(loaded: LoadedModel, n_points: int) -> dict[str, Any]:
    from kan_core.inspect import edge_curves, node_scores
    from kan_core.selectable import is_selectable, node_families

    model = loaded.model
    n_edges = sum(int(layer.in_dim * layer.out_dim) for layer in model.layers)
    n_points = max(2, min(n_points, MAX_CURVE_VALUES // max(1, n_edges)))
    x = loaded.x_within_budget("network", n_points=n_points)
    curves = edge_curves(model, x, n_points=n_points, max_data_points=1)
    nodes = node_scores(model, x)
    drawn: set[tuple[int, int, int]] | None = None
    if n_edges > MAX_DRAWN_EDGES:
        ranked = sorted(
            (
                (c.score if math.isfinite(c.score) else -1.0, c.layer, c.i, c.j)
                for layer_curves in curves
                for c in layer_curves
            ),
            reverse=True,
        )
        drawn = {(li, i, j) for _, li, i, j in ranked[:MAX_DRAWN_EDGES]}
    layers = []
    for li, layer_curves in enumerate(curves):
        layer = model.layers[li]
        mask = layer.mask.detach().cpu().numpy()
        edges = []
        for c in layer_curves:
            show = drawn is None or (li, c.i, c.j) in drawn
            edges.append(
                {
                    "i": c.i,
                    "j": c.j,
                    "score": c.score,
                    "symbolic": c.symbolic,
                    "active": bool(mask[c.j, c.i] > 0),
                    "x": _floats(c.x) if show else [],
                    "y": _floats(c.y) if show else [],
                }
            )
        layers.append(
            {
                "index": li,
                "in_dim": int(layer.in_dim),
                "out_dim": int(layer.out_dim),
                "edges": edges,
            }
        )
    return {
        "run_id": loaded.run_id,
        "width": [int(w) for w in model.width],
        "input_names": list(loaded.data.feature_names),
        "input_scales": input_scales(loaded),
        "output_names": output_names(loaded),
        "layers": layers,
        "node_scores": [_floats(n.detach().cpu().numpy()) for n in nodes],
        "node_families": node_families(model) if is_selectable(model) else None,
        **loaded.rows_used(x.shape[0]),
    }


def edge_detail(session: Session, run_id: int, layer: int, i: int, j: int) -> dict[str, Any]:
    from kan_core.inspect import edge_curve

    loaded = load_model(session, run_id)
    require_kan(loaded)
    _check_edge(loaded, layer, i, j)
    x = loaded.x_within_budget("edge")
    c = edge_curve(loaded.model, x, layer, i, j, n_points=200, max_data_points=1000)
    lay = loaded.model.layers[layer]
    affine = None
    if c.symbolic:
        affine = _floats(lay.sym_affine[j, i].detach().cpu().numpy())
    return {
        "run_id": run_id,
        "layer": layer,
        "i": i,
        "j": j,
        "input_name": loaded.data.feature_names[i] if layer == 0 else None,
        "input_scale": input_scales(loaded)[i] if layer == 0 else None,
        "x": _floats(c.x),
        "y": _floats(c.y),
        "data_x": _floats(c.data_x),
        "data_y": _floats(c.data_y),
        "score": c.score,
        "symbolic": c.symbolic,
        "affine": affine,
        **loaded.rows_used(x.shape[0]),
        # an ensemble run: the members' spread of this edge (trained members, not edits)
        "band": edge_band(session, get_run(session, run_id), loaded.x_inspect, layer, i, j),
    }


def ensemble_stability(session: Session, run_id: int) -> dict[str, Any]:
    """Formula stability of an ensemble run's edges (``ensemble_views.stability``)."""
    loaded = load_model(session, run_id)
    return stability(session, get_run(session, run_id), loaded.x_inspect)


def _check_edge(loaded: LoadedModel, layer: int, i: int, j: int) -> None:
    layers = loaded.model.layers
    if not 0 <= layer < len(layers):
        raise NotFoundError(
            f"Layer {layer} does not exist; the model has layers 0..{len(layers) - 1}."
        )
    lay = layers[layer]
    if not (0 <= i < lay.in_dim and 0 <= j < lay.out_dim):
        raise NotFoundError(
            f"Edge ({i}→{j}) does not exist in layer {layer}: inputs 0..{lay.in_dim - 1}, "
            f"outputs 0..{lay.out_dim - 1}."
        )


def predictions(session: Session, run_id: int, split: str = "validation") -> dict[str, Any]:
    """Predictions in original units (regression) or labels (classification) vs the truth."""
    run = get_run(session, run_id)
    if split not in ("validation", "train"):
        raise InvalidInputError("split must be 'validation' or 'train'.")
    art = session.get(ModelArtifact, run_id)
    if art is None:
        raise ConflictError(f"Run {run_id} has no results yet (status {run.status}).")
    data = load_model(session, run_id).data if run.has_model else run_data(session, run)
    rows = data.val_rows if split == "validation" else data.train_rows
    x = data.x_val if split == "validation" else data.x_train
    y = data.y_val if split == "validation" else data.y_train
    if run.has_model:
        loaded = load_model(session, run_id)
        if x is None or len(rows) == 0:
            pred_std = np.zeros((0, data.n_outputs))
        else:
            with torch.no_grad():
                pred_std = loaded.model(x).cpu().numpy()
        pred = pred_std.argmax(-1) if data.task == "classification" else pred_std
    elif art.predictions and split == "validation":
        get_model_spec(run.model)
        pred = np.asarray(art.predictions.get("y_pred", []))
    else:
        raise ConflictError(f"Run {run_id} kept no model and no {split} predictions.")
    names = output_names_for(data)
    if data.task == "classification":
        classes = data.classes or []
        true = [classes[int(v)] for v in (y.numpy() if y is not None else [])]
        predicted = [classes[int(v)] for v in np.asarray(pred).ravel()]
        acc = (
            float(np.mean([a == b for a, b in zip(true, predicted, strict=False)]))
            if true
            else math.nan
        )
        return {
            "run_id": run_id,
            "split": split,
            "output_names": names,
            "rows": rows.tolist(),
            "y_true": true,
            "y_pred": predicted,
            "metric_name": "accuracy",
            "metric": acc,
        }
    assert data.y_scaler is not None
    pred_t = torch.as_tensor(np.asarray(pred, dtype=np.float32).reshape(len(rows), -1))
    y_true = data.y_scaler.inverse_transform(y).numpy() if y is not None else np.zeros((0, 1))
    y_pred = data.y_scaler.inverse_transform(pred_t).numpy()
    metric = r2_score(y_true, y_pred)
    return {
        "run_id": run_id,
        "split": split,
        "output_names": names,
        "rows": rows.tolist(),
        "y_true": [_floats(r) for r in y_true],
        "y_pred": [_floats(r) for r in y_pred],
        "metric_name": "r2",
        "metric": metric,
        **prediction_intervals(session, run, data, x),  # an ensemble run's interval
    }


def output_names_for(data: PreparedData) -> list[str]:
    return list(data.target_names)
