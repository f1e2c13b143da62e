"""``CeleryExecutor``: hands run ids to Celery workers through Redis (``KANSCOPE_EXECUTOR=celery``).

The run row is committed as ``queued`` before :meth:`CeleryExecutor.submit` is called, so the
database already holds everything about the run; the message carries only its id. When Redis
cannot be reached, ``submit`` raises :class:`QueueUnavailableError` (the API answers 503 with its
message) and the run stays ``queued`` in the database: submitting it again later is safe, because
a duplicate delivery finds the run claimed and does nothing.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from kombu.exceptions import KombuError, OperationalError

from app.services.errors import ExecutorUnavailableError
from app.worker.celery_app import GPU_QUEUE, PUBLISH_RETRY_POLICY, celery_app, train_run


class QueueUnavailableError(ExecutorUnavailableError):
    """The task queue (Redis) cannot be reached; the run is kept as ``queued`` (HTTP 503)."""

    def __init__(self, run_id: int, broker: str, reason: str) -> None:
        self.run_id = run_id
        self.broker = broker
        super().__init__(
            f"The task queue is unavailable (Redis at {broker}: {reason}). Run {run_id} is saved "
            "as queued and nothing was lost; it will start once the queue is reachable again — "
            "check that Redis and a `kanscope worker` are running."
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
    """Publishes ``kanscope.train_run(run_id)`` on the ``gpu`` queue."""

    name = "celery"

    def __init__(self, redis_url: str | None = None) -> None:
        # Default: the broker the Celery app is configured with (KANSCOPE_REDIS_URL).
        self.broker_url = redis_url or str(celery_app.conf.broker_url)
        self._broker = redact_url(self.broker_url)

    def submit(self, run_id: int) -> None:
        """Queue run ``run_id`` (already committed as ``queued``); raise if Redis is down."""
        try:
            with celery_app.connection_for_write(self.broker_url) as connection:
                train_run.apply_async(
                    args=[int(run_id)],
                    queue=GPU_QUEUE,
                    producer=celery_app.amqp.Producer(connection),
                    retry=True,
                    retry_policy=PUBLISH_RETRY_POLICY,
                )
        except (OperationalError, KombuError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise QueueUnavailableError(run_id, self._broker, reason) from exc

    def cancel(self, run_id: int) -> None:
        """Cancellation is the ``cancel_requested`` flag in the run row; the trainer polls it."""

    def shutdown(self) -> None:
        """Nothing to release: each submit uses its own short broker connection."""
