"""Storage: SQLAlchemy 2 typed models and the engine/session factory."""

from app.db.models import Base, Dataset, ModelArtifact, Run, RunMetric, RunStatus
from app.db.session import Database, get_database

__all__ = [
    "Base",
    "Database",
    "Dataset",
    "ModelArtifact",
    "Run",
    "RunMetric",
    "RunStatus",
    "get_database",
]
