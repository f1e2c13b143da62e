"""The ``Executor`` protocol and the factory that picks one from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from app.extras import require
from app.services.errors import ExecutorUnavailableError

if TYPE_CHECKING:
    from app.config import Settings
    from app.db.session import Database

__all__ = ["Executor", "ExecutorUnavailableError", "make_executor"]


class Executor(Protocol):
    """Runs training for run ids whose rows are committed as ``queued``.

    ``submit`` may raise :class:`ExecutorUnavailableError` (the API answers 503; the run stays
    queued). Cancellation is the ``cancel_requested`` flag in the row; ``cancel`` is a hint.
    """

    name: str

    def submit(self, run_id: int) -> None: ...

    def cancel(self, run_id: int) -> None: ...

    def shutdown(self) -> None: ...


def make_executor(settings: Settings, db: Database) -> Executor:
    if settings.executor == "celery":
        require("celery", "KANSCOPE_EXECUTOR=celery")
        from app.worker.celery_executor import CeleryExecutor

        return CeleryExecutor(settings.redis_url, db=db)
    from app.worker.local import LocalExecutor

    return LocalExecutor(
        db,
        max_concurrent=settings.max_concurrent_runs,
        database_url=settings.effective_database_url,
        child_env=settings_env(settings),
        warm_spare=settings.warm_trainer,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as KANSCOPE_* variables, so a spawned trainer sees the same values."""
    env = {}
    for key, value in settings.model_dump().items():
        if value is not None:
            env[f"KANSCOPE_{key.upper()}"] = str(value)
    return env
