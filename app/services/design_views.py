"""Design runs as the API reads and starts them: :func:`start_design_payload` checks a request
against the trained run it designs on and snapshots what the search needs; :func:`design_view`
reads a design run back (progress, then the ranked candidates) and :func:`candidates_csv`
exports them (the run kind itself is :mod:`app.services.design`)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.clock import utcnow
from app.db.models import ModelArtifact, Run, RunMetric, RunStatus
from app.services.design import (
    BUDGET_DEFAULT,
    DESIGNABLE_KINDS,
    MODEL,
    PROGRESS_STEPS,
    _alloys,
    bundle_to_bytes,
    composition_formula,
    designable_elements,
    feature_roles,
)
from app.services.ensemble_views import model_edited
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.services.exports import spreadsheet_safe
from app.services.inspection import load_model, model_bytes
from app.services.runs import get_run
from kan_core.design import (
    DEFAULT_INPUT_MARGIN,
    DEFAULT_MAX_DISTANCE,
    DEFAULT_PRESENCE,
    CompositionSpace,
    DesignGoal,
    InfeasibleConstraintError,
    TrustRegion,
)

# ── the request: checks against the source run, the snapshot ────────────────────────────────


def _source_model(session: Session, run_id: int, what: str) -> tuple[Run, Any]:
    """The run and its loaded model (``app.services.inspection.load_model``), or a 409 saying
    why a design cannot use it."""
    from app.services.runs import get_run

    run = get_run(session, run_id)
    if run.model not in DESIGNABLE_KINDS:
        raise ConflictError(
            f"Run {run_id} ({what}) is a {run.model!r} run; a design needs a trained KAN or MLP "
            "whose stored model can be evaluated on new compositions."
        )
    if run.status != RunStatus.SUCCEEDED.value or not run.has_model:
        raise ConflictError(
            f"Run {run_id} ({what}) has no trained model (status {run.status}); wait until it "
            "has succeeded."
        )
    if run.task != "regression" or len((run.config or {}).get("target_columns") or []) != 1:
        raise ConflictError(
            f"Run {run_id} ({what}) is not a one-target regression; a design optimises one "
            "numeric prediction."
        )
    return run, load_model(session, run_id)


def _model_spec(
    loaded: Any, frame: pd.DataFrame, fixed: dict[str, float], what: str
) -> dict[str, Any]:
    """Features, roles (fixed values resolved) and scalers of one model, for the snapshot."""
    data = loaded.data
    features = list(data.feature_names)
    roles = feature_roles(features)
    if not any(r["role"] != "fixed" for r in roles.values()):
        raise ConflictError(
            f"{what}: none of its inputs {features} follows from a composition (element "
            "fractions x_<El> or hea-bench descriptors such as vec, delta_pct); featurise the "
            "dataset and train on those columns."
        )
    train = frame.iloc[data.train_rows]
    plain = [
        f for f, r in roles.items() if r["role"] == "fraction" and not f.lower().startswith("x_")
    ]
    if plain:  # element columns in at.% rather than fractions: scale by the typical row sum
        total = pd.to_numeric(train[plain].stack(), errors="coerce").groupby(level=0).sum()
        if len(total) and float(total.median()) > 50:
            for f in plain:
                roles[f]["scale"] = 100.0
    for f, role in roles.items():
        if role["role"] != "fixed":
            continue
        if f in fixed:
            role["value"], role["source"] = float(fixed[f]), "given"
        else:
            values = pd.to_numeric(train[f], errors="coerce").dropna()
            role["value"] = float(values.mode().iloc[0]) if len(values) else 0.0
            role["source"] = "most common training value"
    assert data.y_scaler is not None
    return {
        "run_id": int(loaded.run_id),
        "target": data.target_names[0],
        "features": features,
        "roles": roles,
        "x_mean": [float(v) for v in data.x_scaler.mean.reshape(-1)],
        "x_std": [float(v) for v in data.x_scaler.std.reshape(-1)],
        "y_mean": float(data.y_scaler.mean.reshape(-1)[0]),
        "y_std": float(data.y_scaler.std.reshape(-1)[0]),
        # each input's range over the training rows: candidates outside it are flagged
        "x_min": [_finite_min_max(train[f])[0] for f in features],
        "x_max": [_finite_min_max(train[f])[1] for f in features],
    }


def _finite_min_max(column: pd.Series) -> tuple[float | None, float | None]:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if len(values) else (None, None)


def _training_alloys(
    frame: pd.DataFrame, rows: np.ndarray, target: str
) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(elements, fractions (n, e), measured target (n,), formula per row) of the training rows
    whose composition parses; 409 when the dataset has no composition."""
    alloys = _alloys()
    try:
        source = alloys.detect_composition_source(frame)
    except alloys.CompositionError as exc:
        raise ConflictError(
            f"This dataset has no composition column to design over: {exc}"
        ) from None
    compositions, values, labels = [], [], []
    records = frame.iloc[rows]
    y = pd.to_numeric(records[target], errors="coerce").to_numpy(dtype=np.float64)
    for k, row in enumerate(records[source.columns].to_dict("records")):
        try:
            comp = alloys.parse_row_composition(row, source)
        except ValueError:
            continue
        if not math.isfinite(y[k]):
            continue
        compositions.append(comp)
        values.append(y[k])
        labels.append(composition_formula(comp))
    elements = sorted({el for c in compositions for el in c})
    fractions = np.array([[c.get(el, 0.0) for el in elements] for c in compositions])
    return elements, fractions.reshape(len(compositions), len(elements)), np.array(values), labels


def start_design_payload(
    session: Session, run_id: int, request: dict[str, Any]
) -> tuple[dict[str, Any], bytes]:
    """(run-creation payload, bundle) for a design on run ``run_id``. Raises 404 / 409 (the run
    or its dataset cannot be designed on, with the reason) / 422 (a constraint that cannot hold,
    naming it)."""
    from app.services.datasets import load_frame

    source, loaded = _source_model(session, run_id, "the design's model")
    frame = load_frame(session, source.dataset_id)
    target = loaded.data.target_names[0]
    train_elements, train_x, train_y, labels = _training_alloys(
        frame, loaded.data.train_rows, target
    )
    if len(train_x) == 0:
        raise ConflictError(f"None of run {run_id}'s training rows has a composition that parses.")

    elements = [str(e) for e in request["elements"]]
    bounds = {str(k): (float(v[0]), float(v[1])) for k, v in (request.get("bounds") or {}).items()}
    bad_pairs = [k for k, v in (request.get("bounds") or {}).items() if len(v) != 2]
    if bad_pairs:
        raise InvalidInputError(f"bounds: give [lower, upper] for {bad_pairs}.")
    space = CompositionSpace.build(
        elements,
        bounds,
        int(request.get("min_elements", 1)),
        float(request.get("presence", DEFAULT_PRESENCE)),
        known=designable_elements(),
    )
    direction = request.get("direction", "max")
    DesignGoal(direction, request.get("target"))  # checks direction / target
    max_distance = request.get("max_distance", DEFAULT_MAX_DISTANCE)
    if max_distance is not None:
        trust = TrustRegion.build(elements, train_x, train_elements, float(max_distance))
        trust.check_reachable(space)
    ensemble = _ensemble_file(session, source)
    acquisition = request.get("acquisition", "mean")
    if acquisition in ("ucb", "ei") and ensemble is None:
        what = (
            "ranks by the interval's optimistic end"
            if acquisition == "ucb"
            else "ranks by the expected improvement over the best training alloy"
        )
        raise InfeasibleConstraintError(
            "acquisition",
            f"{acquisition!r} {what} and needs the spread of an ensemble run; run {run_id} has "
            "no ensemble. Train a KAN with model_options ensemble_members (e.g. 5) and design "
            "on that run, or use acquisition 'mean'.",
        )
    input_margin = request.get("input_margin", DEFAULT_INPUT_MARGIN)
    if input_margin is not None and not (
        isinstance(input_margin, int | float)
        and not isinstance(input_margin, bool)
        and math.isfinite(input_margin)
        and input_margin >= 0
    ):
        raise InfeasibleConstraintError(
            "input_margin",
            f"must be a finite number ≥ 0 (a fraction of each input's training range), or "
            f"null to turn the guard off; got {input_margin!r}.",
        )
    method = request.get("method", "de")
    if method == "random_trust" and max_distance is None:
        raise InfeasibleConstraintError(
            "method",
            "'random_trust' samples inside the trust region; give max_distance (e.g. 0.15) or "
            "use method 'random'.",
        )
    fixed = {str(k): float(v) for k, v in (request.get("fixed_features") or {}).items()}
    objective = _model_spec(loaded, frame, fixed, f"run {run_id}")
    constraint: dict[str, Any] | None = None
    all_features = set(objective["features"])
    if request.get("constraint_run_id") is not None:
        other_id = int(request["constraint_run_id"])
        lower, upper = request.get("constraint_lower"), request.get("constraint_upper")
        if lower is None and upper is None:
            raise InvalidInputError(
                "constraint_run_id: give constraint_lower and/or constraint_upper for its "
                "prediction."
            )
        if lower is not None and upper is not None and lower > upper:
            raise InvalidInputError(f"constraint bounds: lower {lower:g} is above upper {upper:g}.")
        other_run, other = _source_model(session, other_id, "the constraint run")
        other_frame = (
            frame
            if other_run.dataset_id == source.dataset_id
            else load_frame(session, other_run.dataset_id)
        )
        constraint = _model_spec(other, other_frame, fixed, f"run {other_id}")
        constraint |= {"lower": lower, "upper": upper}
        all_features |= set(constraint["features"])
    stray = sorted(set(fixed) - all_features)
    if stray:
        raise InvalidInputError(
            f"fixed_features: {stray} are not inputs of the model(s); inputs: "
            f"{sorted(all_features)}."
        )
    not_fixed = sorted(
        f
        for spec in (objective, constraint)
        if spec
        for f in fixed
        if f in spec["roles"] and spec["roles"][f]["role"] != "fixed"
    )
    if not_fixed:
        raise InvalidInputError(
            f"fixed_features: {not_fixed} follow from the composition and cannot be fixed."
        )
    unseen = [e for e in elements if e not in train_elements]
    config = dict(source.config or {})
    design = {
        "source_run_id": run_id,
        "elements": list(space.elements),
        "bounds": {
            el: [float(lo), float(hi)]
            for el, lo, hi in zip(space.elements, space.lower, space.upper, strict=True)
        },
        "min_elements": space.min_elements,
        "presence": space.presence,
        "direction": direction,
        "target": request.get("target"),
        "budget": int(request.get("budget", BUDGET_DEFAULT)),
        "n_candidates": int(request.get("n_candidates", 20)),
        "method": method,
        "seed": int(request.get("seed", 0)),
        "max_distance": None if max_distance is None else float(max_distance),
        "input_margin": None if input_margin is None else float(input_margin),
        "acquisition": acquisition,
        "ensemble": ensemble is not None,
        # what the ranking's mean and interval describe: an edited run's members are the model
        # as trained (symbolic edits change the run's model, not the members)
        "interval_of": None
        if ensemble is None
        else ("trained members" if model_edited(session, source) else "current model"),
        "objective": objective,
        "constraint": constraint,
        "train_elements": train_elements,
        "unseen_elements": unseen,
    }
    payload: dict[str, Any] = {
        "dataset_id": source.dataset_id,
        "name": request.get("name") or f"design for run {run_id}",
        "model": MODEL,
        "task": "regression",
        "target_columns": [target],
        "feature_columns": list(loaded.data.feature_names),
        "design": design,
    }
    for key in ("seed", "val_fraction", "train_rows", "val_rows"):
        if config.get(key) is not None:
            payload[key] = config[key]
    blob = bundle_to_bytes(
        {
            "objective_model": _model_file(session, run_id),
            "objective_ensemble": ensemble,
            "constraint_model": _model_file(session, constraint["run_id"]) if constraint else None,
        },
        train_x,
        train_y,
        labels,
    )
    return payload, blob


def _model_file(session: Session, run_id: int) -> bytes:
    return model_bytes(session, run_id)


def _ensemble_file(session: Session, run: Run) -> bytes | None:
    """An ensemble run's stored members (``model_artifacts.ensemble``); None for other runs."""
    if not ((run.config or {}).get("model_options") or {}).get("ensemble_members"):
        return None
    return session.scalar(select(ModelArtifact.ensemble).where(ModelArtifact.run_id == run.id))


# ── reading it back ─────────────────────────────────────────────────────────────────────────


def design_view(session: Session, run_id: int) -> dict[str, Any]:
    """A design run: status and progress while it runs, then the ranked candidates."""

    run = get_run(session, run_id)
    if run.model != MODEL:
        raise NotFoundError(
            f"Run {run_id} is a {run.model!r} run, not a design. Start one for a trained run with "
            f"POST /api/runs/{run_id}/design."
        )
    design = (run.config or {}).get("design") or {}
    last = session.execute(
        select(RunMetric.step)
        .where(RunMetric.run_id == run.id)
        .order_by(RunMetric.step.desc())
        .limit(1)
    ).scalar_one_or_none()
    fraction = (
        1.0 if run.status == RunStatus.SUCCEEDED.value else min(1.0, (last or 0) / PROGRESS_STEPS)
    )
    elapsed = None
    if run.started_at is not None:
        end = run.finished_at or session.scalar(select(utcnow()))
        if end is not None:
            elapsed = max(0.0, (end - run.started_at).total_seconds())
    options = {k: design.get(k) for k in (
        "elements", "bounds", "min_elements", "presence", "direction", "target", "budget",
        "n_candidates", "method", "seed", "max_distance", "input_margin", "acquisition",
        "ensemble", "interval_of",
    )}  # fmt: skip
    constraint = design.get("constraint")
    if constraint:
        options["constraint"] = {
            k: constraint.get(k) for k in ("run_id", "target", "lower", "upper")
        }
    return {
        "run_id": run.id,
        "source_run_id": design.get("source_run_id", run.parent_run_id),
        "dataset_id": run.dataset_id,
        "status": run.status,
        "error": run.error,
        "target": (run.config or {}).get("target_columns", [None])[0],
        "options": options,
        "progress": {"fraction": fraction, "elapsed_s": elapsed},
        "result": (run.summary or {}).get("design"),
    }


def candidates_csv(session: Session, run_id: int) -> str:
    """The ranked candidates as CSV: rank, formula, one column per element, prediction and
    interval, the expected improvement (ensemble runs), the constraint run's prediction,
    nearest training alloy and its distance, the descriptors, the inputs outside the training
    range (";"-separated). 409 until the design has a result."""

    view = design_view(session, run_id)
    result = view["result"]
    if not result:
        raise ConflictError(f"Design run {run_id} has no result yet (status {view['status']}).")
    elements = list(result["elements"])
    descriptors = list(_alloys().DESCRIPTORS)
    target = str(result["target"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["rank", "formula", *(f"x_{el}" for el in elements),
         spreadsheet_safe(f"{target}_predicted"), "lower", "upper", "expected_improvement",
         "constraint_predicted",
         "nearest_training", "nearest_training_value", "nearest_distance", *descriptors,
         "outside_training_range"]
    )  # fmt: skip
    blank = lambda v: "" if v is None else v  # noqa: E731
    for c in result["candidates"]:
        w.writerow(
            [c["rank"], spreadsheet_safe(c["formula"]),
             *(c["composition"].get(el, 0.0) for el in elements),
             blank(c["predicted"]), blank(c["lower"]), blank(c["upper"]),
             blank(c.get("expected_improvement")),
             blank(c["constraint_predicted"]), spreadsheet_safe(blank(c["nearest_training"])),
             blank(c["nearest_training_value"]), blank(c["nearest_distance"]),
             *(blank(c["descriptors"].get(d)) for d in descriptors),
             spreadsheet_safe(";".join(c.get("outside_training_range") or []))]
        )  # fmt: skip
    return buf.getvalue()
