from fastapi import APIRouter
from sqlalchemy import text

import app
from app.api.deps import DatabaseDep, ExecutorDep, SettingsDep
from app.api.schemas import HealthOut, WorkersOut
from app.worker.status import WorkerStatus, executor_status

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
def health(db: DatabaseDep, settings: SettingsDep) -> HealthOut:
    """Liveness plus a database round trip (503 when the database is unavailable)."""
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return HealthOut(database=db.dialect, executor=settings.executor, version=app.__version__)


@router.get("/workers", response_model=WorkersOut)
def workers(executor: ExecutorDep, settings: SettingsDep) -> WorkersOut:
    """Whether a worker consumes the run queue. Celery: a ping of the workers (1 s, answer kept
    5 s); queued runs say so in ``queue_note`` when none answers."""
    status = executor_status(executor) or WorkerStatus(
        settings.executor, True, "this executor does not report its workers"
    )
    return WorkersOut(
        executor=status.executor,  # type: ignore[arg-type]
        consuming=status.consuming,
        busy=status.busy,
        detail=status.detail,
        workers=status.workers,
        warm=status.warm,
    )
