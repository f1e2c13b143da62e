"""Strict input (issue #20 item 5): every input that used to be accepted and then failed later,
stored something wrong or changed a column's type silently is refused with a 4xx that names the
field (and, for a CSV, the column and rows), the same on SQLite and PostgreSQL, and a refused
request stores nothing.

The app runs in-process on both databases (``db_url``) with its local executor: a refused
request stores no run, so none trains; an accepted one trains for real.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.services.datasets import MAX_CELL_CHARS
from tests.app.api_helpers import wait_for


class Api:
    def __init__(self, client: TestClient) -> None:
        self.c = client

    def stored(self) -> tuple[list[Any], list[Any]]:
        datasets = self.c.get("/api/datasets")
        runs = self.c.get("/api/runs")
        assert datasets.status_code == 200 and runs.status_code == 200
        return datasets.json(), runs.json()["runs"]

    def upload(self, content: bytes, filename: str = "data.csv", **form: str) -> Any:
        return self.c.post(
            "/api/datasets", files={"file": (filename, content, "text/csv")}, data=form
        )

    def refused(self, resp: Any, status: int | tuple[int, ...], *words: str) -> str:
        """A 4xx JSON answer whose detail holds ``words`` (case-insensitive)."""
        statuses = (status,) if isinstance(status, int) else status
        assert resp.status_code in statuses, (resp.status_code, resp.text[:600])
        detail = resp.json()["detail"]
        detail = detail if isinstance(detail, str) else json.dumps(detail)
        for word in words:
            assert word.lower() in detail.lower(), (word, detail)
        return detail


@pytest.fixture
def api(client: TestClient) -> Api:
    """The app with its local executor (conftest's ``client``, on both databases)."""
    return Api(client)


def good_csv(n_rows: int = 30) -> bytes:
    lines = ["x1,x2,y,label"]
    lines += [f"{k},{(k * 7) % 11},{k * 0.5 + 1},{'a' if k % 2 else 'b'}" for k in range(n_rows)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def dataset(api: Api) -> dict[str, Any]:
    resp = api.upload(good_csv(), "good.csv", name="good")
    assert resp.status_code == 201, resp.text
    return resp.json()


def run_body(dataset: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"dataset_id": dataset["id"], "target_columns": ["y"], "steps": 5} | overrides


# ── text fields: control characters, both databases ─────────────────────────────────────────

BAD_NAMES = [
    ("nul", "bad\x00name", ["U+0000", "control character"]),
    ("escape", "red\x1b[31m", ["U+001B", "control character"]),
    ("newline", "two\nlines", ["U+000A", "control character"]),
    ("c1_control", "x\x85y", ["U+0085", "control character"]),
    ("bidi_override", "invoice\u202etxt.exe", ["U+202E", "right-to-left override"]),
    ("lone_surrogate", "half\ud800", ["valid string"]),  # pydantic refuses it itself
]


@pytest.mark.parametrize(("case", "name", "words"), BAD_NAMES, ids=[b[0] for b in BAD_NAMES])
def test_a_run_name_with_a_control_character_is_a_422(
    api: Api, dataset: dict, case: str, name: str, words: list[str]
) -> None:
    before = api.stored()
    body = json.dumps(run_body(dataset, name=name))  # ASCII JSON: "\ud800" as an escape
    resp = api.c.post("/api/runs", content=body, headers={"content-type": "application/json"})
    api.refused(resp, 422, "name", *words)
    assert api.stored() == before


@pytest.mark.parametrize("case", ["nul", "escape", "bidi_override"])
def test_a_dataset_name_with_a_control_character_is_a_422(api: Api, case: str) -> None:
    name, words = {b[0]: (b[1], b[2]) for b in BAD_NAMES}[case]
    before = api.stored()
    api.refused(api.upload(good_csv(), name=name), 422, "name", *words)
    assert api.stored() == before


def test_control_characters_in_other_stored_text_are_refused(api: Api, dataset: dict) -> None:
    """Column names, model_options text, retrain/discovery names, leaderboard and featurise
    names: the same check everywhere text is stored or looked up."""
    cases = [
        ("/api/runs", run_body(dataset, target_columns=["y\x00"]), "target_columns"),
        ("/api/runs", run_body(dataset, feature_columns=["x1", "x2\x07"]), "feature_columns"),
        ("/api/runs", run_body(dataset, model="linear", model_options={"a\x00": 1}), "model"),
        ("/api/runs/1/retrain", {"name": "again\x00"}, "name"),
        ("/api/runs/1/discover", {"name": "formula\x00"}, "name"),
        ("/api/runs/1/edges/0/0/0/fix", {"name": "sin\x00"}, "name"),
        ("/api/runs/1/auto-symbolic", {"library": ["x\x00"]}, "library"),
        (f"/api/datasets/{dataset['id']}/featurise", {"name": "v2\x00"}, "name"),
        (
            f"/api/datasets/{dataset['id']}/leaderboards",
            {"target_columns": ["y"], "models": [{"name": "kan\x00", "kind": "kan"}]},
            "name",
        ),
    ]
    before = api.stored()
    for path, body, field in cases:
        api.refused(api.c.post(path, json=body), 422, field, "control character")
    assert api.stored() == before


def test_a_csv_header_with_a_control_character_is_refused(api: Api) -> None:
    before = api.stored()
    resp = api.upload(b"x1,x\x1b2,y\n1,2,3\n4,5,6\n")
    api.refused(resp, 422, "column 2", "U+001B")
    assert api.stored() == before


# ── strict JSON types ───────────────────────────────────────────────────────────────────────

STRICT_CASES = [
    ("steps_string", {"steps": "5"}, "steps"),
    ("steps_true", {"steps": True}, "steps"),
    ("steps_float", {"steps": 5.0}, "steps"),
    ("seed_string", {"seed": "0"}, "seed"),
    ("hidden_strings", {"hidden": ["4"]}, "hidden"),
    ("dataset_id_string", {"dataset_id": "1"}, "dataset_id"),
    ("lr_string", {"lr": "0.01"}, "lr"),
    ("lr_true", {"lr": True}, "lr"),
    ("target_not_a_list", {"target_columns": "y"}, "target_columns"),
    ("target_number", {"target_columns": [3]}, "target_columns"),
    ("batch_size_false", {"batch_size": False}, "batch_size"),
]


@pytest.mark.parametrize(("case", "overrides", "field"), STRICT_CASES,
                         ids=[c[0] for c in STRICT_CASES])  # fmt: skip
def test_run_fields_take_only_their_json_type(
    api: Api, dataset: dict, case: str, overrides: dict, field: str
) -> None:
    before = api.stored()
    resp = api.c.post("/api/runs", json=run_body(dataset, **overrides))
    api.refused(resp, 422, field, "must be")
    assert api.stored() == before


def test_an_integer_for_a_float_field_is_still_accepted(api: Api, dataset: dict) -> None:
    resp = api.c.post("/api/runs", json=run_body(dataset, lr=1, val_fraction=0, lamb=0))
    assert resp.status_code == 201, resp.text
    assert resp.json()["config"]["lr"] == 1.0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/runs/1/retrain", {"steps": "5"}, "steps"),
        ("/api/runs/1/retrain", {"steps": True}, "steps"),
        ("/api/runs/1/prune", {"threshold": "0.1"}, "threshold"),
        ("/api/runs/1/auto-symbolic", {"r2_threshold": True}, "r2_threshold"),
        ("/api/runs/1/discover", {"budget_s": "30"}, "budget_s"),
        ("/api/datasets/1/leaderboards", {"target_columns": ["y"], "split": {"n_splits": "3"}},
         "n_splits"),
    ],
)  # fmt: skip
def test_other_request_bodies_are_strict_too(api: Api, path: str, body: dict, field: str) -> None:
    api.refused(api.c.post(path, json=body), 422, field, "must be")


# ── model_options per model kind, checked at creation ───────────────────────────────────────

OPTION_CASES = [
    ("alpha_negative", "linear", {"alpha": -1}, ["alpha", "from 0"]),
    ("n_estimators_huge", "random_forest", {"n_estimators": 1e9}, ["n_estimators", "2000"]),
    ("n_estimators_fraction", "random_forest", {"n_estimators": 10.5}, ["n_estimators"]),
    ("learning_rate_text", "gradient_boosting", {"learning_rate": "fast"}, ["learning_rate"]),
    ("unknown_key", "gradient_boosting", {"depth": 3},
     ["unknown", "depth", "allowed", "max_iter", "learning_rate"]),
    ("unknown_key_linear", "linear", {"alpah": 1.0}, ["alpah", "allowed", "alpha"]),
    ("bool_as_number", "random_forest", {"min_samples_leaf": True}, ["min_samples_leaf"]),
    ("options_for_kan", "kan", {"alpha": 1.0}, ["kan", "ensemble's model_options", "alpha"]),
    ("options_for_mlp", "mlp", {"grid": 5}, ["mlp", "no model_options"]),
    ("discover_budget", "discover", {"budget_s": 10**6}, ["budget_s"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "model", "options", "words"), OPTION_CASES,
                         ids=[c[0] for c in OPTION_CASES])  # fmt: skip
def test_bad_model_options_are_refused_when_the_run_is_created(
    api: Api, dataset: dict, case: str, model: str, options: dict, words: list
) -> None:
    before = api.stored()
    resp = api.c.post("/api/runs", json=run_body(dataset, model=model, model_options=options))
    api.refused(resp, 422, *words)
    assert api.stored() == before


def test_good_model_options_are_accepted(api: Api, dataset: dict) -> None:
    options = {"n_estimators": 50, "max_features": "sqrt", "min_samples_leaf": 2}
    resp = api.c.post(
        "/api/runs", json=run_body(dataset, model="random_forest", model_options=options)
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["config"]["model_options"] == options
    done = wait_for(api.c, resp.json()["id"])  # the trainer takes the options as given
    assert done["status"] == "succeeded", done


# ── size caps on list fields ────────────────────────────────────────────────────────────────


def test_val_rows_over_the_cap_are_refused(api: Api, dataset: dict) -> None:
    from app.api.schemas import MAX_ROW_INDICES

    before = api.stored()
    resp = api.c.post("/api/runs", json=run_body(dataset, val_rows=[0] * (MAX_ROW_INDICES + 1)))
    api.refused(resp, 422, "val_rows", f"at most {MAX_ROW_INDICES}")
    resp = api.c.post(
        "/api/runs",
        json=run_body(dataset, val_rows=[0], train_rows=[1] * (MAX_ROW_INDICES + 1)),
    )
    api.refused(resp, 422, "train_rows", f"at most {MAX_ROW_INDICES}")
    assert api.stored() == before


def test_val_rows_with_1_3_million_entries_never_reach_the_database(
    api: Api, dataset: dict
) -> None:
    """The issue's case: refused by the body limit (413) or the list cap (422), never stored."""
    before = api.stored()
    body = json.dumps(run_body(dataset, val_rows=[1] * 1_300_000), separators=(",", ":"))
    resp = api.c.post("/api/runs", content=body, headers={"content-type": "application/json"})
    api.refused(resp, (413, 422))
    assert api.stored() == before


# ── device ──────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_a_device_no_worker_has_is_refused(
    api: Api, dataset: dict, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = api.stored()
    resp = api.c.post("/api/runs", json=run_body(dataset, device=device))
    api.refused(resp, 422, device, "not available", "cpu")
    assert api.stored() == before


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cpu_and_auto_are_always_accepted(api: Api, dataset: dict, device: str) -> None:
    resp = api.c.post("/api/runs", json=run_body(dataset, device=device))
    assert resp.status_code == 201, resp.text


def test_celery_workers_announce_their_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from app.config import get_settings
    from app.services.devices import available_devices, check_device
    from app.services.errors import InvalidInputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_devices("local", "cpu,cuda") == {"cpu"}  # the local executor: this host
    assert available_devices("celery", "") == {"cpu"}  # unset: workers like this host
    assert available_devices("celery", "CPU, cuda") == {"cpu", "cuda"}
    monkeypatch.setenv("KANSCOPE_EXECUTOR", "celery")
    monkeypatch.setenv("KANSCOPE_WORKER_DEVICES", "cpu,cuda")
    get_settings.cache_clear()
    try:
        check_device("cuda")
        check_device("cuda:1")  # "cuda" covers every GPU index on the workers
        monkeypatch.setenv("KANSCOPE_WORKER_DEVICES", "cpu")
        get_settings.cache_clear()
        with pytest.raises(InvalidInputError, match="KANSCOPE_WORKER_DEVICES"):
            check_device("cuda")
    finally:
        get_settings.cache_clear()


# ── uploads: one file part, safe file names ─────────────────────────────────────────────────


def test_two_file_parts_are_refused(api: Api) -> None:
    before = api.stored()
    files = [
        ("file", ("a.csv", good_csv(), "text/csv")),
        ("file", ("b.csv", good_csv(5), "text/csv")),
    ]
    api.refused(api.c.post("/api/datasets", files=files), 422, "2 file parts", "exactly one")
    files = [
        ("file", ("a.csv", good_csv(), "text/csv")),
        ("extra", ("b.csv", b"q\n1\n", "text/csv")),
    ]
    api.refused(api.c.post("/api/datasets", files=files), 422, "2 file parts")
    assert api.stored() == before


def test_repeated_and_unknown_form_fields_are_refused(api: Api) -> None:
    before = api.stored()
    file = {"file": ("a.csv", good_csv(), "text/csv")}
    resp = api.c.post("/api/datasets", files=file, data={"name": ["one", "two"]})
    api.refused(resp, 422, "name", "more than once")
    resp = api.c.post("/api/datasets", files=file, data={"name": "ok", "owner": "me"})
    api.refused(resp, 422, "owner", "unknown")
    resp = api.c.post("/api/datasets", files={"name": ("a.csv", good_csv(), "text/csv")})
    api.refused(resp, 422, "'file'")
    assert api.stored() == before


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../etc/passwd.csv", "passwd.csv"),
        ("..\\..\\windows\\system.ini.csv", "system.ini.csv"),
        ("/abs/path/data.csv", "data.csv"),
        ("re\x1bpo\x7frt\x85.csv", "report.csv"),
        ("\u202ecod.csv", "cod.csv"),
        ("..", None),
    ],
)
def test_the_stored_file_name_is_a_safe_base_name(
    api: Api, filename: str, expected: str | None
) -> None:
    resp = api.upload(good_csv(5), filename)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["filename"] == expected
    assert "/" not in body["name"] and "\\" not in body["name"] and "\x00" not in body["name"]


def test_a_nul_in_a_raw_multipart_file_name_is_removed(api: Api) -> None:
    boundary = "strictinputboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="../x\x00y.csv"\r\nContent-Type: text/csv\r\n\r\n'
        ).encode()
        + good_csv(5)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    resp = api.c.post(
        "/api/datasets",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["filename"] == "xy.csv" and resp.json()["name"] == "xy"


def test_a_long_file_name_is_cut_to_255_characters_keeping_the_extension(api: Api) -> None:
    resp = api.upload(good_csv(5), "d" * 400 + ".csv")
    assert resp.status_code == 201, resp.text
    filename = resp.json()["filename"]
    assert len(filename) == 255 and filename.endswith(".csv")
    assert len(resp.json()["name"]) <= 200


# ── CSV cells: size cap, non-finite and locale-formatted numbers ────────────────────────────


def test_a_5_mb_cell_is_refused_naming_its_row_and_column(api: Api) -> None:
    before = api.stored()
    content = b"x,notes,y\n1,short,2\n3," + b"z" * 5_000_000 + b",4\n5,ok,6\n"
    detail = api.refused(
        api.upload(content), 422, "'notes'", "data row 2", "5,000,000", f"{MAX_CELL_CHARS:,}"
    )
    assert len(detail) < 500  # the cell itself is not echoed back
    assert api.stored() == before


def test_a_cell_at_the_cap_is_kept(api: Api) -> None:
    content = b"x,notes,y\n1," + b"z" * MAX_CELL_CHARS + b",2\n3,b,4\n"
    assert api.upload(content).status_code == 201


NUMBER_CASES = [
    ("inf", "inf"),
    ("-inf", "-inf"),
    ("1e400", "inf"),
    ("∞", "∞"),
    ("-Infinity", "-inf"),
    ('"1,000"', "1,000"),
    ("1 000", "1 000"),
    ("1\u00a0000", "1\\xa0000"),
    ("1'000.5", "1'000.5"),
]


@pytest.mark.parametrize(("cell", "shown"), NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_non_finite_and_locale_formatted_numbers_are_refused_naming_column_and_rows(
    api: Api, cell: str, shown: str
) -> None:
    """Never a silent type change: the column would have turned into text (or the value into
    null); instead a 422 names the column, the rows and the first such value."""
    lines = ["x,pressure,y"] + [f"{k},{k * 10},{k}" for k in range(6)]
    lines[3] = f"2,{cell},2"  # data row 3
    lines[6] = f"5,{cell},5"  # data row 6
    before = api.stored()
    detail = api.refused(
        api.upload(("\n".join(lines) + "\n").encode()), 422, "'pressure'", "data rows 3 and 6"
    )
    assert shown in detail, detail
    assert api.stored() == before


def test_missing_values_and_plain_text_are_still_read(api: Api) -> None:
    """NaN / empty cells are missing values; a column with real text in it is categorical (a
    word like 'inf' in it is text too); a ';' file's decimal commas are numbers."""
    resp = api.upload(b"x,y,z\n1,NaN,a\n2,,inf\n3,4.5,c\n")
    assert resp.status_code == 201, resp.text
    kinds = {c["name"]: (c["kind"], c["n_missing"]) for c in resp.json()["columns"]}
    assert kinds == {"x": ("numeric", 0), "y": ("numeric", 2), "z": ("categorical", 0)}
    resp = api.upload(b"a;b\n1,5;2\n2,25;3\n")
    assert resp.status_code == 201, resp.text
    assert [c["mean"] for c in resp.json()["columns"]] == [1.875, 2.5]
    resp = api.upload(b'pair,y\n"3,4",1\n"5,6",2\n')  # decimal commas alone: text (pairs)
    assert resp.status_code == 201 and resp.json()["columns"][0]["kind"] == "categorical"
