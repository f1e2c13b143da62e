"""Memory budget (issue #20 item 4): runs and inspection calls are estimated before they start
and refused (422, naming KANSCOPE_MAX_RUN_MEMORY_MB and what to lower) or sampled down when they
would exceed it; the estimate is checked against a measured fit; an allocation that fails in a
trainer ends the run ``failed`` with a message naming the setting.

The two configurations of the issue: 999 features, hidden [9], grid 200, k 5 (the trainer grew
to 4.2 GB and failed "can't allocate 3,006,590,400 bytes"), and inspecting a 999×190 KAN (500,
API process 0.86 → 4.9 GB). API tests run on SQLite and PostgreSQL (the 999×190 inspection,
which measures the API process, on SQLite).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.services.memory import (
    MB,
    SETTING,
    InspectionShape,
    MemoryBudgetError,
    check_run_memory,
    estimate_for_config,
    estimate_inspection_bytes,
    estimate_run_memory_bytes,
    inspection_rows,
    out_of_memory_message,
    trainer_memory_limit_bytes,
)
from tests.app.api_helpers import make_settings, upload, wait_for

ISSUE_TRAINING = {"hidden": [9], "grid": 200, "k": 5, "update_grid_every": 5}
CAP_MB = 2048  # the default


def issue_frame(n_rows: int = 600, n_features: int = 999) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_rows, n_features)).round(3)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(n_features)])
    frame["y"] = (x[:, 0] ** 2 + np.sin(x[:, 1])).round(3)
    return frame


# ── the estimate ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("n_rows", [600, 4500])
@pytest.mark.parametrize("engine", ["native", "numba"])
def test_the_issue_training_config_is_refused_naming_the_setting(n_rows: int, engine: str) -> None:
    config = {"model": "kan", "val_fraction": 0.2} | ISSUE_TRAINING
    est = estimate_for_config(config, 999, 1, n_rows, engine)
    assert est is not None and est.total_bytes > CAP_MB * MB
    with pytest.raises(MemoryBudgetError) as info:
        check_run_memory(config, 999, 1, n_rows, max_mb=CAP_MB)
    message = str(info.value)
    assert SETTING in message and "2,048 MB" in message
    assert re.search(r"lower grid to \d+ or less \(now 200\)", message)
    assert "feature columns (now 999)" in message and "hidden layers (now [9])" in message
    assert info.value.status_code == 422


def test_small_runs_fit_comfortably() -> None:
    config = {"model": "kan", "hidden": [5], "grid": 5, "k": 3, "update_grid_every": 5}
    for engine in ("native", "numba"):
        est = estimate_for_config(config, 10, 1, 5_000, engine)
        assert est is not None and est.total_bytes < 200 * MB
    mlp = estimate_for_config({"model": "mlp", "hidden": [64, 64]}, 20, 1, 100_000)
    assert mlp is not None and mlp.total_bytes < 1024 * MB
    assert estimate_for_config({"model": "ridge"}, 20, 1, 100) is None  # not modelled


def test_every_option_the_refusal_suggests_fits() -> None:
    config = {"model": "kan", "hidden": [64], "grid": 30, "k": 2, "update_grid_every": 0}
    with pytest.raises(MemoryBudgetError) as info:
        check_run_memory(config, 200, 1, 20_000, max_mb=1536)
    message = str(info.value)
    batch = int(re.search(r"batch_size to ([\d,]+) or less", message).group(1).replace(",", ""))
    grid = int(re.search(r"lower grid to (\d+) or less", message).group(1))
    for change in ({"batch_size": batch}, {"grid": grid}):
        est = estimate_for_config(config | change, 200, 1, 20_000, "native")
        assert est is not None and est.total_bytes <= 1536 * MB, change
    too_big = estimate_for_config(config | {"batch_size": batch + 64}, 200, 1, 20_000, "native")
    assert too_big is not None and too_big.total_bytes > 1536 * MB  # the largest that fits


def test_the_estimate_grows_with_what_it_should() -> None:
    def total(**kw: Any) -> int:
        base: dict[str, Any] = {"model": "kan", "width": [50, 8, 1], "n_train": 40_000,
                                "grid": 20, "k": 2}  # fmt: skip
        return estimate_run_memory_bytes(**(base | kw)).total_bytes

    assert total(n_train=80_000) > total()
    assert total(grid=40) > total()
    assert total(width=[100, 8, 1]) > total()
    assert total(k=5) > total()
    assert total(batch_size=500) < total()
    assert total(optimizer="lbfgs") > total()
    assert total(update_grid_every=5) >= total()
    assert total(lamb=0.01) > total()


@pytest.mark.slow
def test_the_estimate_bounds_a_measured_fit() -> None:
    """The calibration, for one configuration of each kind: a fresh interpreter's peak resident
    growth over a few fit steps is below the estimate, and not far below it."""
    from app.services.memory_calibration import measure

    specs = (
        {"name": "cardinal", "n_in": 100, "hidden": [16], "grid": 30, "k": 2, "rows": 4000},
        {"name": "grid update", "n_in": 100, "hidden": [32], "grid": 40, "k": 3, "rows": 4000,
         "update_grid_every": 1},
    )  # fmt: skip
    # each interpreter measures its own peak, so the two run side by side
    with ThreadPoolExecutor(len(specs)) as pool:
        for r in pool.map(measure, specs):
            assert 1.0 <= r["ratio"] <= 2.5, r


# ── runs through the API ────────────────────────────────────────────────────────────────────


def test_run_creation_refuses_the_issue_config_with_422(client: Any) -> None:
    csv = issue_frame().to_csv(index=False).encode()
    r = client.post("/api/datasets", files={"file": ("wide.csv", csv, "text/csv")})
    assert r.status_code == 201, r.text
    ds = r.json()
    body = {"dataset_id": ds["id"], "target_columns": ["y"]} | ISSUE_TRAINING
    r = client.post("/api/runs", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert SETTING in detail and "grid" in detail and "feature columns" in detail
    assert client.get("/api/runs").json()["runs"] == []  # nothing queued
    # what the message offers is accepted (a smaller grid, cubic splines)
    grid = int(re.search(r"lower grid to (\d+) or less", detail).group(1))
    ok = client.post("/api/runs", json=body | {"grid": grid, "steps": 1})
    assert ok.status_code == 201, ok.text
    client.post(f"/api/runs/{ok.json()['id']}/cancel")


# ── inspection ──────────────────────────────────────────────────────────────────────────────


def _vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1))


def test_inspection_rows_shrink_to_the_budget_then_refuse() -> None:
    from kan_core.model import KAN

    shape = InspectionShape.of(KAN([999, 190, 1], grid=5))
    full = estimate_inspection_bytes(shape, "prune", 2048)
    assert full > CAP_MB * MB  # what the issue ran: refused as it was
    rows = inspection_rows(shape, "prune", 2048, max_mb=CAP_MB)
    assert 64 <= rows < 2048  # sampled down, not refused
    assert estimate_inspection_bytes(shape, "prune", rows) <= CAP_MB * MB
    assert estimate_inspection_bytes(shape, "prune", rows + 1) > CAP_MB * MB
    with pytest.raises(MemoryBudgetError) as info:
        inspection_rows(shape, "auto_symbolic", 2048, max_mb=CAP_MB, what="run 1's KAN")
    assert SETTING in str(info.value) and "Prune the model first" in str(info.value)
    small = InspectionShape.of(KAN([5, 3, 1]))
    assert inspection_rows(small, "auto_symbolic", 2048, max_mb=CAP_MB) == 2048


@pytest.fixture
def wide_kan_run(sqlite_url: str, tmp_path: Any) -> tuple[Any, int]:
    """A succeeded run whose model is a 999×190 KAN ([999, 190, 1]) on 600 rows. SQLite only:
    what is measured is the API process, whichever database holds the model (both took
    66-87 s on a loaded machine)."""
    from app.db.models import ModelArtifact
    from app.db.session import Database
    from app.services.datasets import create_dataset_from_frame, load_frame
    from app.services.run_data import prepare_data
    from app.services.runs import create_run
    from kan_core.io import model_to_bytes
    from kan_core.model import KAN

    db_url = sqlite_url
    db = Database(db_url)
    with db.write() as s:
        ds = create_dataset_from_frame(s, issue_frame(), "wide")
        payload = {"dataset_id": ds.id, "target_columns": ["y"], "hidden": [190], "grid": 5}
        run, _ = create_run(s, payload, 10**7)
        data = prepare_data(load_frame(s, ds.id), ds.columns, run.config)
        weights = model_to_bytes(KAN([999, 190, 1], grid=5), data.metadata())
        s.add(ModelArtifact(run_id=run.id, weights=weights, meta=data.metadata()))
        run.status, run.has_model = "succeeded", True
        run_id = run.id
    db.dispose()
    settings = make_settings(db_url, tmp_path)
    return settings, run_id


@pytest.mark.slow
def test_inspecting_a_999x190_kan_stays_within_the_budget(wide_kan_run: Any) -> None:
    """network, edge, suggestions and prune sample rows to fit (200, and this process grows by
    less than the cap); auto-symbolic of 189,810 numeric edges in one layer cannot fit even on
    128 rows: 422."""
    from app.main import create_app

    settings, run_id = wide_kan_run
    app = create_app(settings, start_executor=False, mount_dashboard=False)
    with TestClient(app) as c:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak resident set := current
        base = _vm_kb("VmRSS")
        net = c.get(f"/api/runs/{run_id}/network")
        assert net.status_code == 200, net.text
        assert net.json()["width"] == [999, 190, 1]
        edge = c.get(f"/api/runs/{run_id}/edges/0/3/7")
        assert edge.status_code == 200, edge.text
        sug = c.get(f"/api/runs/{run_id}/edges/0/3/7/suggestions")
        assert sug.status_code == 200, sug.text
        rows = [(a["rows_used"], a["rows_total"]) for a in (net.json(), edge.json(), sug.json())]
        assert rows[1][0] < rows[1][1] == 480, rows  # the edge says it used a sample
        assert all(0 < used <= total == 480 for used, total in rows), rows
        auto = c.post(f"/api/runs/{run_id}/auto-symbolic", json={})
        assert auto.status_code == 422, auto.text
        assert SETTING in auto.json()["detail"] and "190,000 edges" in auto.json()["detail"]
        pruned = c.post(f"/api/runs/{run_id}/prune", json={"threshold": 0.0})
        assert pruned.status_code == 200, pruned.text
        grown_mb = (_vm_kb("VmHWM") - base) / 1024
    print(f"999x190 inspection: the API process grew by {grown_mb:.0f} MB")
    assert grown_mb < CAP_MB, f"the API process grew by {grown_mb:.0f} MB"


# ── a trainer that runs out of memory ───────────────────────────────────────────────────────


def test_out_of_memory_messages_name_the_setting() -> None:
    torch_error = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 3006590400 bytes. Error code 12 (Cannot allocate memory)"
    )
    message = out_of_memory_message(torch_error)
    assert message is not None and SETTING in message and "2,867 MB" in message
    assert out_of_memory_message(MemoryError()) is not None
    assert out_of_memory_message(RuntimeError("shape mismatch")) is None
    assert out_of_memory_message(ValueError("can't allocate memory")) is None
    limit = trainer_memory_limit_bytes(2048, current_bytes=400 * MB)
    assert limit == 400 * MB + 4096 * MB
    assert trainer_memory_limit_bytes(100, 0) == 1124 * MB  # at least the cap + 1 GiB


def test_the_trainer_limit_fails_a_big_allocation_cleanly_and_keeps_small_fits() -> None:
    """In a fresh interpreter (the limit stays with the process): a small KAN still trains
    under the limit; an allocation beyond it raises instead of growing the process."""
    script = textwrap.dedent(
        """
        import torch
        from app.services.memory import limit_trainer_memory, out_of_memory_message
        from kan_core.model import KAN
        from kan_core.train import FitConfig, TrainData, fit

        assert limit_trainer_memory(64) is not None
        x = torch.randn(2000, 8)
        fit(KAN([8, 4, 1]), TrainData(x, x[:, :1].sin()), FitConfig(steps=5))
        try:
            torch.ones(3_006_590_400 // 4)
        except RuntimeError as exc:
            print("REFUSED", out_of_memory_message(exc))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert "REFUSED" in out.stdout and SETTING in out.stdout, out.stdout + out.stderr


def test_a_trainer_out_of_memory_ends_the_run_failed_naming_the_setting(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.db.models import Run
    from app.db.session import Database
    from app.services import model_registry, training
    from app.services.datasets import create_dataset_from_frame
    from app.services.runs import create_run

    def allocate(job: Any) -> Any:
        raise RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 3006590400 bytes."
        )

    spec = dataclasses.replace(model_registry.MODEL_REGISTRY["kan"], train=allocate)
    monkeypatch.setitem(model_registry.MODEL_REGISTRY, "kan", spec)
    db = Database(db_url)
    with db.write() as s:
        ds = create_dataset_from_frame(s, issue_frame(60, 3), "small")
        run, _ = create_run(s, {"dataset_id": ds.id, "target_columns": ["y"]}, 10**6)
        run_id = run.id
    assert training.run_training(run_id, "test-owner", db=db) == "failed"
    with db.read() as s:
        row = s.get(Run, run_id)
        assert row is not None and row.status == "failed"
        assert SETTING in (row.error or "") and "ran out of memory" in (row.error or "")
    db.dispose()


@pytest.mark.slow
def test_a_local_trainer_over_its_limit_fails_the_run_naming_the_setting(
    db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate is wrong on purpose: the API accepts the run (budget 4096 MB), its trainer
    gets a budget of 1 MB, i.e. a limit of 1 GiB + 1 MB above what it holds at start; the
    run needs about 1.4 GB, so one allocation fails and the run ends `failed` saying so."""
    from app.config import get_settings
    from app.db.session import Database
    from app.main import create_app
    from app.services.datasets import create_dataset_from_frame

    monkeypatch.setenv(SETTING, "4096")  # what the API checks against
    get_settings.cache_clear()
    db = Database(db_url)
    with db.write() as s:
        ds_id = create_dataset_from_frame(s, issue_frame(10_000, 200), "tall").id
    db.dispose()
    settings = make_settings(db_url, tmp_path, max_run_memory_mb=1)  # what trainers get
    app = create_app(settings, mount_dashboard=False)
    try:
        with TestClient(app) as c:
            body = {"dataset_id": ds_id, "target_columns": ["y"], "hidden": [16], "grid": 30,
                    "k": 2, "steps": 3, "update_grid_every": 0}  # fmt: skip
            r = c.post("/api/runs", json=body)
            assert r.status_code == 201, r.text
            run = wait_for(c, r.json()["id"], timeout=300)
    finally:
        get_settings.cache_clear()
    assert run["status"] == "failed", run
    assert "ran out of memory" in run["error"] and SETTING in run["error"], run["error"]


def test_local_trainers_run_under_the_data_limit(client: Any, demo_csv: bytes) -> None:
    from app.services.memory import trainer_memory_limit_bytes

    ds = upload(client, demo_csv)
    body = {"dataset_id": ds["id"], "target_columns": ["HV"], "feature_columns": ["Al", "Co"],
            "hidden": [2], "grid": 3, "steps": 100_000, "update_grid_every": 0,
            "early_stopping_patience": None}  # fmt: skip
    run = client.post("/api/runs", json=body).json()
    wait_for(client, run["id"], ("running",))
    pid = client.app.state.executor.pid_of(run["id"])
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max data size"))
    soft = int(line.split()[3])
    assert soft <= trainer_memory_limit_bytes(CAP_MB, 2048 * MB), line  # finite, near the cap
    assert soft >= trainer_memory_limit_bytes(CAP_MB, 0), line
    client.post(f"/api/runs/{run['id']}/cancel")
    wait_for(client, run["id"])
