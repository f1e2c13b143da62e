from fastapi import APIRouter
from sqlalchemy import text

import app
from app.api.deps import DatabaseDep, SettingsDep
from app.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
def health(db: DatabaseDep, settings: SettingsDep) -> HealthOut:
    """Liveness plus a database round trip (503 when the database is unavailable)."""
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return HealthOut(database=db.dialect, executor=settings.executor, version=app.__version__)
