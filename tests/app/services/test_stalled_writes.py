"""A trainer frozen part way through sending a write (SIGSTOP, swapped out, a paused VM) must not
keep the run's row locked. PostgreSQL waits for the rest of a half-received message without the
idle-in-transaction limit that ``Database.write(stall_limit_s)`` sets, so whatever the
transaction had locked before stays locked. Every trainer write therefore sends its data first
and locks the run's row last (``RunSink.check_last``, ``training._finish``).

Shown two ways: the statement order of every write of a real in-process training run (both
databases), and a TCP proxy between a trainer's engine and PostgreSQL that stops passing the
trainer's bytes half way through a large checkpoint — the reaper requeues the run at once, and
the stale write, let through afterwards, stores nothing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import pytest
import torch
from sqlalchemy import event, select, update
from sqlalchemy.engine import make_url

from app.config import get_settings
from app.db.clock import utcnow_minus
from app.db.models import Run, RunCheckpoint, RunMetric
from app.db.session import Database
from app.services.run_claims import reap_stale_runs
from app.services.run_sink import RunSink
from app.services.training import run_training
from kan_core.train import FitCheckpoint
from tests.app.api_helpers import make_run

#: a small KAN on the demo table, long enough for several metric batches and checkpoints
CONFIG = {"target_columns": ["HV"], "feature_columns": ["Al", "Ni"], "hidden": [2], "grid": 3,
          "steps": 120, "log_every": 1, "seed": 0}  # fmt: skip

#: statements that store a trainer's data
DATA = ("INSERT INTO RUN_METRICS", "INSERT INTO RUN_CHECKPOINTS", "UPDATE RUN_CHECKPOINTS",
        "DELETE FROM RUN_CHECKPOINTS", "INSERT INTO MODEL_ARTIFACTS",
        "UPDATE MODEL_ARTIFACTS")  # fmt: skip


def test_every_trainer_write_locks_the_run_row_after_its_data(
    db_url: str, demo_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services.datasets import ingest_csv
    from app.services.runs import create_run

    monkeypatch.setenv("KANSCOPE_CHECKPOINT_INTERVAL_S", "0")  # at every opportunity
    monkeypatch.setenv("KANSCOPE_CHECKPOINT_MAX_PER_RUN", "30")
    get_settings.cache_clear()
    db = Database(db_url)
    transactions: list[list[str]] = []

    @event.listens_for(db.engine, "begin")
    def _begin(conn: Any) -> None:
        conn.info["statements"] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def _statement(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        conn.info.setdefault("statements", []).append(" ".join(statement.split()).upper())

    @event.listens_for(db.engine, "commit")
    def _commit(conn: Any) -> None:
        transactions.append(conn.info.pop("statements", []))

    try:
        with db.write() as s:
            ds = ingest_csv(s, demo_csv, "demo.csv", None, 10_000, 100)
            run, _ = create_run(s, {"dataset_id": ds.id, **CONFIG}, 10**6)
        transactions.clear()
        assert run_training(run.id, "trainer@test", db=db) == "succeeded"
    finally:
        db.dispose()
        get_settings.cache_clear()
    kinds: set[str] = set()
    for statements in transactions:
        data = [k for k, st in enumerate(statements) if st.startswith(DATA)]
        locks = [k for k, st in enumerate(statements) if st.startswith("UPDATE RUNS ")]
        if not (data and locks):
            continue
        assert max(data) < min(locks), statements  # the run's row is locked after the data
        kinds |= {st.split(" (")[0].split(" SET")[0] for st in statements if st.startswith(DATA)}
    # the three writes were all seen: metric batches, checkpoints and the final result
    assert {
        "INSERT INTO RUN_METRICS",
        "UPDATE RUN_CHECKPOINTS",
        "INSERT INTO MODEL_ARTIFACTS",
    } <= kinds, kinds


class StallingProxy:
    """Passes bytes between clients and ``upstream``; once :meth:`arm` is called, the first
    client chunk of at least ``threshold`` bytes is passed only half way, and the rest of that
    connection's bytes are held until :meth:`release` — a client frozen mid-message, as the
    server sees it."""

    def __init__(self, upstream: tuple[str, int], threshold: int = 32 * 1024) -> None:
        self.upstream, self.threshold = upstream, threshold
        self.armed, self.stalled, self.released = (threading.Event() for _ in range(3))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        self.armed.set()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.upstream)
                self._sockets += [client, server]
                for args in ((client, server, True), (server, client, False)):
                    threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(256 * 1024):
                if from_client and self.armed.is_set() and len(data) >= self.threshold:
                    if not self.stalled.is_set():
                        self.stalled.set()
                        dst.sendall(data[: len(data) // 2])
                        data = data[len(data) // 2 :]
                    self.released.wait()
                elif from_client and self.stalled.is_set():
                    self.released.wait()
                dst.sendall(data)


def big_checkpoint(step: int) -> FitCheckpoint:
    """A checkpoint of ~8 MB, as a large model's (weights and Adam moments) would be."""
    weights = torch.randn(1_000_000, dtype=torch.float64)
    return FitCheckpoint(
        step=step, model_state={"w": weights}, optimizer_state={}, rng_state=torch.zeros(8),
        perm=torch.arange(4), cursor=0, first_loss=1.0, best_val=1.0, best_step=step,
        since_best=0,
    )  # fmt: skip


def test_a_trainer_frozen_mid_checkpoint_does_not_keep_the_reaper_waiting(pg_url: str) -> None:
    url = make_url(pg_url)
    proxy = StallingProxy((url.host or "127.0.0.1", url.port or 5432))
    db, frozen_db = Database(pg_url), Database(str(url.set(host="127.0.0.1", port=proxy.port)))
    try:
        run_id = make_run(db, status="running", owner="frozen", attempts=1)
        with db.write() as s:  # its last heartbeat is old: the reaper's next pass takes it
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow_minus(600)))
        sink = RunSink(frozen_db, run_id, "frozen", heartbeat_s=3600, stall_limit_s=1.0,
                       checkpoint_interval_s=0.0)  # fmt: skip
        sink.buffer = [{"run_id": run_id, "step": k, "train_loss": 1.0 / k, "val_loss": None,
                        "val_metric": None, "elapsed_s": 0.1 * k} for k in range(1, 6)]  # fmt: skip
        with frozen_db.read() as s:  # the trainer's connection is open before the freeze
            s.execute(select(Run.id))
        proxy.arm()
        writer = threading.Thread(target=sink.checkpoint, args=(big_checkpoint(5),))
        writer.start()
        assert proxy.stalled.wait(30), "the checkpoint never reached the proxy"
        time.sleep(0.5)  # the server has the first half of the message and waits for the rest
        reaped: list[Any] = []
        reaper = threading.Thread(target=lambda: reaped.append(reap_stale_runs(db, 4.0, True)))
        reaper.start()
        reaper.join(10)
        waited = reaper.is_alive()
        proxy.release()  # the frozen trainer wakes up
        reaper.join(30)
        writer.join(30)
        assert not waited, "the reaper waited on the frozen trainer's lock"
        assert reaped == [[(run_id, "queued")]]
        assert not writer.is_alive()
        # the stale write went through once let go, saw the run was no longer its, stored nothing
        assert sink.lost.is_set() and sink.buffer == []
        with db.read() as s:
            run = s.get(Run, run_id)
            assert run is not None and run.status == "queued" and run.owner is None
            checkpoint = select(RunCheckpoint.step).where(RunCheckpoint.run_id == run_id)
            assert s.scalar(checkpoint) is None
            assert s.scalars(select(RunMetric.step).where(RunMetric.run_id == run_id)).all() == []
    finally:
        proxy.close()
        frozen_db.dispose()
        db.dispose()
