"""Is anything consuming the run queue? ``GET /api/workers`` and the note on queued runs.

The local executor trains in processes of the API server itself, so it consumes its queue as
long as its monitor thread lives. With Celery the runs wait in Redis until a ``kanscope worker``
takes them; without one a run stays ``queued`` with no other sign, so the API asks the workers
(``celery_app.control.ping``, one broadcast, 1 s) and keeps the answer a few seconds: status
pages that poll stay cheap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NO_WORKER_NOTE = (
    "No worker is running: nothing consumes the task queue, so this run waits. Start one with "
    "`kanscope worker` (same KANSCOPE_REDIS_URL and KANSCOPE_DATABASE_URL); the run starts as "
    "soon as a worker takes it."
)


@dataclass(frozen=True)
class WorkerStatus:
    executor: str  # "local" | "celery"
    consuming: bool  # some worker takes runs from the queue
    detail: str
    workers: list[str] = field(default_factory=list)
    busy: bool = False  # consuming, but every slot is taken: queued runs wait their turn
    #: a trainer process has done its imports and waits for a run (local executor's warm
    #: spare): the next run starts within about a second; None where the executor cannot tell
    warm: bool | None = None


def executor_status(executor: Any) -> WorkerStatus | None:
    """The executor's status, or None for an executor that cannot tell (a test double)."""
    status = getattr(executor, "worker_status", None)
    return status() if callable(status) else None


def queue_note(status: WorkerStatus | None) -> str | None:
    """What a queued run's page says about the wait; None when a worker will take it."""
    if status is None:
        return None
    if not status.consuming:
        if status.executor == "celery":
            return f"{NO_WORKER_NOTE} ({status.detail})"
        return f"No training process is taking runs: {status.detail}"
    if status.busy:
        return f"Waiting for a free training slot: {status.detail}"
    return None


class CachedStatus:
    """``get()`` calls ``compute`` at most once per ``ttl_s``; concurrent callers share it."""

    def __init__(self, compute: Callable[[], WorkerStatus], ttl_s: float = 5.0) -> None:
        self._compute, self.ttl_s = compute, ttl_s
        self._value: WorkerStatus | None = None
        self._at = -float("inf")
        self._lock = threading.Lock()

    def get(self) -> WorkerStatus:
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self.ttl_s:
                self._value = self._compute()
                self._at = time.monotonic()
            return self._value


def celery_worker_status(
    celery_app: Any, broker_url: str, broker: str, timeout_s: float = 1.0
) -> WorkerStatus:
    """Ping the workers through ``broker_url`` (``broker``: the URL without its password, for
    the message). The ping goes through a small Celery app of its own for ``broker_url``:
    ``control.ping`` publishes through the app's configured broker whatever connection it is
    given."""
    from celery import Celery

    app = Celery("kanscope-status", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        accept_content=["json"],
        task_serializer="json",
        control_exchange=celery_app.conf.control_exchange,
        broker_connection_timeout=3.0,
    )
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            replies = app.control.ping(timeout=timeout_s, connection=conn) or []
    except Exception as exc:  # Redis away: nothing can consume the queue either
        reason = str(exc) or type(exc).__name__
        return WorkerStatus(
            "celery", False, f"the task queue (Redis at {broker}) is unreachable: {reason}"
        )
    finally:
        app.close()
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return WorkerStatus(
            "celery", False, f"no Celery worker answered a ping within {timeout_s:g} s"
        )
    detail = f"{len(names)} worker(s) answering: {', '.join(names)}"
    return WorkerStatus("celery", True, detail, names)
