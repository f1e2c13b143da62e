"""POST /runs defaults and the run detail's queue position (issue #22).

Early stopping is on by default for a KAN or MLP with validation rows; a client that sends
``early_stopping_patience: null`` (or has no validation rows) trains every step as before. A
queued run says where it stands in the queue.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.api.schemas import DEFAULT_PATIENCE, RunCreate
from app.db.models import Run
from app.services.runs import edited_runs, queue_position
from tests.app.services.test_claims_and_reaper import db, make_run  # noqa: F401  (the db fixture)

BASE = {"dataset_id": 1, "target_columns": ["y"]}


@pytest.mark.parametrize(
    ("extra", "patience"),
    [
        ({}, DEFAULT_PATIENCE),  # validation rows (val_fraction 0.2): on
        ({"model": "mlp"}, DEFAULT_PATIENCE),
        ({"early_stopping_patience": None}, None),  # an old client's explicit "off"
        ({"early_stopping_patience": 7}, 7),
        ({"val_fraction": 0.0}, None),  # nothing to stop on
        ({"val_rows": [], "train_rows": [0, 1]}, None),
        ({"val_rows": [2], "train_rows": [0, 1]}, DEFAULT_PATIENCE),
        ({"model": "ridge"}, None),  # kinds that do not stop early carry no patience
    ],
)
def test_early_stopping_default(extra: dict, patience: int | None) -> None:
    body = RunCreate.model_validate(BASE | extra).model_dump()
    assert body["early_stopping_patience"] == patience


def test_patience_bounds_still_apply() -> None:
    with pytest.raises(ValidationError, match="early_stopping_patience"):
        RunCreate.model_validate(BASE | {"early_stopping_patience": 0})


def test_queue_position_counts_the_queued_runs_ahead(db) -> None:  # noqa: F811
    first, running, second = make_run(db), make_run(db, "running"), make_run(db)
    third = make_run(db)
    with db.read() as s:
        positions = [queue_position(s, s.get(Run, i)) for i in (first, running, second, third)]
        assert edited_runs(s, [first, second]) == set()  # no model at all: not edited
    assert positions == [1, None, 2, 3]
    with db.write() as s:
        s.get(Run, first).status = "cancelled"
    with db.read() as s:
        assert queue_position(s, s.get(Run, third)) == 2
