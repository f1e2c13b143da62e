"""Optional features and the extra that installs each.

``pip install kanscope`` gives the library, the API, the dashboard and the local executor on
SQLite. PostgreSQL (``[postgres]``: psycopg), the Celery executor and worker
(``[distributed]``: celery + Redis client) and alloy featurisation (``[alloys]``: hea-bench)
are extras; ``[dev]`` includes all of them. A feature used without its extra raises
:class:`MissingExtraError`, which names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from app.services.errors import ServiceError

#: top-level module → the extra that installs it
EXTRAS = {
    "psycopg": "postgres",
    "celery": "distributed",
    "kombu": "distributed",
    "hea_bench": "alloys",
}


class MissingExtraError(ServiceError):
    """A feature needs a package of an optional extra that is not installed."""

    status_code = 501


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature`` (said in the message), or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name != top:  # the package is there but something it imports is not
            raise
        raise MissingExtraError(
            f"{feature} needs the {top!r} package, which is not installed: "
            f"pip install 'kanscope[{EXTRAS[top]}]'"
        ) from exc
