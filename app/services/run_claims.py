"""The run row's life outside a trainer's own writes: the claim (``queued → running``, one winner),
the reaper of runs whose heartbeat stopped, start-up and executor repairs that fail runs whose
trainer is gone, and the checkpoint deletes that go with a run finishing. Plain SQL in the
caller's session or in one write each; every update is guarded so that it changes a run only
in the state it expects."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from app.db.clock import utcnow, utcnow_minus
from app.db.models import Run, RunCheckpoint, RunMetric, RunStatus
from app.db.session import Database, rowcount

log = logging.getLogger("kanscope.training")


def owned_and_running(run_id: int, owner: str) -> tuple[ColumnElement[bool], ...]:
    """The guard of every write a trainer makes to its run: the run is still ``running`` and
    still ``owner``'s (a worker that lost its claim changes nothing)."""
    return (Run.id == run_id, Run.owner == owner, Run.status == RunStatus.RUNNING.value)


def claim_run(session: Session, run_id: int, owner: str, device: str | None = None) -> bool:
    """``queued → running`` only if still queued and not cancelled; True if this owner won."""
    res = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)
        .values(
            status=RunStatus.RUNNING.value,
            owner=owner,
            started_at=utcnow(),
            heartbeat_at=utcnow(),
            attempts=Run.attempts + 1,
            device=device,
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(res) == 1


def reap_stale_runs(db: Database, lease_s: float, requeue: bool = False) -> list[tuple[int, str]]:
    """Runs ``running`` whose heartbeat is older than ``lease_s`` (database clock): failed
    with a reason, or requeued once when ``requeue`` and this was their first attempt.
    Returns (run id, new status) pairs."""
    reaped: list[tuple[int, str]] = []
    with db.write() as s:
        stale = s.execute(
            select(Run.id, Run.attempts, Run.owner, Run.heartbeat_at, utcnow()).where(
                Run.status == RunStatus.RUNNING.value,
                (Run.heartbeat_at.is_(None)) | (Run.heartbeat_at < utcnow_minus(lease_s)),
            )
        ).all()
        for run_id, attempts, owner, heartbeat_at, now in stale:
            guard = (
                Run.id == run_id,
                Run.status == RunStatus.RUNNING.value,
                (Run.heartbeat_at.is_(None)) | (Run.heartbeat_at < utcnow_minus(lease_s)),
            )
            if requeue and attempts <= 1:
                values: dict[str, Any] = {"status": RunStatus.QUEUED.value, "owner": None}
            else:
                values = {
                    "status": RunStatus.FAILED.value,
                    "finished_at": utcnow(),
                    "error": _stale_reason(s, run_id, owner, heartbeat_at, now, lease_s),
                }
            res = s.execute(
                update(Run)
                .where(*guard)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if rowcount(res):
                reaped.append((int(run_id), values["status"]))
                if values["status"] == RunStatus.FAILED.value:
                    drop_checkpoints(s, [int(run_id)])
    if reaped:
        log.warning("reaped stale runs %s", reaped)
    return reaped


def _stale_reason(
    s: Session,
    run_id: int,
    owner: str | None,
    heartbeat_at: datetime | None,
    now: datetime | None,
    lease_s: float,
) -> str:
    """What the reaper saw, in the failed run's error: how long no heartbeat came (database
    clock), from which worker, and the last metric step stored."""
    if heartbeat_at is None:
        seen = f"No heartbeat was ever recorded from worker {owner}"
    else:
        age = (now - heartbeat_at).total_seconds() if now is not None else None
        ago = f" {age:.0f} s before this check" if age is not None else ""
        seen = (
            f"No heartbeats from worker {owner} since {heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
            f"{ago} (database clock)"
        )
    n_rows, last_step = s.execute(
        select(func.count(RunMetric.id), func.max(RunMetric.step)).where(RunMetric.run_id == run_id)
    ).one()
    stored = (
        f"{n_rows} metric rows are stored, the last at step {last_step}"
        if n_rows
        else "no metric rows are stored"
    )
    return (
        f"{seen}; the lease is {lease_s:g} s. {stored[0].upper()}{stored[1:]}. The worker did "
        "not renew its lease: it may have died, hung, or been unable to write to the database. "
        "Start the run again."
    )


def fail_runs_of_owner_prefix(db: Database, prefix: str, reason: str) -> list[int]:
    """Start-up repair: runs left ``running`` by a previous process tree on this host."""
    with db.write() as s:
        ids = list(
            s.scalars(
                select(Run.id).where(
                    Run.status == RunStatus.RUNNING.value, Run.owner.startswith(prefix)
                )
            )
        )
        if ids:
            s.execute(
                update(Run)
                .where(Run.id.in_(ids), Run.status == RunStatus.RUNNING.value)
                .values(status=RunStatus.FAILED.value, finished_at=utcnow(), error=reason)
                .execution_options(synchronize_session=False)
            )
            drop_checkpoints(s, ids)
    return ids


def mark_failed_if_owned(db: Database, run_id: int, owner: str | None, reason: str) -> bool:
    """Set ``failed`` if the run is still running (under ``owner`` when given) or queued."""
    with db.write() as s:
        cond = [Run.id == run_id, Run.status.in_([RunStatus.RUNNING.value])]
        if owner is not None:
            cond.append(Run.owner == owner)
        res = s.execute(
            update(Run)
            .where(*cond)
            .values(status=RunStatus.FAILED.value, finished_at=utcnow(), error=reason)
            .execution_options(synchronize_session=False)
        )
        if rowcount(res) == 1:
            drop_checkpoints(s, [run_id])
        return rowcount(res) == 1


def fail_if_still_queued(db: Database, run_id: int, reason: str) -> bool:
    """A training process that died before claiming its run: fail the run, don't strand it."""
    with db.write() as s:
        res = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)
            .values(status=RunStatus.FAILED.value, finished_at=utcnow(), error=reason)
            .execution_options(synchronize_session=False)
        )
        if rowcount(res) == 1:  # a requeued run may have a checkpoint
            drop_checkpoints(s, [run_id])
        return rowcount(res) == 1


def delete_checkpoint(session: Session, run_id: int) -> None:
    """Delete the run's checkpoint (in the caller's transaction), whatever its status."""
    session.execute(
        delete(RunCheckpoint)
        .where(RunCheckpoint.run_id == run_id)
        .execution_options(synchronize_session=False)
    )


def drop_checkpoints(session: Session, run_ids: list[int]) -> None:
    """Delete the checkpoints of those of ``run_ids`` that have finished (in the caller's
    transaction): a checkpoint only serves to resume an unfinished run."""
    if not run_ids:
        return
    finished = select(Run.id).where(
        Run.id.in_(run_ids),
        Run.status.in_([s.value for s in RunStatus if s.finished]),
    )
    session.execute(
        delete(RunCheckpoint)
        .where(RunCheckpoint.run_id.in_(finished))
        .execution_options(synchronize_session=False)
    )
