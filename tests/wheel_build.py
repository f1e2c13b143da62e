"""Build kanscope's wheel from a copy of the sources (the build leaves nothing in the checkout;
~2 s), for tests/test_packaging.py and the installed-wheel browser test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"app.migrations": "migrations", "app.frontend_assets": "frontend_assets"}
SOURCES = ("pyproject.toml", "README.md", "app", "kan_core", *SHIPPED.values())


def build_wheel(src: Path, out: Path) -> Path:
    """Copy the sources into ``src`` (new or empty), build into ``out``; the wheel's path."""
    src.mkdir(parents=True, exist_ok=True)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=junk)
        else:
            shutil.copy2(REPO / name, src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert build.returncode == 0, build.stderr
    (whl,) = out.glob("kanscope-*.whl")
    return whl
