"""Where the folders kept at the top of the source tree are found at run time.

``migrations/`` (Alembic) and ``frontend_assets/`` (the dashboard's JavaScript and CSS) sit at
the top of the repository, as the product's layout fixes. The wheel maps them into this
package (``app/migrations``, ``app/frontend_assets``: ``package-dir`` in ``pyproject.toml``),
so an installed kanscope finds them next to this file; a source checkout (editable install,
tests) finds them one level up.
"""

from __future__ import annotations

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """``app/<name>`` in an installed kanscope, ``<repo>/<name>`` in a source checkout."""
    for candidate in (APP_DIR / name, APP_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"kanscope's {name}/ folder is neither in {APP_DIR} (installed) nor in {APP_DIR.parent} "
        "(source checkout); reinstall kanscope (pip install kanscope) or run from the repository"
    )


def migrations_dir() -> Path:
    return shipped_dir("migrations")


def assets_dir() -> Path:
    return shipped_dir("frontend_assets")
