"""``LocalExecutor``: one process per run, bounded concurrency, a monitor thread.

Trainers are forked by a ``forkserver`` (where the platform has one, else each is a ``spawn``
interpreter): one clean process, started with the executor, imports torch and the trainer once
(``TRAINER_PRELOAD``; importing starts no thread and computes nothing) and forks every trainer
from that state, so a run's process is ready in ~0.05 s of CPU instead of an interpreter's
start with ~3 s of imports. A trainer still gets the server's current ``KANSCOPE_*`` /
``KAN_CORE_*`` environment (passed with the run, as a spawned one would have it).

Why not a shared ``ProcessPoolExecutor``: once one of its children dies, the pool is broken and
every pending run fails. Here each run has its own process; a monitor notices a dead process
and marks its run ``failed`` with the exit code (never left ``running``). The child watches its
parent and exits if the server dies, so no orphan keeps training.

Owners look like ``local@<host>:<server pid>:pid<child pid>``; start-up repair fails runs left
``running`` by a local process on this host that is no longer alive.

With ``warm_spare`` (``KANSCOPE_WARM_TRAINER``, on by default) one trainer process is started
ahead: it imports torch and the trainer, then waits on a pipe for a run id. A submitted run goes
to it at once (training starts within about a second instead of after the interpreter's
start-up, 5-20 s on a busy 2-core machine), and the next spare is started behind it. The spare
is an ordinary trainer from then on (same owner form, monitor, memory limit, parent watch).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from sqlalchemy import select

from app.db.models import Run, RunStatus
from app.db.session import Database
from app.services.run_claims import (
    fail_if_still_queued,
    fail_runs_of_owner_prefix,
    mark_failed_if_owned,
)
from app.worker.status import WorkerStatus

log = logging.getLogger("kanscope.local_executor")

HOST = socket.gethostname()


#: what every trainer imports before a run arrives; the forkserver imports it once
TRAINER_PRELOAD = ["app.services.training"]
#: the environment a trainer reads its settings from, passed with each run
SETTINGS_ENV = ("KANSCOPE_", "KAN_CORE_")


def trainer_context() -> mp.context.ForkServerContext | mp.context.SpawnContext:
    """forkserver (preloading ``TRAINER_PRELOAD``) where the platform has it, else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(TRAINER_PRELOAD)  # read when the forkserver first starts
        return ctx
    return mp.get_context("spawn")


def owner_prefix(server_pid: int | None = None) -> str:
    return f"local@{HOST}:{server_pid if server_pid is not None else os.getpid()}:"


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "The training process disappeared."
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"The training process was killed ({name}, exit code {code})."
    return f"The training process exited with code {code} before finishing the run."


def _child_main(
    run: int | Connection,
    prefix: str,
    database_url: str,
    parent_pid: int,
    threads: int,
    env: dict[str, str] | None = None,
) -> None:
    """Entry point of a training process (forked by the forkserver, or a spawned interpreter).
    ``run``: the run id, or for a spare trainer the pipe its run id will come through."""
    _prepare_trainer(database_url, parent_pid, threads, env)
    if isinstance(run, int):
        _train(run, prefix, database_url)
        return
    try:  # load kan_core's compiled kernels now rather than in the run's first step
        from kan_core.fused import warm_up

        warm_up()
    except Exception:  # the run will load (or do without) them itself
        log.warning("spare trainer: kernel warm-up failed", exc_info=True)
    db = _connected_database(database_url)  # the run's claim does not wait for a connection
    with contextlib.suppress(OSError):  # the executor may have sent a run and closed already
        run.send("ready")
    try:
        run_id = run.recv()  # a run sent before the close is still delivered
    except (EOFError, OSError):
        db.dispose()
        return  # the executor stopped without using this spare
    _train(int(run_id), prefix, database_url, db)


def _connected_database(database_url: str) -> Database:
    """The trainer's database with one pooled connection open."""
    from sqlalchemy import text

    db = Database(database_url)
    try:
        with db.read() as s:
            s.execute(text("SELECT 1"))
    except Exception:  # the run's own first write retries while the database is away
        log.warning("spare trainer: database not reachable yet", exc_info=True)
    return db


def _prepare_trainer(
    database_url: str, parent_pid: int, threads: int, env: dict[str, str] | None
) -> None:
    # the server's settings as they are now, not as they were when the forkserver started
    for key in [k for k in os.environ if k.startswith(SETTINGS_ENV)]:
        del os.environ[key]
    os.environ.update(env or {})
    os.environ["KANSCOPE_DATABASE_URL"] = database_url
    import torch

    from app.config import get_settings

    get_settings.cache_clear()
    torch.set_num_threads(max(1, threads))
    forked_by = os.getppid()  # the server (spawn) or the forkserver, which exits with the server

    def watch_parent() -> None:
        import time

        while True:
            time.sleep(1.0)
            if os.getppid() != forked_by or not _alive(parent_pid):
                os._exit(3)

    threading.Thread(target=watch_parent, daemon=True).start()
    import app.services.training  # noqa: F401  (the slow imports, done before any run arrives)


def _train(run_id: int, prefix: str, database_url: str, db: Database | None = None) -> None:
    from app.config import get_settings
    from app.services.memory import limit_trainer_memory, tune_trainer_allocator
    from app.services.training import run_training

    # an allocation beyond the budget fails in this process (the run ends `failed` naming
    # KANSCOPE_MAX_RUN_MEMORY_MB) instead of exhausting the machine
    limit_trainer_memory(get_settings().max_run_memory_mb)
    tune_trainer_allocator()
    db = db or Database(database_url)
    try:
        run_training(run_id, f"{prefix}pid{os.getpid()}", db=db)
    finally:
        db.dispose()


@dataclass
class _Job:
    run_id: int
    process: BaseProcess


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        db: Database,
        max_concurrent: int = 2,
        database_url: str | None = None,
        poll_s: float = 0.25,
        child_env: dict[str, str] | None = None,
        warm_spare: bool = False,
    ) -> None:
        self.db = db
        self.child_env = dict(child_env or {})
        self.database_url = database_url or db.url
        self.max_concurrent = max(1, int(max_concurrent))
        self.prefix = owner_prefix()
        self._ctx = trainer_context()
        self._pending: deque[int] = deque()
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._poll_s = poll_s
        self._threads_per_run = max(1, (os.cpu_count() or 1) // self.max_concurrent)
        self.warm_spare = warm_spare
        self._spare: tuple[BaseProcess, Connection] | None = None  # (process, its run pipe)
        self._monitor = threading.Thread(
            target=self._loop, name="kanscope-local-executor", daemon=True
        )
        self._monitor.start()

    # ── public ──
    def submit(self, run_id: int) -> None:
        with self._lock:
            if run_id in self._jobs or run_id in self._pending:
                return
            self._pending.append(int(run_id))
        self._wake.set()

    def cancel(self, run_id: int) -> None:
        """The trainer polls ``cancel_requested``; a pending run is skipped when claimed."""
        self._wake.set()

    def pid_of(self, run_id: int) -> int | None:
        with self._lock:
            job = self._jobs.get(run_id)
            return job.process.pid if job else None

    def active(self) -> list[int]:
        with self._lock:
            return list(self._jobs)

    def worker_status(self) -> WorkerStatus:
        """This server's own processes consume the queue while the monitor thread lives."""
        with self._lock:
            running, waiting = len(self._jobs), len(self._pending)
        if self._stop.is_set() or not self._monitor.is_alive():
            stopped = "the local executor has stopped; restart the server"
            return WorkerStatus("local", False, stopped)
        detail = (
            f"{running} of {self.max_concurrent} training processes busy "
            f"(KANSCOPE_MAX_CONCURRENT_RUNS), {waiting} run(s) waiting for one"
        )
        busy = running >= self.max_concurrent
        warm = self.warm_spare and self.spare_ready()
        if self.warm_spare:
            detail += "; a warm trainer is ready" if warm else "; a warm trainer is starting"
        workers = [self.prefix.rstrip(":")]
        return WorkerStatus("local", True, detail, workers, busy=busy, warm=warm)

    def resubmit_queued(self) -> list[int]:
        """After a restart: hand every ``queued`` run in the database to this executor."""
        with self.db.read() as s:
            ids = list(
                s.scalars(
                    select(Run.id).where(Run.status == RunStatus.QUEUED.value).order_by(Run.id)
                )
            )
        for run_id in ids:
            self.submit(run_id)
        return ids

    def repair_dead_local_runs(self) -> list[int]:
        """Fail runs left ``running`` by local training processes on this host that are gone."""
        prefix = f"local@{HOST}:"
        with self.db.read() as s:
            rows = s.execute(
                select(Run.id, Run.owner).where(
                    Run.status == RunStatus.RUNNING.value, Run.owner.startswith(prefix)
                )
            ).all()
        repaired = []
        for run_id, owner in rows:
            pid = _pid_from_owner(owner)
            if pid is not None and _alive(pid) and run_id in self.active():
                continue
            if pid is not None and _alive(pid) and not (owner or "").startswith(self.prefix):
                continue  # another live server on this host owns it
            reason = "The server stopped while this run was training (found at start-up)."
            if mark_failed_if_owned(self.db, run_id, owner, reason):
                repaired.append(run_id)
        return repaired

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._monitor.join(timeout=timeout)
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._pending.clear()
        spare, self._spare = self._spare, None
        if spare is not None:
            spare[1].close()  # the spare sees EOF and exits
            jobs.append(_Job(0, spare[0]))
        for job in jobs:
            if job.process.is_alive():
                job.process.terminate()
        for job in jobs:
            job.process.join(timeout=timeout)
            if job.process.is_alive():
                job.process.kill()
                job.process.join(timeout=1)
        fail_runs_of_owner_prefix(
            self.db, self.prefix, "The server stopped while this run was training."
        )

    # ── internals ──
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            try:
                self._reap_finished()
                self._start_pending()
                self._keep_spare()
            except Exception:  # keep monitoring through database hiccups
                log.exception("local executor loop failed")

    def _start_pending(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if len(self._jobs) >= self.max_concurrent or not self._pending:
                    return
                run_id = self._pending.popleft()
            proc = self._take_spare(run_id)
            if proc is not None:
                with self._lock:
                    self._jobs[run_id] = _Job(run_id, proc)
                log.info("run %s started in warm process %s", run_id, proc.pid)
                continue
            proc = self._trainer_process(run_id, f"kanscope-run-{run_id}")
            proc.start()
            with self._lock:
                self._jobs[run_id] = _Job(run_id, proc)
            log.info("run %s started in process %s", run_id, proc.pid)

    def _trainer_process(self, run: int | Connection, name: str) -> BaseProcess:
        return self._ctx.Process(
            target=_child_main,
            args=(
                run,
                self.prefix,
                self.database_url,
                os.getpid(),
                self._threads_per_run,
                {
                    **{k: v for k, v in os.environ.items() if k.startswith(SETTINGS_ENV)},
                    **self.child_env,
                },
            ),
            name=name,
            daemon=False,
        )

    def _keep_spare(self) -> None:
        """Start a spare trainer when none is waiting (and a run could use one)."""
        if not self.warm_spare or self._stop.is_set():
            return
        if self._spare is not None and self._spare[0].is_alive():
            return
        if self._spare is not None:  # it died while waiting: start another
            self._spare[0].join(timeout=1)
            self._spare[1].close()
        writer, reader = self._ctx.Pipe()  # run ids to the spare; "ready" back
        proc = self._trainer_process(reader, "kanscope-spare-trainer")
        proc.start()
        reader.close()
        self._spare = (proc, writer)

    def spare_ready(self) -> bool:
        """Whether a spare trainer has finished its imports and waits for a run."""
        spare = self._spare
        try:
            return bool(spare is not None and spare[0].is_alive() and spare[1].poll())
        except OSError:
            return False

    def _take_spare(self, run_id: int) -> BaseProcess | None:
        """The waiting spare, now training ``run_id``; None when there is none alive."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        proc, writer = spare
        try:
            if not proc.is_alive():
                raise BrokenPipeError
            writer.send(run_id)
        except OSError:  # gone: the caller starts a fresh process
            proc.join(timeout=1)
            return None
        finally:
            writer.close()
        return proc

    def _reap_finished(self) -> None:
        with self._lock:
            done = [j for j in self._jobs.values() if not j.process.is_alive()]
        for job in done:
            job.process.join(timeout=1)
            code = job.process.exitcode
            owner = f"{self.prefix}pid{job.process.pid}"
            reason = _exit_reason(code)
            if mark_failed_if_owned(self.db, job.run_id, owner, reason) or (
                code != 0 and fail_if_still_queued(self.db, job.run_id, reason)
            ):
                log.warning("run %s: process %s died (%s)", job.run_id, job.process.pid, code)
            with self._lock:
                self._jobs.pop(job.run_id, None)
            self._wake.set()


def _pid_from_owner(owner: str | None) -> int | None:
    if not owner or ":pid" not in owner:
        return None
    try:
        return int(owner.rsplit(":pid", 1)[1])
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
