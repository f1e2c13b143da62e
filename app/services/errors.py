"""Errors users can cause, each with the HTTP status the API answers and a message that says
what to change. Services raise these; ``app.api.errors`` turns them into ``{"detail": …}``.
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class NotFoundError(ServiceError):
    status_code = 404


class ConflictError(ServiceError):
    """The request is valid but the resource's state does not allow it now."""

    status_code = 409


class InvalidInputError(ServiceError):
    """The request is well-formed but its content cannot be used (bad CSV, unknown column …)."""

    status_code = 422


class PayloadTooLargeError(ServiceError):
    status_code = 413


class UnauthorizedError(ServiceError):
    status_code = 401


class ServiceUnavailableError(ServiceError):
    """A dependency (database, queue) is unavailable; retrying later is the fix."""

    status_code = 503


class ExecutorUnavailableError(ServiceUnavailableError):
    """The executor cannot take the run now; the run stays ``queued`` in the database."""
