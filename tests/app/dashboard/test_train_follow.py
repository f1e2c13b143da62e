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
LONG = api_client.METRICS_PAGE + 25  # more points than one answer holds


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
        ids = []
        for steps in (STEPS, LONG):
            created = http.post("/api/runs", json=body | {"steps": steps})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        for one in ids:
            assert wait_for(http, one)["status"] == "succeeded"
    run_id, long_id = ids
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
    assert "succeeded" in str(polled[5])  # and says how the run ended

    # a finished run with more points than one answer holds: the page reads on to the end
    page = api_client.METRICS_PAGE
    followed = train.follow_run(long_id, "regression", wait_s=0.0)
    assert not followed[1] and followed[0]["last_step"] == page
    assert len(followed[3].data[0].x) == page
    # the poll likewise, from the first point: a full page, then the rest
    polled = train.poll_training(2, {"id": long_id, "last_step": None, "status": "running"})
    assert not polled[3] and polled[1]["last_step"] == page
    assert len(polled[0][0]["x"][0]) == page and "succeeded" not in str(polled[5])
    polled = train.poll_training(3, polled[1])
    extend, state, stopped = polled[0], polled[1], polled[3]
    assert stopped and state["last_step"] == LONG
    assert len(extend[0]["x"][0]) == LONG - page
    assert "succeeded" in str(polled[5])
