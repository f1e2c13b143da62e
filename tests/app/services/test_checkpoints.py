"""Training checkpoints at the service level, on SQLite and PostgreSQL: a run requeued after its
worker was lost resumes from its latest checkpoint and ends exactly where an uninterrupted run
ends; only the worker that owns a run writes its checkpoint; a finished or deleted run keeps
none. (The same with a real Celery worker SIGKILLed mid-run: test_celery_integration.py.)"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from safetensors.torch import load as st_load
from sqlalchemy import select, update

from app.config import get_settings
from app.db.clock import utcnow_minus
from app.db.models import ModelArtifact, Run, RunCheckpoint, RunMetric
from app.db.session import Database
from app.services.run_claims import claim_run, reap_stale_runs
from app.services.run_sink import RunSink
from app.services.training import run_training
from kan_core.train import FitCheckpoint, FitProgress

STEPS, EVERY = 12, 3  # checkpoints after steps 3, 6, 9 (never after the last one)
CONFIG = {
    "target_columns": ["HV"],
    "feature_columns": ["Al", "Ni"],
    "hidden": [2],
    "grid": 3,
    "steps": STEPS,
    "lr": 0.02,
    "batch_size": 32,  # mini-batches: the data order and the RNG must resume too
    "update_grid_every": 2,  # grid updates before and after the checkpoint
    "update_grid_until": 8,
    "early_stopping_patience": 100,  # keeps best weights: they are in the checkpoint as well
    "seed": 3,
}


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KANSCOPE_CHECKPOINT_INTERVAL_S", "0")  # at every opportunity
    monkeypatch.setenv("KANSCOPE_CHECKPOINT_MAX_PER_RUN", str(STEPS // EVERY))
    get_settings.cache_clear()
    database = Database(db_url)
    yield database
    database.dispose()
    get_settings.cache_clear()


@pytest.fixture
def dataset_id(db: Database, demo_csv: bytes) -> int:
    from app.services.datasets import ingest_csv

    with db.write() as s:
        return ingest_csv(s, demo_csv, "demo.csv", None, 10_000, 100).id


def new_run(db: Database, dataset_id: int, config: dict[str, Any] | None = None, **kw: Any) -> int:
    from app.services.runs import create_run

    payload = {"dataset_id": dataset_id, **CONFIG, **(config or {})}
    with db.write() as s:
        run, _ = create_run(s, payload, 10**6, **kw)
        return run.id


def metrics(db: Database, run_id: int) -> list[tuple[int, float]]:
    with db.read() as s:
        rows = s.execute(
            select(RunMetric.step, RunMetric.train_loss)
            .where(RunMetric.run_id == run_id)
            .order_by(RunMetric.step)
        ).all()
    return [(int(step), float(loss)) for step, loss in rows]


def checkpoint_step(db: Database, run_id: int) -> int | None:
    with db.read() as s:
        return s.scalar(select(RunCheckpoint.step).where(RunCheckpoint.run_id == run_id))


def weights(db: Database, run_id: int) -> dict[str, torch.Tensor]:
    with db.read() as s:
        blob = s.scalar(select(ModelArtifact.weights).where(ModelArtifact.run_id == run_id))
    return st_load(blob)


def worker_lost_at(db: Database, run_id: int, step: int) -> Callable[[FitProgress], None]:
    """An ``on_progress`` for the first attempt: just before ``step`` it pauses long enough for
    a metrics flush (so the dead attempt leaves rows after its checkpoint); at ``step`` its
    heartbeat is made 10 minutes old and the reaper requeues the run, as if the worker had
    died. The worker itself trains on, still believing it owns the run."""

    def hook(p: FitProgress) -> None:
        if p.step == step - 1:
            import time

            time.sleep(0.6)  # > the sink's 0.5 s flush interval
        if p.step == step:
            for _ in range(5):  # a heartbeat landing in between would make it look alive
                with db.write() as s:
                    s.execute(
                        update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600))
                    )
                if reap_stale_runs(db, lease_s=60, requeue=True) == [(run_id, "queued")]:
                    return
            raise AssertionError("the reaper did not requeue the run")

    return hook


@pytest.mark.parametrize("retrain", [False, True], ids=["fresh", "symbolic-retrain"])
def test_requeued_run_resumes_from_its_checkpoint_bit_exact(db, dataset_id, retrain):
    init: dict[str, Any] = {}
    if retrain:  # a child of a trained run, one edge locked to a symbolic function
        from kan_core.io import model_from_bytes, model_to_bytes

        parent = new_run(db, dataset_id, {"steps": 2})
        assert run_training(parent, "parent-worker", db=db) == "succeeded"
        with db.read() as s:
            blob = s.scalar(select(ModelArtifact.weights).where(ModelArtifact.run_id == parent))
        model, meta = model_from_bytes(blob)
        model.layers[0].set_symbolic(0, 1, "sin", 1.5, 0.1, 0.8, 0.0)
        init = {"parent_run_id": parent, "init_weights": model_to_bytes(model, meta)}

    straight = new_run(db, dataset_id, **init)
    assert run_training(straight, "w0", db=db) == "succeeded"
    reference = metrics(db, straight)
    assert [step for step, _ in reference] == list(range(1, STEPS + 1))
    assert checkpoint_step(db, straight) is None  # it wrote some; finishing removed them

    run_id = new_run(db, dataset_id, **init)
    died_at = EVERY + 2  # between the checkpoints after steps 3 and 6
    first = run_training(run_id, "worker-1", db=db, on_progress=worker_lost_at(db, run_id, died_at))
    assert first == "lost"
    # the stale worker reached step 6 without writing there: the checkpoint is still step 3
    assert checkpoint_step(db, run_id) == EVERY
    tail = [step for step, _ in metrics(db, run_id)]
    assert tail[: EVERY + 1] == list(range(1, EVERY + 2)) and max(tail) < died_at

    seen: list[int] = []
    assert run_training(run_id, "worker-2", db=db, on_progress=lambda p: seen.append(p.step)) == (
        "succeeded"
    )
    assert seen == list(range(EVERY + 1, STEPS + 1))  # resumed after the checkpoint
    # one series, no step twice or missing; and the same curve an uninterrupted run draws
    assert metrics(db, run_id) == reference
    got, want = weights(db, run_id), weights(db, straight)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert checkpoint_step(db, run_id) is None
    with db.read() as s:
        run = s.get(Run, run_id)
    assert run.attempts == 2 and run.owner == "worker-2"
    assert run.summary["resumed_from_step"] == EVERY
    assert run.summary["notes"] == [
        f"Resumed from step {EVERY} after the worker was lost (attempt 2)."
    ]
    assert "restarted_after_step" not in run.summary


def _checkpoint(step: int) -> FitCheckpoint:
    return FitCheckpoint(
        step=step,
        model_state={"w": torch.full((3,), float(step))},
        optimizer_state={"state": {}, "param_groups": []},
        rng_state=torch.Generator().manual_seed(0).get_state(),
        perm=torch.arange(4),
        cursor=0,
        first_loss=1.0,
        best_val=math.inf,
        best_step=0,
        since_best=0,
    )


def test_only_the_owner_writes_checkpoints_and_they_go_with_the_run(db, dataset_id):
    from app.services.runs import cancel_run, delete_run

    run_id = new_run(db, dataset_id)
    with db.write() as s:
        assert claim_run(s, run_id, "owner")
    sink = RunSink(db, run_id, "owner", heartbeat_s=60, checkpoint_interval_s=0)
    sink.buffer = [{"run_id": run_id, "step": k, "train_loss": 1.0} for k in (1, 2)]
    sink.checkpoint(_checkpoint(2))
    sink.checkpoint(_checkpoint(4))  # replaces the row
    assert checkpoint_step(db, run_id) == 4 and sink.buffer == []
    assert [step for step, _ in metrics(db, run_id)] == [1, 2]  # written with the checkpoint
    with db.read() as s:
        assert len(s.scalars(select(RunCheckpoint.run_id)).all()) == 1

    throttled = RunSink(db, run_id, "owner", heartbeat_s=60, checkpoint_interval_s=3600)
    throttled.checkpoint(_checkpoint(5))  # too soon after the worker started: skipped
    assert checkpoint_step(db, run_id) == 4

    stale = RunSink(db, run_id, "someone-else", heartbeat_s=60, checkpoint_interval_s=0)
    stale.buffer = [{"run_id": run_id, "step": 3, "train_loss": 9.0}]
    stale.checkpoint(_checkpoint(6))
    assert stale.lost.is_set() and stale.buffer == []
    assert checkpoint_step(db, run_id) == 4  # nothing written, not even the metrics
    assert [step for step, _ in metrics(db, run_id)] == [1, 2]

    # requeued, then cancelled before a worker picks it up: the checkpoint goes
    with db.write() as s:
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600)))
    assert reap_stale_runs(db, lease_s=60, requeue=True) == [(run_id, "queued")]
    with db.write() as s:
        cancel_run(s, run_id)
    assert checkpoint_step(db, run_id) is None

    def running_with_checkpoint() -> int:
        run = new_run(db, dataset_id)
        with db.write() as s:
            assert claim_run(s, run, "owner")
        RunSink(db, run, "owner", heartbeat_s=60, checkpoint_interval_s=0).checkpoint(
            _checkpoint(2)
        )
        assert checkpoint_step(db, run) == 2
        return run

    # the reaper fails a run whose worker stopped: the checkpoint goes with it
    failed = running_with_checkpoint()
    with db.write() as s:
        s.execute(update(Run).where(Run.id == failed).values(heartbeat_at=utcnow_minus(600)))
    assert reap_stale_runs(db, lease_s=60) == [(failed, "failed")]
    assert checkpoint_step(db, failed) is None

    # a run deleted with a checkpoint takes it along (ON DELETE CASCADE)
    other = running_with_checkpoint()
    with db.write() as s:
        s.execute(update(Run).where(Run.id == other).values(status="failed"))
    with db.write() as s:
        delete_run(s, other)
    assert checkpoint_step(db, other) is None


def test_requeued_run_with_an_unreadable_checkpoint_starts_over(db, dataset_id):
    run_id = new_run(db, dataset_id)
    with db.write() as s:  # attempt 1 claims, logs 4 steps and a broken checkpoint, then dies
        assert claim_run(s, run_id, "dead-worker")
        s.execute(
            RunMetric.__table__.insert(),
            [{"run_id": run_id, "step": k, "train_loss": 9.0} for k in range(1, 5)],
        )
        s.add(RunCheckpoint(run_id=run_id, step=4, data=b"not a checkpoint"))
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600)))
    assert reap_stale_runs(db, lease_s=60, requeue=True) == [(run_id, "queued")]
    assert run_training(run_id, "second-worker", db=db) == "succeeded"
    assert [step for step, _ in metrics(db, run_id)] == list(range(1, STEPS + 5))
    assert checkpoint_step(db, run_id) is None
    with db.read() as s:
        run = s.get(Run, run_id)
    assert run.summary["restarted_after_step"] == 4 and "resumed_from_step" not in run.summary
    assert run.summary["notes"][0].startswith("Restarted from step 1 after the worker was lost")


ENSEMBLE = {"model_options": {"ensemble_members": 3, "ensemble_bootstrap": "rows"}}


def ensemble_tensors(db: Database, run_id: int) -> dict[str, torch.Tensor]:
    with db.read() as s:
        blob = s.scalar(select(ModelArtifact.ensemble).where(ModelArtifact.run_id == run_id))
    return st_load(blob)


def test_requeued_ensemble_run_resumes_from_its_checkpoint_bit_exact(db, dataset_id):
    """An ensemble run's checkpoint holds every member: resumed, it ends with the members,
    the run's model (member 0) and the calibration an uninterrupted run ends with."""
    from kan_core.io import checkpoint_from_bytes
    from kan_core.train import EnsembleCheckpoint

    straight = new_run(db, dataset_id, ENSEMBLE)
    assert run_training(straight, "w0", db=db) == "succeeded"
    reference = metrics(db, straight)
    assert [step for step, _ in reference] == list(range(1, STEPS + 1))

    run_id = new_run(db, dataset_id, ENSEMBLE)
    died_at = EVERY + 2
    first = run_training(run_id, "worker-1", db=db, on_progress=worker_lost_at(db, run_id, died_at))
    assert first == "lost"
    with db.read() as s:
        blob = s.scalar(select(RunCheckpoint.data).where(RunCheckpoint.run_id == run_id))
    ckpt = checkpoint_from_bytes(blob)
    assert isinstance(ckpt, EnsembleCheckpoint) and ckpt.step == EVERY and ckpt.members == 3
    # the block-diagonal KAN of all three members: [2·3, 2·3, 1·3]
    assert ckpt.current.model_state["layers.0.mask"].shape == (6, 6)

    seen: list[int] = []
    assert run_training(run_id, "worker-2", db=db, on_progress=lambda p: seen.append(p.step)) == (
        "succeeded"
    )
    assert seen == list(range(EVERY + 1, STEPS + 1))
    assert metrics(db, run_id) == reference
    for read in (weights, ensemble_tensors):
        got, want = read(db, run_id), read(db, straight)
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key
    with db.read() as s:
        run, done = s.get(Run, run_id), s.get(Run, straight)
    assert run.summary["resumed_from_step"] == EVERY
    assert run.summary["ensemble"] == done.summary["ensemble"]
    assert checkpoint_step(db, run_id) is None


@pytest.mark.slow  # a trainer process of its own and 40 000 steps: 25-30 s per database
def test_ensemble_trainer_killed_mid_run_resumes_from_its_checkpoint(db, db_url, dataset_id):
    """A real trainer process SIGKILLed while its ensemble trains (long enough to be still
    running on the fused engine): requeued, the next attempt resumes from the checkpoint the
    dead one stored and finishes with every member."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from kan_core.ensemble import ensemble_from_bytes

    n = 40_000
    log_every = 50  # a validation pass and a metric row per 50 steps keep the test short
    config = ENSEMBLE | {"steps": n, "early_stopping_patience": None, "batch_size": None,
                         "update_grid_every": 0, "log_every": log_every}  # fmt: skip
    run_id = new_run(db, dataset_id, config)
    root = Path(__file__).resolve().parents[3]
    env = os.environ | {
        "KANSCOPE_CHECKPOINT_INTERVAL_S": "0.2",
        "KANSCOPE_CHECKPOINT_MAX_PER_RUN": "2000",  # an opportunity every 20 steps
        "PYTHONPATH": str(root),
    }
    code = (
        "import sys\nfrom app.db.session import Database\n"
        "from app.services.training import run_training\n"
        "run_training(int(sys.argv[1]), 'doomed-worker', db=Database(sys.argv[2]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_id), db_url], cwd=root, env=env)
    try:
        deadline = time.monotonic() + 120
        while (step := checkpoint_step(db, run_id)) is None or step < 100:
            assert proc.poll() is None, "the trainer ended before it was killed"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    checkpoint = checkpoint_step(db, run_id)
    assert checkpoint is not None and 100 <= checkpoint < n
    with db.read() as s:
        assert s.get(Run, run_id).status == "running"  # the dead trainer's claim
    with db.write() as s:  # its heartbeat has stopped; past the lease the reaper requeues it
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600)))
    assert reap_stale_runs(db, lease_s=60, requeue=True) == [(run_id, "queued")]

    seen: list[int] = []
    assert run_training(run_id, "worker-2", db=db, on_progress=lambda p: seen.append(p.step)) == (
        "succeeded"
    )
    logged = [k for k in range(1, n + 1) if k % log_every == 1 or k == n]
    assert seen == [k for k in logged if k > checkpoint]  # from the checkpoint on
    assert [step for step, _ in metrics(db, run_id)] == logged  # one series, nothing twice
    with db.read() as s:
        run = s.get(Run, run_id)
        blob = s.scalar(select(ModelArtifact.ensemble).where(ModelArtifact.run_id == run_id))
    assert run.attempts == 2 and run.summary["resumed_from_step"] == checkpoint
    assert run.summary["notes"] == [
        f"Resumed from step {checkpoint} after the worker was lost (attempt 2)."
    ]
    assert run.summary["ensemble"]["members"] == 3 and run.summary["ensemble"]["calibrated"]
    ensemble, _ = ensemble_from_bytes(blob)
    assert [m.seed for m in ensemble.members] == [3, 4, 5]
    x = torch.rand(64, 2) * 2 - 1
    preds = ensemble.member_predictions(x)
    assert torch.isfinite(preds).all()
    assert (preds[0] - preds[1]).abs().max() > 1e-3  # three members, not one copied
    assert checkpoint_step(db, run_id) is None
