"""Formula discovery runs as the API reads them: :func:`discovery_payload` starts one for a trained
run's data and validation split, :func:`discovery_view` reads one back (progress while it runs,
then the result) with the networks it is compared with (see :mod:`app.services.discovery` for
the run kind itself)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.clock import utcnow
from app.db.models import ModelArtifact, Run, RunMetric, RunStatus
from app.services.discovery import MODEL, PROGRESS_STEPS, discovery_options
from app.services.errors import InvalidInputError, NotFoundError
from app.services.numbers import finite_or_none
from app.services.runs import get_run

#: model kinds whose held-out R² is shown next to the formula's
COMPARED_KINDS = ("kan", "mlp")
#: how many recent finished runs of the dataset are looked at for that comparison
COMPARED_RUNS_LIMIT = 200


# ── starting one for a trained run ──────────────────────────────────────────────────────────


def discovery_payload(
    session: Session,
    run_id: int,
    budget_s: float,
    noise: float | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The run-creation body of a discovery for run ``run_id``'s dataset, target, features and
    validation split (its ``seed``, ``val_fraction`` or explicit rows), so both are scored on
    the same held-out rows."""
    parent = get_run(session, run_id)
    config = parent.config or {}
    if parent.task != "regression":
        raise InvalidInputError(
            f"Run {run_id} is a {parent.task} run; formula discovery fits a numeric "
            "(regression) target."
        )
    targets = list(config.get("target_columns") or [])
    if len(targets) != 1:
        raise InvalidInputError(
            f"Run {run_id} has {len(targets)} targets; formula discovery fits one. Start a "
            "discovery for one of them with POST /api/runs (model 'discover')."
        )
    options: dict[str, Any] = {"budget_s": budget_s}
    if noise is not None:
        options["noise"] = noise
    payload: dict[str, Any] = {
        "dataset_id": parent.dataset_id,
        "name": name or f"formula for run {run_id}",
        "model": MODEL,
        "task": "regression",
        "target_columns": targets,
        "feature_columns": config.get("feature_columns"),
        "model_options": options,
    }
    for key in ("seed", "val_fraction", "train_rows", "val_rows"):
        if config.get(key) is not None:
            payload[key] = config[key]
    return payload


# ── reading one back ────────────────────────────────────────────────────────────────────────


def discovery_view(session: Session, run_id: int) -> dict[str, Any]:
    """A discovery run as the API shows it: status and progress while it runs, then the result
    (chosen formula, Pareto front, held-out scores) and the networks it is compared with."""
    run = get_run(session, run_id)
    if run.model != MODEL:
        raise NotFoundError(
            f"Run {run_id} is a {run.model!r} run, not a formula discovery. Start a discovery "
            f"for it with POST /api/runs/{run_id}/discover."
        )
    config, summary = run.config or {}, run.summary or {}
    try:
        budget = discovery_options(config.get("model_options"))["budget_s"]
    except InvalidInputError:  # a run stored before the bounds changed
        budget = None
    found = summary.get("discovery")
    return {
        "run_id": run.id,
        "parent_run_id": run.parent_run_id,
        "dataset_id": run.dataset_id,
        "status": run.status,
        "error": run.error,
        "target": (config.get("target_columns") or [None])[0],
        "features": list(config.get("feature_columns") or []),
        "budget_s": budget,
        "progress": _progress(session, run),
        "val_r2": summary.get("val_metric"),
        "result": found,
        "comparison": _comparison(session, run) if found else [],
    }


def _progress(session: Session, run: Run) -> dict[str, Any]:
    """Fraction done (from the last metric row) and seconds since the run started (database
    clock), while it runs."""
    last = session.execute(
        select(RunMetric.step)
        .where(RunMetric.run_id == run.id)
        .order_by(RunMetric.step.desc())
        .limit(1)
    ).scalar_one_or_none()
    fraction = min(1.0, (last or 0) / PROGRESS_STEPS)
    if run.status == RunStatus.SUCCEEDED.value:
        fraction = 1.0
    elapsed = None
    if run.started_at is not None:
        end = run.finished_at or session.scalar(select(utcnow()))
        if end is not None:
            elapsed = max(0.0, (end - run.started_at).total_seconds())
    return {"fraction": fraction, "elapsed_s": elapsed}


def _validation_rows(session: Session, run_ids: list[int]) -> dict[int, list[int]]:
    rows = session.execute(
        select(ModelArtifact.run_id, ModelArtifact.predictions).where(
            ModelArtifact.run_id.in_(run_ids)
        )
    ).all()
    return {r: list((p or {}).get("rows") or []) for r, p in rows}


def _comparison(session: Session, run: Run) -> list[dict[str, Any]]:
    """The held-out R² of the parent run and of the best KAN and best MLP on the same dataset
    and target whose validation rows are exactly this run's (anything else is not comparable)."""
    own_rows = _validation_rows(session, [run.id]).get(run.id)
    if not own_rows:
        return []
    target = (run.config or {}).get("target_columns")
    candidates = session.execute(
        select(Run.id, Run.model, Run.name, Run.config, Run.summary)
        .where(
            Run.dataset_id == run.dataset_id,
            Run.id != run.id,
            Run.status == RunStatus.SUCCEEDED.value,
            Run.task == "regression",
            Run.model.in_(COMPARED_KINDS)
            | (Run.id == (run.parent_run_id if run.parent_run_id is not None else -1)),
        )
        .order_by(Run.id.desc())
        .limit(COMPARED_RUNS_LIMIT)
    ).all()
    usable = [
        c
        for c in candidates
        if (c.config or {}).get("target_columns") == target
        and not (c.config or {}).get("cv")
        and finite_or_none((c.summary or {}).get("val_metric")) is not None
        and (c.summary or {}).get("n_rows_val") == len(own_rows)
    ]
    rows = _validation_rows(session, [c.id for c in usable])
    same = [c for c in usable if rows.get(c.id) == own_rows]
    chosen: dict[int, dict[str, Any]] = {}

    def add(c: Any, role: str) -> None:
        entry = chosen.setdefault(
            c.id,
            {
                "run_id": c.id,
                "model": c.model,
                "name": c.name,
                "r2": finite_or_none(c.summary.get("val_metric")),
                "roles": [],
            },
        )
        entry["roles"].append(role)

    for c in same:
        if c.id == run.parent_run_id:
            add(c, "parent")
    for kind in COMPARED_KINDS:
        of_kind = [c for c in same if c.model == kind]
        if of_kind:
            add(max(of_kind, key=lambda c: c.summary["val_metric"]), f"best {kind}")
    return list(chosen.values())
