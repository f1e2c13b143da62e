"""``CeleryExecutor``: hands run ids to Celery workers through Redis (``KANSCOPE_EXECUTOR=celery``).

The run row is committed as ``queued`` before :meth:`CeleryExecutor.submit` is called, so the
database already holds everything about the run; the message carries only its id. When Redis
cannot be reached, ``submit`` raises :class:`QueueUnavailableError` (the API answers 503 with its
message) and the run stays ``queued`` in the database. The executor keeps the id and publishes it
as soon as Redis answers again (a background retry), and :meth:`resubmit_queued` re-sends every
queued run after a restart. Sending a run twice is harmless: a duplicate delivery finds the run
claimed and does nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from kombu.exceptions import KombuError, OperationalError

from app.services.errors import ExecutorUnavailableError
from app.worker.celery_app import GPU_QUEUE, PUBLISH_RETRY_POLICY, celery_app, train_run
from app.worker.status import CachedStatus, WorkerStatus, celery_worker_status

if TYPE_CHECKING:
    from app.db.session import Database

log = logging.getLogger("kanscope.celery")


class QueueUnavailableError(ExecutorUnavailableError):
    """The task queue (Redis) cannot be reached; the run is kept as ``queued`` (HTTP 503)."""

    def __init__(self, run_id: int, broker: str, reason: str) -> None:
        self.run_id = run_id
        self.broker = broker
        super().__init__(
            f"The task queue is unavailable (Redis at {broker}: {reason}). Run {run_id} is saved "
            "as queued and nothing was lost: it is sent to the workers automatically once Redis "
            "answers again, so do not submit it twice. Check that Redis and a `kanscope worker` "
            "are running."
        )


def redact_url(url: str) -> str:
    """``url`` without its password, safe to show in error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class CeleryExecutor:
    """Publishes ``kanscope.train_run(run_id)`` on the ``gpu`` queue.

    ``db`` (optional) lets :meth:`resubmit_queued` find the queued runs after a restart.
    ``retry_interval_s``: how often ids that could not be sent are tried again;
    ``status_ttl_s``: how long a worker ping's answer is reused (:meth:`worker_status`).
    """

    name = "celery"

    def __init__(
        self,
        redis_url: str | None = None,
        db: Database | None = None,
        retry_interval_s: float = 3.0,
        status_ttl_s: float = 5.0,
    ) -> None:
        # Default: the broker the Celery app is configured with (KANSCOPE_REDIS_URL).
        self.broker_url = redis_url or str(celery_app.conf.broker_url)
        self.db = db
        self.retry_interval_s = retry_interval_s
        self._broker = redact_url(self.broker_url)
        self._unsent: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._retry_thread: threading.Thread | None = None
        self._status = CachedStatus(
            lambda: celery_worker_status(celery_app, self.broker_url, self._broker),
            ttl_s=status_ttl_s,
        )

    def worker_status(self) -> WorkerStatus:
        """Whether a Celery worker answers a ping (kept ``status_ttl_s`` seconds)."""
        return self._status.get()

    def _publish(self, run_id: int) -> None:
        with celery_app.connection_for_write(self.broker_url) as connection:
            train_run.apply_async(
                args=[int(run_id)],
                queue=GPU_QUEUE,
                producer=celery_app.amqp.Producer(connection),
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )

    def submit(self, run_id: int) -> None:
        """Queue run ``run_id`` (already committed as ``queued``); raise if Redis is down."""
        try:
            self._publish(run_id)
        except (OperationalError, KombuError, OSError) as exc:
            self._keep_for_retry(run_id)
            reason = str(exc) or type(exc).__name__
            raise QueueUnavailableError(run_id, self._broker, reason) from exc
        with self._lock:
            self._unsent.discard(run_id)

    @property
    def unsent(self) -> list[int]:
        """Run ids waiting for Redis to come back."""
        with self._lock:
            return sorted(self._unsent)

    def resubmit_queued(self) -> list[int]:
        """After a restart: send every ``queued`` run in the database again (duplicates are
        skipped by the workers' claim). Returns the ids; ids Redis refused are retried later."""
        if self.db is None:
            return []
        from sqlalchemy import select

        from app.db.models import Run, RunStatus

        with self.db.read() as s:
            ids = [
                int(i)
                for i in s.scalars(
                    select(Run.id).where(Run.status == RunStatus.QUEUED.value).order_by(Run.id)
                )
            ]
        for run_id in ids:
            try:
                self.submit(run_id)
            except QueueUnavailableError:
                log.warning("Redis unavailable; %d queued run(s) will be sent later", len(ids))
                for rest in ids:
                    self._keep_for_retry(rest)
                break
        return ids

    def cancel(self, run_id: int) -> None:
        """Cancellation is the ``cancel_requested`` flag in the run row; the trainer polls it."""

    def shutdown(self) -> None:
        """Stop the retry thread; unsent ids stay ``queued`` in the database for the next start."""
        self._stop.set()
        thread = self._retry_thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=5)

    # ── retry of ids Redis refused ──
    def _keep_for_retry(self, run_id: int) -> None:
        with self._lock:
            self._unsent.add(int(run_id))
            if self._stop.is_set() or self._retry_thread is not None:
                return
            self._retry_thread = threading.Thread(
                target=self._retry_loop, name="kanscope-celery-resend", daemon=True
            )
            self._retry_thread.start()

    def _retry_loop(self) -> None:
        while not self._stop.wait(self.retry_interval_s):
            with self._lock:
                pending = sorted(self._unsent)
                if not pending:
                    self._retry_thread = None
                    return
            for run_id in pending:
                try:
                    self._publish(run_id)
                except (OperationalError, KombuError, OSError):
                    break  # still down; try again after the interval
                with self._lock:
                    self._unsent.discard(run_id)
                log.info("run %s sent to the queue after Redis came back", run_id)
        # stopping: whatever is left stays queued in the database
