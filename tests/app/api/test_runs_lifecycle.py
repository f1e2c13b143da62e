"""Run life cycle through the API on SQLite and PostgreSQL: cancel, a killed training process,
idempotent submission, validation errors, dataset deletion rules, non-finite metrics."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.app.api_helpers import upload, wait_for

LONG = {
    "target_columns": ["HV"],
    "feature_columns": ["Al", "Co"],
    "hidden": [2],
    "grid": 3,
    "steps": 100_000,
    "update_grid_every": 0,
    "early_stopping_patience": None,  # still running when looked at (no default early stop)
}


def wait_for_metrics(client, run_id: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/api/runs/{run_id}/metrics").json()["points"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} wrote no metrics in {timeout}s")


@pytest.mark.slow
def test_cancel_running_run(client, demo_csv):
    ds = upload(client, demo_csv)
    run = client.post("/api/runs", json={"dataset_id": ds["id"], **LONG}).json()
    wait_for(client, run["id"], ("running",))
    wait_for_metrics(client, run["id"])
    r = client.post(f"/api/runs/{run['id']}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"]
    done = wait_for(client, run["id"], timeout=60)
    assert done["status"] == "cancelled"
    assert done["summary"]["stopped_reason"] == "cancelled"
    steps = [p["step"] for p in client.get(f"/api/runs/{run['id']}/metrics").json()["points"]]
    assert 0 < len(steps) < 100_000 and steps == sorted(set(steps))
    again = client.post(f"/api/runs/{run['id']}/cancel")
    assert again.status_code == 409 and "already finished" in again.json()["detail"]


def test_cancel_queued_run_never_trains(client, demo_csv):
    ds = upload(client, demo_csv)
    # fill both executor slots, then queue a third
    busy = [
        client.post("/api/runs", json={"dataset_id": ds["id"], **LONG}).json() for _ in range(2)
    ]
    queued = client.post("/api/runs", json={"dataset_id": ds["id"], **LONG}).json()
    r = client.post(f"/api/runs/{queued['id']}/cancel")
    assert r.status_code == 200
    for run in busy:
        client.post(f"/api/runs/{run['id']}/cancel")
    done = wait_for(client, queued["id"], timeout=10)
    assert done["status"] == "cancelled" and done["started_at"] is None
    for run in busy:
        assert wait_for(client, run["id"], timeout=90)["status"] in ("cancelled",)
    assert client.get(f"/api/runs/{queued['id']}/metrics").json()["points"] == []


@pytest.mark.slow
def test_killed_training_process_marks_run_failed(client, demo_csv):
    ds = upload(client, demo_csv)
    run = client.post("/api/runs", json={"dataset_id": ds["id"], **LONG}).json()
    running = wait_for(client, run["id"], ("running",))
    pid = int(running["owner"].rsplit(":pid", 1)[1])
    assert pid != os.getpid()
    # forked by the executor's forkserver (torch and the trainer imported once), not spawned
    with open(f"/proc/{pid}/status") as f:
        ppid = int(next(x for x in f if x.startswith("PPid:")).split()[1])
    with open(f"/proc/{ppid}/cmdline", "rb") as f:
        assert b"multiprocessing.forkserver" in f.read()
    os.kill(pid, signal.SIGKILL)
    failed = wait_for(client, run["id"], timeout=30)
    assert failed["status"] == "failed"
    assert "killed (SIGKILL" in failed["error"]
    # the executor keeps working for the next run
    nxt = client.post("/api/runs", json={"dataset_id": ds["id"], **LONG, "steps": 3}).json()
    assert wait_for(client, nxt["id"])["status"] == "succeeded"


@pytest.mark.slow
def test_same_idempotency_key_from_two_clients_starts_once(client, demo_csv):
    ds = upload(client, demo_csv)
    body = {"dataset_id": ds["id"], **LONG, "steps": 5}
    results: list = []

    def submit() -> None:
        results.append(client.post("/api/runs", json=body, headers={"Idempotency-Key": "abc-1"}))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201]
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 1
    run = wait_for(client, ids.pop())
    assert run["status"] == "succeeded"
    listed = client.get("/api/runs", params={"dataset_id": ds["id"]}).json()["runs"]
    assert len(listed) == 1
    steps = [p["step"] for p in client.get(f"/api/runs/{run['id']}/metrics").json()["points"]]
    assert steps == [1, 2, 3, 4, 5]  # trained once: no duplicate steps
    other = client.post("/api/runs", json=body | {"steps": 6}, headers={"Idempotency-Key": "abc-1"})
    assert other.status_code == 409 and "different configuration" in other.json()["detail"]


def test_a_retry_is_compared_on_what_it_sent_not_on_server_defaults(client, demo_csv):
    """A run created before a server upgrade changed a default (early stopping, unset, became
    patience 100 with validation rows): the client's retry with the same key and body is the
    same request, so it gets that run, not a 409. A changed value it sends is still a 409."""
    from sqlalchemy import update

    from app.db.models import Run

    ds = upload(client, demo_csv)
    body = {k: v for k, v in LONG.items() if k != "early_stopping_patience"}
    body |= {"dataset_id": ds["id"], "steps": 5}
    key = {"Idempotency-Key": "before-the-upgrade"}
    first = client.post("/api/runs", json=body, headers=key)
    assert first.status_code == 201, first.text
    assert first.json()["config"]["early_stopping_patience"] == 100  # today's derived default
    run_id = first.json()["id"]
    with client.app.state.db.write() as s:  # the row as the old server stored it
        config = dict(s.get(Run, run_id).config, early_stopping_patience=None)
        s.execute(update(Run).where(Run.id == run_id).values(config=config))
    retry = client.post("/api/runs", json=body, headers=key)
    assert retry.status_code == 200 and retry.json()["id"] == run_id, retry.text
    sent = client.post("/api/runs", json=body | {"early_stopping_patience": 100}, headers=key)
    assert sent.status_code == 409 and "different configuration" in sent.json()["detail"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"hidden": [2000]}, "hidden.0: Input should be less than or equal to 1024"),
        ({"hidden": [4] * 8}, "hidden: List should have at most 7 items"),
        ({"grid": 0}, "grid: Input should be greater than or equal to 1"),
        ({"grid": 500}, "grid: Input should be less than or equal to 200"),
        ({"k": 9}, "k: Input should be less than or equal to 5"),
        ({"steps": 10**7}, "steps: Input should be less than or equal to 100000"),
        ({"lr": -1}, "lr: Input should be greater than 0"),
        ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({"basis": "fourier"}, "basis: Input should be 'bspline'"),
        ({"task": "ranking"}, "task: Input should be 'regression' or 'classification'"),
        ({"target_columns": []}, "target_columns: List should have at least 1 item"),
        ({"feature_columns": ["HV"]}, "both feature and target"),
        ({"unknown_option": 1}, "unknown_option: Extra inputs are not permitted"),
        ({"device": "tpu"}, "device: String should match pattern"),
    ],
)
def test_run_config_bounds_are_422(client, change, fragment):
    body = {"dataset_id": 1, "target_columns": ["HV"], **change}
    r = client.post("/api/runs", json=body)
    assert r.status_code == 422
    assert fragment in r.json()["detail"], r.json()["detail"]


def test_non_finite_lr_is_422(client):
    r = client.post(
        "/api/runs",
        content=b'{"dataset_id": 1, "target_columns": ["HV"], "lr": NaN}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "lr" in r.json()["detail"]


def test_config_checked_against_dataset(client, demo_csv):
    ds = upload(client, demo_csv)
    cases = [
        ({"target_columns": ["hardness"]}, "not in the dataset"),
        ({"target_columns": ["HV"], "feature_columns": ["Phases"]}, "not numeric"),
        ({"target_columns": ["Phases"]}, "use task 'classification'"),
        ({"target_columns": ["HV"], "model": "xgboost"}, "Unknown model 'xgboost'"),
        ({"target_columns": ["HV"], "hidden": [1024, 1024, 1024]}, "parameters, more than"),
        ({"target_columns": ["HV"], "val_rows": [5000]}, "dataset " + str(ds["id"])),
    ]
    for body, fragment in cases:
        r = client.post("/api/runs", json={"dataset_id": ds["id"], **body})
        assert r.status_code == 422, (body, r.text)
        assert fragment in r.json()["detail"], (body, r.json()["detail"])
    r = client.post("/api/runs", json={"dataset_id": 999, "target_columns": ["HV"]})
    assert r.status_code == 404 and r.json() == {"detail": "Dataset 999 does not exist."}


def test_delete_dataset_rules(client, demo_csv):
    ds = upload(client, demo_csv)
    run = client.post("/api/runs", json={"dataset_id": ds["id"], **LONG, "steps": 3}).json()
    busy = client.delete(f"/api/datasets/{ds['id']}")
    assert busy.status_code == 409
    wait_for(client, run["id"])
    used = client.delete(f"/api/datasets/{ds['id']}")
    assert used.status_code == 409 and "cascade=true" in used.json()["detail"]
    gone = client.delete(f"/api/datasets/{ds['id']}", params={"cascade": "true"})
    assert gone.status_code == 204
    assert client.get(f"/api/runs/{run['id']}").status_code == 404
    assert client.get(f"/api/datasets/{ds['id']}").status_code == 404


def test_non_finite_metrics_are_null(client, settings, demo_csv):
    from app.db.models import Run, RunMetric
    from app.db.session import Database

    ds = upload(client, demo_csv)
    db = Database(settings.effective_database_url)
    with db.write() as s:
        run = Run(
            dataset_id=ds["id"],
            model="kan",
            task="regression",
            status="failed",
            config={"target_columns": ["HV"]},
            summary={"val_metric": None},
        )
        s.add(run)
        s.flush()
        s.add_all(
            [
                RunMetric(
                    run_id=run.id,
                    step=1,
                    train_loss=float("nan"),
                    val_loss=float("inf"),
                    val_metric=float("-inf"),
                    elapsed_s=0.1,
                ),
                RunMetric(
                    run_id=run.id,
                    step=2,
                    train_loss=1.5,
                    val_loss=None,
                    val_metric=0.5,
                    elapsed_s=0.2,
                ),
            ]
        )
        run_id = run.id
    db.dispose()
    r = client.get(f"/api/runs/{run_id}/metrics")
    assert r.status_code == 200
    p1, p2 = r.json()["points"]
    assert p1["train_loss"] is None and p1["val_loss"] is None and p1["val_metric"] is None
    assert p2["train_loss"] == 1.5 and p2["val_metric"] == 0.5


def test_run_list_and_delete(client, demo_csv):
    ds = upload(client, demo_csv)
    run = client.post("/api/runs", json={"dataset_id": ds["id"], **LONG, "steps": 2}).json()
    assert wait_for(client, run["id"])["status"] == "succeeded"
    listed = client.get("/api/runs", params={"status": "succeeded"}).json()["runs"]
    assert [r["id"] for r in listed] == [run["id"]]
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204
    assert client.get(f"/api/runs/{run['id']}").status_code == 404
    assert client.get(f"/api/runs/{run['id']}/metrics").status_code == 404
