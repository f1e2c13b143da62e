"""What a stored KAN ensemble (``model_artifacts.ensemble``, see ``app.services.ensembles``)
adds to a run's views: prediction intervals, per-edge bands (the spread of φ across members) and
formula stability (how many members give an edge the same symbolic form).

Loaded ensembles and their bands are cached per run (an ensemble never changes once stored:
symbolic edits change the run's model, member 0's copy, not the members). So once the run's
model is edited the interval and the bands describe the model as trained, not the edited one:
the answers say so (``interval_current`` false and a note) rather than pass them off as the
edited model's."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ModelArtifact, Run
from app.services.errors import ConflictError
from app.services.model_contract import PreparedData
from kan_core.ensemble import (
    EdgeBands,
    KANEnsemble,
    edge_bands,
    ensemble_from_bytes,
    formula_stability,
)

BAND_POINTS = 100
#: formula stability fits every member's edges: rows sampled like the suggestions' (≤ 512)
STABILITY_ROWS = 512


class _Cache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: tuple[Any, ...], compute: Any) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        value = compute()
        with self._lock:
            self._d[key] = value
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return value


_cache = _Cache(16)


def _key(session: Session, run: Run, what: str) -> tuple[Any, ...]:
    created = run.created_at.isoformat() if run.created_at else ""
    return (what, str(session.get_bind().engine.url), run.id, created)


def load_ensemble(session: Session, run: Run) -> tuple[KANEnsemble, float] | None:
    """(ensemble, nominal level) of an ensemble run; None for any other run."""
    if not (run.config.get("model_options") or {}).get("ensemble_members"):
        return None

    def read() -> tuple[KANEnsemble, float] | None:
        blob = session.scalar(select(ModelArtifact.ensemble).where(ModelArtifact.run_id == run.id))
        if blob is None:
            return None
        ensemble, meta = ensemble_from_bytes(blob)
        return ensemble, float(meta.get("level", 0.9))

    return _cache.get_or_compute(_key(session, run, "ensemble"), read)


def require_ensemble(session: Session, run: Run) -> tuple[KANEnsemble, float]:
    loaded = load_ensemble(session, run)
    if loaded is None:
        raise ConflictError(
            f"Run {run.id} has no ensemble. Train a KAN run with model_options "
            "ensemble_members (2..32) to get intervals, edge bands and formula stability."
        )
    return loaded


def model_edited(session: Session, run: Run) -> bool:
    """The run's model was changed after training (symbolic fixes, pruning): its ensemble's
    members are then the model as trained, not the current one."""
    stmt = select(ModelArtifact.current_weights.is_not(None)).where(ModelArtifact.run_id == run.id)
    return bool(session.scalar(stmt))


def edited_note(members: int, what: str) -> str:
    """Why an edited run's ``what`` (interval, band) is not its current model's."""
    return (
        f"The {what} comes from the {members} members as trained; this run's model was edited "
        "since (symbolic fixes or pruning), so it describes the model before the edits, not "
        "the edited one. Reset the edits to compare like with like; a retrain trains the "
        "edited model alone, without an ensemble."
    )


def _floats(a: Any) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(a).ravel()]


def prediction_intervals(
    session: Session, run: Run, data: PreparedData, x: torch.Tensor | None
) -> dict[str, Any]:
    """For an ensemble run: the members' mean and the calibrated interval, per row and output
    in the target's units (``y_mean``, ``lower``, ``upper``, ``level``), and whether they
    describe the run's current model (``interval_current``; false after an edit, with
    ``interval_note`` saying why); {} otherwise."""
    loaded = load_ensemble(session, run)
    if loaded is None or data.y_scaler is None:
        return {}
    ensemble, level = loaded
    edited = model_edited(session, run)
    status = {
        "interval_current": not edited,
        "interval_note": edited_note(len(ensemble.members), "interval") if edited else None,
    }
    if x is None or x.shape[0] == 0:
        return {"level": level, "y_mean": [], "lower": [], "upper": [], **status}
    p = ensemble.predict(x, level)
    back = data.y_scaler.inverse_transform
    return {
        **status,
        "level": level,
        "y_mean": [_floats(r) for r in back(p.mean).numpy()],
        "lower": [_floats(r) for r in back(p.lower).numpy()],
        "upper": [_floats(r) for r in back(p.upper).numpy()],
    }


def edge_band(
    session: Session, run: Run, x: torch.Tensor, layer: int, i: int, j: int
) -> dict[str, Any] | None:
    """Edge (layer, i→j)'s band across the members on the grid of their inputs (x in the
    same units as the edge's curve): mean, lower and upper member quantiles at the run's
    level; None for a run without an ensemble."""
    loaded = load_ensemble(session, run)
    if loaded is None:
        return None
    ensemble, level = loaded
    bands: list[EdgeBands] = _cache.get_or_compute(
        _key(session, run, "bands"), lambda: edge_bands(ensemble, x, BAND_POINTS, level)
    )
    band = bands[layer]
    edited = model_edited(session, run)
    return {
        "note": edited_note(len(ensemble.members), "band") if edited else None,
        "level": level,
        "members": len(ensemble.members),
        "x": _floats(band.x[:, i]),
        "mean": _floats(band.mean[:, j, i]),
        "lower": _floats(band.lower[:, j, i]),
        "upper": _floats(band.upper[:, j, i]),
    }


def stability(session: Session, run: Run, x: torch.Tensor) -> dict[str, Any]:
    """Per edge, each member's best symbolic candidate and how many agree (computed once per
    run; it fits the whole library to every member's every edge)."""
    ensemble, _ = require_ensemble(session, run)

    def compute() -> dict[str, Any]:
        edges = formula_stability(ensemble, x, max_points=STABILITY_ROWS)
        n = len(ensemble.members)
        return {
            "run_id": run.id,
            "members": n,
            "rows_used": min(int(x.shape[0]), STABILITY_ROWS),
            "edges": [
                {
                    "layer": e.layer,
                    "i": e.i,
                    "j": e.j,
                    "top": e.top,
                    "agree": e.agree,
                    "share": e.share,
                    "best": e.best,
                    "r2": [None if r is None or not math.isfinite(r) else r for r in e.r2],
                }
                for e in edges
            ],
        }

    return _cache.get_or_compute(_key(session, run, "stability"), compute)
