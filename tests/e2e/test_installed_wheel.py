"""What a user gets from ``pip install kanscope``: the wheel installed by pip into a fresh venv
outside the checkout, ``kanscope migrate`` and ``kanscope serve`` on SQLite, and the dashboard's
clientside callbacks (``kanscope.js``, shipped inside the wheel) drawing a clicked edge at once.

The venv reuses this environment's dependencies through a path entry (no downloads); a path in
a ``.pth`` file is not a site directory, so the checkout's editable install stays invisible and
``app`` can only come from the installed wheel."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import pytest

from tests.e2e.plotly_helpers import click_edge, wait_for_trace
from tests.e2e.server_process import DEMO_CSV, FINISHED, ServerProcess
from tests.wheel_build import REPO, build_wheel


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fresh_venv_from_the_wheel_migrates_serves_and_draws_a_clicked_edge(browser, tmp_path):
    wheel = build_wheel(tmp_path / "src", tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    site = Path(
        subprocess.check_output(
            [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            text=True,
        ).strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "-q"]
        + ["--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr
    assert (site / "app" / "frontend_assets" / "kanscope.js").is_file()

    home = tmp_path / "home"  # the user's working directory: no checkout in sight
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KANSCOPE_", "PYTHON"))}
    env["KANSCOPE_DATA_DIR"] = str(home / "data")
    migrate = subprocess.run(
        [bin_dir / "kanscope", "migrate"], cwd=home, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0 and "latest schema" in migrate.stdout, migrate.stderr
    where = subprocess.check_output(
        [bin_dir / "python", "-c", "import app; print(app.__file__)"], cwd=home, env=env, text=True
    )
    assert Path(where.strip()).is_relative_to(site) and not Path(where).is_relative_to(REPO)

    # numba would compile its kernels afresh for the new copy of kan_core (~20 s a core);
    # the test is about the package, so the documented pure-PyTorch/C++ path trains instead
    no_numba = {"KAN_CORE_DISABLE_NUMBA": "1"}
    server = ServerProcess(home / "data", no_numba, kanscope=[str(bin_dir / "kanscope")], cwd=home)
    try:
        server.wait_healthy()
        with open(DEMO_CSV, "rb") as f:
            dataset = server.api.post("/datasets", files={"file": ("demo.csv", f, "text/csv")})
        assert dataset.status_code == 201, dataset.text
        features = [c["name"] for c in dataset.json()["columns"] if c["name"] != "HV"][:2]
        run = server.api.post(
            "/runs",
            json={
                "dataset_id": dataset.json()["id"],
                "target_columns": ["HV"],
                "feature_columns": features,
                "hidden": [2],
                "steps": 20,
            },
        ).json()
        deadline = time.monotonic() + 120
        while (status := server.api.get(f"/runs/{run['id']}").json()["status"]) not in FINISHED:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.3)
        assert status == "succeeded", server.api.get(f"/runs/{run['id']}").json()["error"]

        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/runs/{run['id']}")
        wait_for_trace(page, "run-network", "edges")
        address = click_edge(page, "run-network", 0)
        label = "φ[{}] {}→{}".format(*address)
        # kanscope.js draws the clicked edge's curve in the browser
        page.wait_for_function(
            """(label) => {
              const gd = document.querySelector('#run-edge .js-plotly-plot');
              return !!(gd && gd.layout && gd.layout.title
                        && gd.layout.title.text.includes(label));
            }""",
            arg=label,
        )
        assert page.evaluate("() => typeof window.dash_clientside.kanscope") == "object"
        assert errors == []
        page.close()
    finally:
        server.stop()
    assert re.search(r"kanscope on http://127\.0\.0\.1:\d+/", server.log_path.read_text())
