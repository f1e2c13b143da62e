"""The Train page follows a run by reading its status before its metric rows — in its first
answer (``follow_run``, after Start or a reload) and in every poll (``poll_training``): a status
read first that says the run has finished means every row is stored, so the answer that sees
it finished draws the whole curve and stops. Read the other way round, a fast run that
finished between the two requests stopped the page with the rows read before (one point of a
3-fold run's curve: an e2e test caught it under load). Against a real API server."""

from __future__ import annotations

from typing import Any

import httpx

from app.dashboard import api_client, create_dash_app
from tests.app.api_helpers import wait_for

STEPS = 12


def test_the_train_page_reads_a_runs_status_before_its_rows(
    live_server_factory: Any, demo_csv: bytes
) -> None:
    server = live_server_factory()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        up = http.post("/api/datasets", files={"file": ("demo.csv", demo_csv, "text/csv")})
        assert up.status_code == 201, up.text
        body = {"dataset_id": up.json()["id"], "target_columns": ["HV"],
                "feature_columns": ["Al", "Ni"], "hidden": [2], "steps": STEPS,
                "early_stopping_patience": None}  # fmt: skip
        created = http.post("/api/runs", json=body)
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        assert wait_for(http, run_id)["status"] == "succeeded"
    create_dash_app(f"{server.url}/api")  # pages register with an app; it configures the client
    from app.dashboard.pages import train

    asked: list[str] = []
    api_client._get_client().event_hooks["request"].append(
        lambda request: asked.append(request.url.path)
    )
    followed = train.follow_run(run_id, "regression", wait_s=0.0)
    polled = train.poll_training(1, {"id": run_id, "last_step": None, "status": "running"})
    run, rows = f"/api/runs/{run_id}", f"/api/runs/{run_id}/metrics"
    assert asked == [run, rows, run, rows]
    # either answer, seeing the run finished, has its whole curve and stops the polls
    state, stopped, figure = followed[0], followed[1], followed[3]
    assert stopped and state["status"] == "succeeded" and state["last_step"] == STEPS
    assert len(figure.data[0].x) == STEPS
    extend, state, stopped = polled[0], polled[1], polled[3]
    assert stopped and state["last_step"] == STEPS
    assert len(extend[0]["x"][0]) == STEPS
