"""The distributed path end to end with real processes: private PostgreSQL and Redis, the API
(``kanscope serve``, KANSCOPE_EXECUTOR=celery) and a Celery worker (``kanscope worker``).

Covers: a run queued through the API is trained by the worker; a task delivered several times
trains once; Redis down → 503 and nothing lost (the run is sent when Redis is back); the worker
SIGKILLed mid-run (whole worker, and only the pool child) → the run is requeued once by the
reaper and finished, never stuck, resuming from the checkpoint the dead worker wrote. Leases
are short (4 s) so the reaper acts within seconds; checkpoints are written every 0.2 s at most.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.worker.celery_executor import CeleryExecutor
from tests.app.fixtures_services import (
    ApiServer,
    CeleryWorker,
    PrivatePostgres,
    PrivateRedis,
    kanscope_env,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

LEASE_S = 4.0
STARTED: dict[str, Any] = {}  # the latest worker / API process, so the fixture stops them
FINISHED = ("succeeded", "failed", "cancelled")


def dataset_csv(n_rows: int = 80) -> bytes:
    lines = ["a,b,y"]
    for k in range(n_rows):
        a, b = (k % 17) / 8.0 - 1.0, (k % 11) / 5.0 - 1.0
        lines.append(f"{a:.4f},{b:.4f},{a * a - 0.5 * b:.4f}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Stack:
    pg: PrivatePostgres
    redis: PrivateRedis
    api: ApiServer
    worker: CeleryWorker
    env: dict[str, str]
    tmp: Path
    http: httpx.Client
    dataset_id: int

    def new_worker(self) -> CeleryWorker:
        n = len(list(self.tmp.glob("worker*.log")))
        self.worker = STARTED["worker"] = CeleryWorker(self.env, self.tmp / f"worker{n}.log")
        self.worker.start()
        return self.worker

    def submit(self, **overrides: Any) -> dict[str, Any]:
        body = {"dataset_id": self.dataset_id, "target_columns": ["y"], "hidden": [2],
                "grid": 3, "steps": 20, "early_stopping_patience": None} | overrides  # fmt: skip
        resp = self.http.post("/runs", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def run(self, run_id: int) -> dict[str, Any]:
        resp = self.http.get(f"/runs/{run_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(self, run_id: int, until: tuple[str, ...] = FINISHED, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in until:
                return run
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} not {until} after {timeout}s: {run}\n{self.logs()}")

    def wait_for_steps(self, run_id: int, n: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.http.get(f"/runs/{run_id}/metrics").json()["last_step"]
            if last is not None and last >= n:
                return int(last)
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not log {n} steps\n{self.logs()}")

    def steps(self, run_id: int) -> list[int]:
        # the endpoint pages at 5000 points by default
        points = self.http.get(f"/runs/{run_id}/metrics", params={"limit": 100_000}).json()
        points = points["points"]
        return [p["step"] for p in points]

    def sql(self) -> psycopg.Connection:
        """A connection of our own to the stack's PostgreSQL (the API does not show everything)."""
        return psycopg.connect(
            f"host=127.0.0.1 port={self.pg.port} user=postgres dbname={self.pg.database}"
        )

    def db_row(self, run_id: int) -> dict[str, Any]:
        """Columns the API does not show (attempts), read straight from PostgreSQL."""
        with self.sql() as conn:
            cur = conn.execute(
                "SELECT status, attempts, owner, error FROM runs WHERE id = %s", (run_id,)
            )
            status, attempts, owner, error = cur.fetchone()
        return {"status": status, "attempts": attempts, "owner": owner, "error": error}

    def checkpoint_step(self, run_id: int) -> int | None:
        """The step of the run's stored checkpoint (None: it has none), from PostgreSQL."""
        with self.sql() as conn:
            row = conn.execute(
                "SELECT step FROM run_checkpoints WHERE run_id = %s", (run_id,)
            ).fetchone()
        return None if row is None else int(row[0])

    def wait_for_checkpoint(self, run_id: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while (step := self.checkpoint_step(run_id)) is None:
            assert time.monotonic() < deadline, f"run {run_id}: no checkpoint\n{self.logs()}"
            assert self.run(run_id)["status"] == "running", self.run(run_id)
            time.sleep(0.1)
        return step

    def logs(self) -> str:
        return f"--- api ---\n{self.api.log()[-2500:]}\n--- worker ---\n{self.worker.log()[-2500:]}"

    def sessions(self) -> str:
        """PostgreSQL's view of every client session (who waits on what, who holds a
        transaction open): what a stuck requeue needs to be understood."""
        with self.sql() as conn:
            rows = conn.execute(
                "SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid),"
                " now() - xact_start, now() - state_change, left(query, 120)"
                " FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
        return "\n".join(map(str, rows))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("celery")
    pg, redis = PrivatePostgres(), PrivateRedis()
    with pg, redis:
        env = kanscope_env(
            pg.url, tmp, redis.url, executor="celery", heartbeat_interval_s=0.5,
            lease_s=LEASE_S, reaper_interval_s=1.0, requeue_stale_runs=True, device="cpu",
            checkpoint_interval_s=0.2,
        )  # fmt: skip
        api = ApiServer(env, tmp / "api.log")
        worker = CeleryWorker(env, tmp / "worker.log")
        try:
            api.start()  # runs the migrations
            worker.start()
            with httpx.Client(base_url=api.url, timeout=30) as http:
                up = http.post("/datasets", files={"file": ("d.csv", dataset_csv(), "text/csv")})
                assert up.status_code == 201, up.text
                yield Stack(pg, redis, api, worker, env, tmp, http, up.json()["id"])
        finally:
            for proc in (STARTED.get("worker", worker), worker, STARTED.get("api", api), api):
                proc.stop()


@pytest.fixture(autouse=True)
def _worker_alive(stack: Stack) -> Iterator[None]:
    yield
    if not stack.worker.alive:  # a test killed it: later tests need one
        stack.worker.stop()
        stack.new_worker()


def test_run_queued_through_the_api_is_trained_by_the_worker(stack: Stack) -> None:
    run = stack.submit(steps=25)
    assert run["status"] == "queued"
    done = stack.wait(run["id"])
    assert done["status"] == "succeeded", (done, stack.logs())
    assert done["owner"].startswith("kanscope@"), done["owner"]  # the Celery worker trained it
    assert done["has_model"] is True
    steps = stack.steps(run["id"])
    assert steps == list(range(1, 26)), steps  # every step once, in order
    assert done["summary"]["n_parameters"] > 0 and done["summary"]["val_metric"] is not None
    assert stack.http.get(f"/runs/{run['id']}/network").status_code == 200


def test_the_pool_child_that_trains_runs_under_the_data_limit(stack: Stack) -> None:
    """As local trainers do: RLIMIT_DATA set to what the child held at start plus the growth
    KANSCOPE_MAX_RUN_MEMORY_MB allows (set in worker_process_init, so every child has it)."""
    from app.services.memory import MB, trainer_memory_limit_bytes

    def data_limits() -> dict[int, str]:
        found = {}
        for pid in stack.worker.child_pids():
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/limits") as f:
                found[pid] = next(x for x in f if x.startswith("Max data size"))
        return found

    cap_mb = int(stack.env.get("KANSCOPE_MAX_RUN_MEMORY_MB", "2048"))
    # a child the pool forks after the last task sets its limit in worker_process_init, which
    # can take seconds on a loaded machine: wait for the init, not for a limit in general
    deadline = time.monotonic() + 60
    while not (limits := data_limits()) or any(
        line.split()[3] == "unlimited" for line in limits.values()
    ):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert limits, stack.logs()
    for line in limits.values():
        soft = line.split()[3]
        assert soft != "unlimited", line
        assert trainer_memory_limit_bytes(cap_mb, 0) <= int(soft), line
        assert int(soft) <= trainer_memory_limit_bytes(cap_mb, 3072 * MB), line  # near the cap


def test_a_task_delivered_three_times_trains_once(stack: Stack) -> None:
    skipped_before = stack.worker.log().count("'skipped'")
    run = stack.submit(steps=30)  # delivery 1 (the API)
    extra = CeleryExecutor(stack.redis.url)
    extra.submit(run["id"])  # deliveries 2 and 3: what Redis does after a visibility timeout
    extra.submit(run["id"])
    stack.wait(run["id"], until=("running", *FINISHED))
    # a trainer elsewhere that receives the same id while it trains finds it claimed
    from app.db.session import Database
    from app.services.training import run_training

    db = Database(stack.pg.url)
    try:
        assert run_training(run["id"], "intruder@test", db=db) == "skipped"
    finally:
        db.dispose()
    done = stack.wait(run["id"])
    assert done["status"] == "succeeded", (done, stack.logs())
    deadline = time.monotonic() + 30
    while stack.worker.log().count("'skipped'") < skipped_before + 2:
        assert time.monotonic() < deadline, stack.worker.log()[-3000:]
        time.sleep(0.2)
    row = stack.db_row(run["id"])
    assert row["attempts"] == 1, row  # claimed exactly once
    steps = stack.steps(run["id"])
    assert steps == list(range(1, 31)), steps  # one series, no duplicates


def test_redis_unavailable_answers_503_and_nothing_is_lost(stack: Stack) -> None:
    # long enough to still be training when Redis goes away, even on an idle fast machine
    # (the fused CPU engine ran 1500 steps of this model in 0.5 s)
    training = stack.submit(steps=20_000)
    stack.wait(training["id"], until=("running",))
    before = {r["id"] for r in stack.http.get("/runs").json()["runs"]}
    stack.redis.stop()
    try:
        resp = stack.http.post(
            "/runs",
            json={
                "dataset_id": stack.dataset_id,
                "target_columns": ["y"],
                "hidden": [2],
                "grid": 3,
                "steps": 10,
            },  # fmt: skip
        )
        assert resp.status_code == 503, resp.text
        detail = resp.json()["detail"]
        assert "queue is unavailable" in detail and "Redis" in detail, detail
        run_id = int(re.search(r"Run (\d+) is saved", detail).group(1))  # type: ignore[union-attr]
        # nothing lost: the run is stored as queued, everything else answers normally
        runs = {r["id"]: r for r in stack.http.get("/runs").json()["runs"]}
        assert before <= set(runs) and runs[run_id]["status"] == "queued"
        assert stack.http.get("/health").status_code == 200
        up = stack.http.post("/datasets", files={"file": ("e.csv", dataset_csv(10), "text/csv")})
        assert up.status_code == 201
    finally:
        stack.redis.start()  # same port, empty; the worker reconnects
    done = stack.wait(run_id, timeout=120)  # sent by the API once Redis answers again
    assert done["status"] == "succeeded", (done, stack.logs())
    # the run that was training during the outage went on and finished, once
    done = stack.wait(training["id"], timeout=240)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert stack.db_row(training["id"])["attempts"] == 1
    assert stack.steps(training["id"]) == list(range(1, 20_001))


def test_postgres_restarted_mid_run_loses_no_metric_and_the_run_finishes(stack: Stack) -> None:
    # still training after the restart, even on a fast machine (3000 steps once finished in
    # 1.2 s, before the server went down)
    run = stack.submit(steps=20_000)
    stack.wait(run["id"], until=("running",))
    stack.wait_for_steps(run["id"], 3)
    retries = stack.worker.log().count("will retry")
    stack.pg.restart(mode="fast", down_for=1.0)  # every connection is cut
    done = stack.wait(run["id"], timeout=300)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert stack.worker.log().count("will retry") > retries  # the trainer did feel the outage
    assert stack.steps(run["id"]) == list(range(1, 20_001))  # buffered through the outage
    assert stack.db_row(run["id"])["attempts"] == 1  # the lease held: no requeue


def test_api_restarted_while_runs_train_loses_nothing(stack: Stack) -> None:
    # one trains (1500 steps took 0.5 s on the fused engine: it had finished before it was
    # seen running), one waits
    first, second = stack.submit(steps=20_000), stack.submit(steps=20)
    stack.wait(first["id"], until=("running",))
    stack.wait_for_steps(first["id"], 3)
    stack.api.kill(signal.SIGKILL)  # no graceful shutdown
    stack.api.proc.wait(10)  # type: ignore[union-attr]
    stack.api = STARTED["api"] = ApiServer(stack.env, stack.tmp / "api2.log", port=stack.api.port)
    stack.api.start()
    for run, n in ((first, 20_000), (second, 20)):
        done = stack.wait(run["id"], timeout=240)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert stack.steps(run["id"]) == list(range(1, n + 1))
        assert stack.db_row(run["id"])["attempts"] == 1


def test_api_answers_503_while_postgres_is_down_and_recovers_with_everything(
    stack: Stack,
) -> None:
    before = stack.http.get("/runs").json()["runs"]
    datasets = stack.http.get("/datasets").json()
    stack.pg.stop()
    try:
        for resp in (
            stack.http.get("/runs"),
            stack.http.post("/datasets", files={"file": ("x.csv", dataset_csv(5), "text/csv")}),
        ):
            assert resp.status_code == 503, resp.text
            assert "database is unavailable" in resp.json()["detail"], resp.text
            assert "Nothing was lost" in resp.json()["detail"]
    finally:
        stack.pg.start()
    deadline = time.monotonic() + 30
    resp = stack.http.get("/runs")
    while resp.status_code != 200 and time.monotonic() < deadline:  # pool reconnects
        time.sleep(0.2)
        resp = stack.http.get("/runs")
    assert resp.status_code == 200
    assert {r["id"]: r["status"] for r in resp.json()["runs"]} == {
        r["id"]: r["status"] for r in before
    }
    assert stack.http.get("/datasets").json() == datasets


def finish_second_attempt(stack: Stack, run_id: int, before: list[int]) -> None:
    """Wait until the requeued run is claimed again, stop it, check nothing is stuck.

    The second attempt resumes from the dead one's checkpoint (the metric rows after it are
    replaced) or, without one, starts over with its steps numbered after the dead attempt's:
    either way one consistent series from step 1, no duplicates, no gaps."""
    assert before, "the first attempt never trained"
    deadline = time.monotonic() + LEASE_S + 60
    row = stack.db_row(run_id)
    while row["attempts"] < 2 and row["status"] not in FINISHED:
        assert time.monotonic() < deadline, (row, stack.logs())
        time.sleep(0.2)
        row = stack.db_row(run_id)
    assert row["attempts"] == 2, row  # requeued exactly once
    stack.wait_for_steps(run_id, 2)  # the second attempt trains
    stack.http.post(f"/runs/{run_id}/cancel")  # the run is long: stop it
    done = stack.wait(run_id, timeout=90)  # never stuck in running
    assert done["status"] == "cancelled", (done, stack.logs())
    steps = stack.steps(run_id)
    assert steps == list(range(1, len(steps) + 1)), steps


def test_worker_sigkilled_mid_run_is_requeued_once_and_resumes_from_its_checkpoint(
    stack: Stack,
) -> None:
    # the dead attempt's steps and the resumed one's add up to n (4000 could finish before it
    # was seen running on the fused engine)
    n = 20_000
    run = stack.submit(steps=n)
    stack.wait(run["id"], until=("running",))
    stack.wait_for_checkpoint(run["id"])  # the worker has stored one (at most every 0.2 s)
    stack.worker.kill(signal.SIGKILL)  # the whole worker: main process and pool child
    stack.worker.proc.wait(10)  # type: ignore[union-attr]
    checkpoint = stack.checkpoint_step(run["id"])  # the latest one, written before the kill
    assert checkpoint is not None and 1 < checkpoint < n, checkpoint
    # the heartbeat stops; after the lease the reaper requeues the run (first attempt)
    requeued = stack.wait(run["id"], until=("queued", "failed"), timeout=LEASE_S + 30)
    assert requeued["status"] == "queued", requeued
    assert stack.db_row(run["id"])["attempts"] == 1
    stack.new_worker()  # the API already re-sent the id; the new worker picks it up
    done = stack.wait(run["id"], timeout=240)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert stack.db_row(run["id"])["attempts"] == 2  # requeued exactly once
    # the second attempt started after the checkpoint, not at step 1, and says so
    assert done["summary"]["resumed_from_step"] == checkpoint, done["summary"]
    assert done["summary"]["notes"] == [
        f"Resumed from step {checkpoint} after the worker was lost (attempt 2)."
    ]
    # the dead attempt's rows after the checkpoint were replaced: one series, no duplicates
    assert stack.steps(run["id"]) == list(range(1, n + 1))
    assert stack.checkpoint_step(run["id"]) is None  # finished: nothing left to resume


def test_pool_child_killed_mid_run_is_requeued_and_the_worker_survives(stack: Stack) -> None:
    # long enough to be still training when the child is killed (3000 steps once took 1.3 s)
    run = stack.submit(steps=100_000)
    stack.wait(run["id"], until=("running",))
    stack.wait_for_steps(run["id"], 3)
    children = stack.worker.child_pids()
    assert children, "prefork pool child not found"
    for pid in children:  # e.g. the OOM killer taking the training process
        os.kill(pid, signal.SIGKILL)
    before = stack.steps(run["id"])
    # reject_on_worker_lost puts the message back; the redelivery finds the run claimed by the
    # dead child and skips it; after the lease the reaper requeues the run and the API sends it
    # again; the surviving worker (with a fresh pool child) trains it
    try:
        finish_second_attempt(stack, run["id"], before)
    finally:
        assert stack.worker.alive, stack.worker.log()[-3000:]
        assert "WorkerLostError" in stack.worker.log(), stack.worker.log()[-3000:]


def test_worker_whose_heartbeat_lapses_loses_its_claim_and_stops_writing(stack: Stack) -> None:
    run = stack.submit(steps=20_000)  # still training when frozen (3000 steps can take 1.3 s)
    stack.wait(run["id"], until=("running",))
    stack.wait_for_steps(run["id"], 3)
    frozen = stack.worker.child_pids()
    assert frozen
    for pid in frozen:  # a stalled worker: alive, but no heartbeat (GC pause, swapped out …)
        os.kill(pid, signal.SIGSTOP)
    second = CeleryWorker(stack.env, stack.tmp / "worker_second.log")
    try:
        # after the lease the reaper requeues the run; the API re-sends it; the second worker
        # (the first one's only pool child is frozen) claims it
        second.start()
        deadline = time.monotonic() + LEASE_S + 60
        row = stack.db_row(run["id"])
        while not (row["attempts"] == 2 and row["status"] == "running"):
            assert time.monotonic() < deadline, (row, stack.sessions(), stack.logs(), second.log())
            time.sleep(0.2)
            row = stack.db_row(run["id"])
        stack.wait_for_steps(run["id"], 3)
        for pid in frozen:  # the stale worker wakes up, still believing it owns the run
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while "lost ownership" not in stack.worker.log():
            assert time.monotonic() < deadline, stack.worker.log()[-3000:]
            time.sleep(0.2)
        stack.http.post(f"/runs/{run['id']}/cancel")
        done = stack.wait(run["id"], timeout=60)
        assert done["status"] == "cancelled", (done, second.log()[-2000:])
        assert done["owner"] == stack.db_row(run["id"])["owner"] and "pid" in done["owner"]
        assert str(frozen[0]) not in done["owner"]  # the second worker's claim stood
        steps = stack.steps(run["id"])
        assert steps == list(range(1, len(steps) + 1)), steps  # the stale worker wrote nothing
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        second.stop()
