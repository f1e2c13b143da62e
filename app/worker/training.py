"""The task function both executors call (re-exported from :mod:`app.services.training`)."""

from app.services.training import run_training

__all__ = ["run_training"]
