"""Wiring: the dashboard mounted at "/" next to the JSON API, the model registry, the local
executor's handling of a trainer that dies before claiming, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.db.models import Run
from app.db.session import Database
from app.main import create_app
from app.services.model_registry import MODEL_REGISTRY, available_models
from tests.app.api_helpers import make_settings, upload, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_dashboard_mounted_at_root_and_api_stays_json(sqlite_url, tmp_path):
    pytest.importorskip("app.dashboard")
    app = create_app(make_settings(sqlite_url, tmp_path), start_executor=False)
    with TestClient(app) as c:
        home = c.get("/")
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        assert c.get("/api/health").json()["status"] == "ok"
        missing = c.get("/api/nothing-here")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith(
            "application/json"
        )


@pytest.fixture
def plugin_client(db_url, tmp_path, monkeypatch):
    import app.services.model_registry as model_registry
    from app.config import get_settings

    monkeypatch.setenv("KANSCOPE_MODEL_PLUGINS", "tests.app.mean_baseline_plugin")
    monkeypatch.setenv("KANSCOPE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    monkeypatch.setattr(model_registry, "_plugins_loaded", False)
    monkeypatch.delitem(sys.modules, "tests.app.mean_baseline_plugin", raising=False)
    settings = make_settings(db_url, tmp_path, model_plugins="tests.app.mean_baseline_plugin")
    with TestClient(create_app(settings, mount_dashboard=False)) as c:
        yield c
    MODEL_REGISTRY.pop("mean_baseline", None)
    get_settings.cache_clear()


def test_plugin_model_kind_trains_through_the_api(plugin_client, demo_csv):
    """Registered in the API process and, through KANSCOPE_MODEL_PLUGINS, in the trainer."""
    client = plugin_client
    assert "mean_baseline" in [m["name"] for m in client.get("/api/models").json()]
    ds = upload(client, demo_csv)
    body = {"dataset_id": ds["id"], "target_columns": ["HV"], "model": "mean_baseline"}
    r = client.post("/api/runs", json=body)
    assert r.status_code == 201, r.text
    run = wait_for(client, r.json()["id"])
    assert run["status"] == "succeeded" and not run["has_model"], run
    pred = client.get(f"/api/runs/{run['id']}/predictions").json()
    assert len({round(p[0], 6) for p in pred["y_pred"]}) == 1  # the mean, in original units
    assert 100 < pred["y_pred"][0][0] < 1000
    assert client.get(f"/api/runs/{run['id']}/network").status_code == 409
    csv = client.get(f"/api/runs/{run['id']}/export/predictions")
    assert csv.status_code == 200 and csv.text.count("\n") == len(pred["rows"]) + 1
    bad = client.post(
        "/api/runs", json=body | {"target_columns": ["Phases"], "task": "classification"}
    )
    assert bad.status_code == 422 and "does not support task" in bad.json()["detail"]
    assert "kan" in available_models() and "mlp" in available_models()


def test_trainer_dying_before_its_claim_fails_the_run(sqlite_url, tmp_path):
    from app.worker.local import LocalExecutor

    db = Database(sqlite_url)
    with db.write() as s:
        from app.db.models import Dataset

        ds = Dataset(name="d", n_rows=0, n_columns=0, size_bytes=0, columns=[], content=b"")
        s.add(ds)
        s.flush()
        run = Run(dataset_id=ds.id, model="kan", task="regression", config={}, summary={})
        s.add(run)
        s.flush()
        run_id = run.id
    # the trainer gets a database it cannot open, so it exits before claiming
    executor = LocalExecutor(db, max_concurrent=1, database_url="sqlite:////proc/nonexistent/x.db")
    try:
        executor.submit(run_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with db.read() as s:
                status, error = s.query(Run.status, Run.error).filter(Run.id == run_id).one()
            if status != "queued":
                break
            time.sleep(0.2)
        assert status == "failed" and "exited with code 1" in error
        assert executor.active() == []
    finally:
        executor.shutdown()
        db.dispose()


def test_serve_fills_the_kernel_caches_in_the_background_by_default(live_server_factory):
    """On by default (the first small fit must not compile); the tests' servers turn it off
    because the session filled the caches once."""
    server = live_server_factory(KANSCOPE_WARM_KERNELS="true")
    line = next(
        (x for x in server.log_path.read_text().splitlines() if x.startswith("kernel caches")),
        "",
    )
    assert line.startswith("kernel caches: filling in the background (process "), line
    pid = int(line.rsplit(" ", 1)[1].rstrip(")"))
    assert pid != server.process.pid


@pytest.mark.slow
def test_cli_migrate_and_train(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANSCOPE_")}
    env["KANSCOPE_DATA_DIR"] = str(tmp_path)
    mig = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert mig.returncode == 0 and "latest schema" in mig.stdout, mig.stderr
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "train",
            "--csv",
            str(REPO / "app/demo_data/Gorsse2018ML_Data_RawHV.csv"),
            "--target",
            "HV",
            "--features",
            "Al",
            "Ni",
            "--hidden",
            "2",
            "--steps",
            "5",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    assert '"status": "succeeded"' in train.stdout
    assert "5/5" in train.stderr  # the tqdm bar reached the end
    bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", "--dataset-id", "1", "--target", "nope"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "not in the dataset" in bad.stderr


def test_network_of_a_wide_model_stays_bounded(sqlite_url, tmp_path):
    """8000 edges: every edge is listed with its score, curves only for the top 5000."""
    import pandas as pd

    from app.db.models import ModelArtifact
    from app.services.datasets import create_dataset_from_frame, load_frame
    from app.services.run_data import prepare_data
    from app.services.runs import create_run
    from kan_core.io import model_to_bytes
    from kan_core.model import KAN

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50, 4)), columns=["a", "b", "c", "y"])
    db = Database(sqlite_url)
    with db.write() as s:
        ds = create_dataset_from_frame(s, frame, "wide")
        run, _ = create_run(
            s, {"dataset_id": ds.id, "target_columns": ["y"], "hidden": [2000]}, 10**6
        )
        data = prepare_data(load_frame(s, ds.id), ds.columns, run.config)
        model = KAN([3, 2000, 1], grid=3)
        s.add(
            ModelArtifact(
                run_id=run.id, weights=model_to_bytes(model, data.metadata()), meta=data.metadata()
            )
        )
        run.status, run.has_model = "succeeded", True
        run_id = run.id
    db.dispose()
    app = create_app(
        make_settings(sqlite_url, tmp_path), start_executor=False, mount_dashboard=False
    )
    with TestClient(app) as c:
        net = c.get(f"/api/runs/{run_id}/network").json()
    edges = [e for layer in net["layers"] for e in layer["edges"]]
    assert len(edges) == 8000 and net["width"] == [3, 2000, 1]
    drawn = [e for e in edges if e["x"]]
    assert len(drawn) == 5000 and all(len(e["x"]) == 32 for e in drawn)
    cutoff = min(e["score"] for e in drawn)
    assert all(e["score"] <= cutoff for e in edges if not e["x"])


def _symbolic_run(sqlite_url: str) -> int:
    """A run whose stored KAN has every edge fixed (no training needed)."""
    import pandas as pd

    from app.db.models import ModelArtifact
    from app.services.datasets import create_dataset_from_frame, load_frame
    from app.services.run_data import prepare_data
    from app.services.runs import create_run
    from kan_core.io import model_to_bytes
    from kan_core.model import KAN
    from kan_core.symbolic import auto_symbolic
    from kan_core.train import FitConfig, TrainData, fit

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "y"])
    frame["y"] = frame["a"] ** 2 + 0.5 * frame["b"]
    db = Database(sqlite_url)
    with db.write() as s:
        ds = create_dataset_from_frame(s, frame, "sym")
        run, _ = create_run(s, {"dataset_id": ds.id, "target_columns": ["y"], "hidden": []}, 10**6)
        data = prepare_data(load_frame(s, ds.id), ds.columns, run.config)
        model = KAN([2, 1], grid=5)
        fit(model, TrainData(data.x_train, data.y_train), FitConfig(steps=60, lr=0.05))
        auto_symbolic(model, data.x_train, r2_threshold=0.0, library=["x", "x^2"])
        assert all(bool((layer.sym_mask > 0).all()) for layer in model.layers)
        s.add(
            ModelArtifact(
                run_id=run.id, weights=model_to_bytes(model, data.metadata()), meta=data.metadata()
            )
        )
        run.status, run.has_model = "succeeded", True
        run_id = run.id
    db.dispose()
    return run_id


def test_formula_time_limit_gives_a_422_and_the_server_stays_usable(sqlite_url, tmp_path):
    run_id = _symbolic_run(sqlite_url)
    slow = create_app(
        make_settings(sqlite_url, tmp_path, formula_timeout_s=0.001),
        start_executor=False,
        mount_dashboard=False,
    )
    with TestClient(slow) as c:
        r = c.get(f"/api/runs/{run_id}/formula")
        assert r.status_code == 422 and "took longer than 0.001 s" in r.json()["detail"]
        assert c.get(f"/api/runs/{run_id}/export/latex").status_code == 422
        assert c.get("/api/health").status_code == 200
    ok = create_app(
        make_settings(sqlite_url, tmp_path), start_executor=False, mount_dashboard=False
    )
    with TestClient(ok) as c:
        f = c.get(f"/api/runs/{run_id}/formula")
        assert f.status_code == 200, f.text
        out = f.json()["outputs"][0]
        assert out["name"] == "y" and {"a", "b"} <= set(out["text"].replace("*", " ").split())
        assert f.json()["complete"]
        src = c.get(f"/api/runs/{run_id}/export/python").text
        assert "def predict(X):" in src and "INPUT_COLUMNS = ['a', 'b']" in src
