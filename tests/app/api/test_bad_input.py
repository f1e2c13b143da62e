"""Bad inputs through the real HTTP API (in-process ASGI, real SQLite file, real local executor).

Every case asserts a clear 4xx answer — ``{"detail": "<what to change>"}`` — or, where the input
is merely unusual (a BOM, CRLF, NaN cells), that it is read correctly; and after every case that
nothing was lost: every dataset and run that existed before still exists with the same content,
and a refused request stored nothing. Corpus files live in ``tests/app/api/bad_inputs``; large ones
are generated here.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
MAX_UPLOAD = 2_000_000
MAX_ROWS = 20_000


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN / Infinity tokens (invalid JSON for browsers)."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Inventory:
    datasets: dict[int, tuple[str, int, int]]  # id -> (name, n_rows, n_columns)
    runs: dict[int, tuple[int, str]]  # id -> (dataset_id, status)


class Api:
    """The test client plus the nothing-lost bookkeeping."""

    def __init__(self, client: TestClient) -> None:
        self.c = client

    def inventory(self) -> Inventory:
        ds = self.c.get("/api/datasets")
        runs = self.c.get("/api/runs")
        assert ds.status_code == 200 and runs.status_code == 200
        return Inventory(
            {d["id"]: (d["name"], d["n_rows"], d["n_columns"]) for d in ds.json()},
            {r["id"]: (r["dataset_id"], r["status"]) for r in runs.json()["runs"]},
        )

    def upload(self, content: bytes, filename: str = "data.csv", **form: str) -> Any:
        return self.c.post(
            "/api/datasets", files={"file": (filename, content, "text/csv")}, data=form
        )

    def run(self, **body: Any) -> Any:
        return self.c.post("/api/runs", json=body)

    def wait(self, run_id: int, timeout: float = 90.0, until: tuple[str, ...] = ()) -> dict:
        final = until or ("succeeded", "failed", "cancelled")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.c.get(f"/api/runs/{run_id}").json()
            if run["status"] in final:
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")


def assert_refused(
    resp: Any, before: Inventory, api: Api, status: int | tuple[int, ...], *words: str
) -> str:
    """A 4xx with a JSON detail naming the problem, and nothing stored or lost."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    body = strict_json(resp.text)
    detail = body["detail"] if isinstance(body["detail"], str) else json.dumps(body["detail"])
    assert len(detail) > 15, detail
    for word in words:
        assert word.lower() in detail.lower(), (word, detail)
    after = api.inventory()
    # nothing stored, nothing lost; a run the trainers move on (queued → running → finished)
    # in the meantime is theirs, not the refused request's
    assert after.datasets == before.datasets, "a refused request changed the datasets"
    assert set(after.runs) == set(before.runs), "a refused request added or removed runs"
    assert_kept(before, after)
    return detail


STATUS_ORDER = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}


def assert_kept(before: Inventory, after: Inventory) -> None:
    """Everything in ``before`` still exists unchanged (statuses may only move forward)."""
    for ds_id, info in before.datasets.items():
        assert after.datasets.get(ds_id) == info, f"dataset {ds_id} lost or changed"
    for run_id, (ds_id, status) in before.runs.items():
        assert run_id in after.runs and after.runs[run_id][0] == ds_id, f"run {run_id} lost"
        now = after.runs[run_id][1]
        moved_on = STATUS_ORDER[now] > STATUS_ORDER[status]
        assert now == status or moved_on, f"run {run_id} went from {status} back to {now}"


# ── fixtures ────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("bad-input")
    settings = Settings(
        data_dir=data_dir,
        database_url=None,
        executor="local",
        load_demo=False,
        max_upload_bytes=MAX_UPLOAD,
        max_dataset_rows=MAX_ROWS,
        max_dataset_columns=2_000,
        max_concurrent_runs=2,
        heartbeat_interval_s=0.5,
    )
    app = create_app(settings, mount_dashboard=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client)


def make_csv(n_rows: int = 60, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n_rows, 3))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * x[:, 2]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["x1", "x2", "x3", "y", "label"])
    for k in range(n_rows):
        w.writerow([*np.round(x[k], 5), round(float(y[k]), 5), "hi" if y[k] > 0 else "lo"])
    return buf.getvalue().encode()


@pytest.fixture(scope="module")
def base(api: Api) -> dict[str, Any]:
    """A good dataset and two small runs trained at the same time (a KAN and an MLP); the
    symbolic, export and concurrency cases use them."""
    resp = api.upload(make_csv(), "good.csv", name="good")
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    ids = []
    for model in ("kan", "mlp"):
        run = api.run(dataset_id=ds["id"], target_columns=["y"], model=model, hidden=[2],
                      steps=15, grid=3)  # fmt: skip
        assert run.status_code == 201, run.text
        ids.append(run.json()["id"])
    kan, mlp = (api.wait(i) for i in ids)
    return {"dataset": ds, "run": kan, "mlp": mlp}


def good_run(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body = {"dataset_id": base["dataset"]["id"], "target_columns": ["y"], "steps": 5}
    return body | overrides


# ── CSV uploads that must be refused ─────────────────────────────────────────────────────────

REFUSED_FILES = [
    ("empty.csv", 422, ["empty"]),
    ("blank_lines.csv", 422, ["empty"]),
    ("header_only.csv", 422, ["no data rows"]),
    ("ragged_rows.csv", 422, ["expected 3 fields"]),
    ("latin1_header.csv", 422, ["utf-8"]),
    ("not_a_csv.png", 422, ["utf-8"]),
    ("nul_byte.csv", 422, ["nul"]),
    ("unclosed_quote.csv", 422, ["could not be parsed"]),
]


@pytest.mark.parametrize(
    ("name", "status", "words"), REFUSED_FILES, ids=[f[0] for f in REFUSED_FILES]
)
def test_malformed_csv_is_refused(
    api: Api, base: dict, name: str, status: int, words: list
) -> None:
    before = api.inventory()
    assert_refused(api.upload((CORPUS / name).read_bytes(), name), before, api, status, *words)


def test_duplicate_headers_are_refused(api: Api, base: dict) -> None:
    before = api.inventory()
    data = (CORPUS / "duplicate_headers.csv").read_bytes()
    assert_refused(api.upload(data, "dup.csv"), before, api, 422, "unique")


def test_semicolon_separated_file_is_split_or_refused(api: Api, base: dict) -> None:
    before = api.inventory()
    resp = api.upload((CORPUS / "semicolons.csv").read_bytes(), "semi.csv")
    if resp.status_code == 201:
        assert [c["name"] for c in resp.json()["columns"]] == ["x1", "x2", "y"]
    else:
        assert_refused(resp, before, api, 422, "separat")


def test_ten_thousand_columns_are_refused(api: Api, base: dict) -> None:
    header = ",".join(f"c{k}" for k in range(10_000))
    row = ",".join("1" for _ in range(10_000))
    before = api.inventory()
    resp = api.upload(f"{header}\n{row}\n{row}\n".encode(), "wide.csv")
    assert_refused(resp, before, api, 422, "10000 columns", "2000")


def test_file_over_the_upload_limit_is_refused_with_413(api: Api, base: dict) -> None:
    line = b"1.000000,2.000000,3.000000\n"
    data = b"a,b,c\n" + line * (MAX_UPLOAD // len(line) + 10)
    before = api.inventory()
    assert_refused(api.upload(data, "huge.csv"), before, api, 413, "limit")


def test_too_many_rows_are_refused(api: Api, base: dict) -> None:
    data = b"a,b\n" + b"1,2\n" * (MAX_ROWS + 1)
    before = api.inventory()
    assert_refused(api.upload(data, "long.csv"), before, api, 422, "rows", str(MAX_ROWS))


def test_header_with_an_empty_name_is_refused(api: Api, base: dict) -> None:
    before = api.inventory()
    assert_refused(api.upload(b"x1,,y\n1,2,3\n4,5,6\n"), before, api, 422, "name")


def test_upload_without_a_file_field_is_refused(api: Api, base: dict) -> None:
    before = api.inventory()
    resp = api.c.post("/api/datasets", data={"name": "nofile"})
    assert_refused(resp, before, api, 422, "file")


def test_json_body_instead_of_multipart_is_refused(api: Api, base: dict) -> None:
    before = api.inventory()
    resp = api.c.post("/api/datasets", json={"file": "x1,y\n1,2\n"})
    assert_refused(resp, before, api, 422, "file")


def test_overlong_dataset_name_is_refused(api: Api, base: dict) -> None:
    before = api.inventory()
    resp = api.upload(make_csv(5), "ok.csv", name="n" * 201)
    assert_refused(resp, before, api, 422, "name")


# ── unusual CSVs that must be read correctly ─────────────────────────────────────────────────


def test_utf8_bom_is_stripped_from_the_first_column_name(api: Api, base: dict) -> None:
    resp = api.upload((CORPUS / "utf8_bom.csv").read_bytes(), "bom.csv")
    assert resp.status_code == 201, resp.text
    assert [c["name"] for c in resp.json()["columns"]] == ["x1", "x2", "y"]


def test_crlf_line_endings_are_read(api: Api, base: dict) -> None:
    resp = api.upload((CORPUS / "crlf.csv").read_bytes(), "crlf.csv")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert [c["name"] for c in body["columns"]] == ["x1", "x2", "y"] and body["n_rows"] == 4
    assert all(c["kind"] == "numeric" for c in body["columns"])


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("nan_inf.csv", ["'x1'", "'x2'", "not finite", "data row 2", "data row 3"]),
        ("overflow_number.csv", ["'x1'", "not finite", "data row 1"]),
    ],
)
def test_infinite_cells_are_refused_naming_column_and_rows(
    api: Api, base: dict, name: str, words: list[str]
) -> None:
    """inf, -inf and 1e400 would be stored as values no model can use (shown as null): the
    upload is refused naming the columns and rows, and says how to mark a value missing."""
    before = api.inventory()
    assert_refused(api.upload((CORPUS / name).read_bytes(), name), before, api, 422, *words)


NAN_CELLS = b"x1,x2,y\n1,NaN,3\n,5,6\n7,,9\n2,3,nan\n1,1,2\n3,3,6\n"


def test_nan_cells_give_valid_json_and_finite_stats(api: Api, base: dict) -> None:
    resp = api.upload(NAN_CELLS, "nan.csv")
    assert resp.status_code == 201, resp.text
    body = strict_json(resp.text)  # no NaN / Infinity tokens anywhere
    for col in body["columns"]:
        assert col["kind"] == "numeric"
        for key in ("mean", "std", "min", "max"):
            assert col[key] is None or abs(col[key]) < 1e300
    preview = api.c.get(f"/api/datasets/{body['id']}/preview")
    assert preview.status_code == 200
    strict_json(preview.text)


def test_nan_rows_are_dropped_and_counted_when_training(api: Api, base: dict) -> None:
    ds = api.upload(NAN_CELLS, "nan.csv").json()
    resp = api.run(dataset_id=ds["id"], target_columns=["y"], steps=3, hidden=[1], val_fraction=0)
    assert resp.status_code == 201, resp.text
    done = api.wait(resp.json()["id"])
    # 6 rows, 4 with a missing value somewhere: 2 complete rows remain, exactly the minimum
    assert done["status"] == "succeeded", done
    assert done["summary"]["n_rows_dropped"] == 4


def test_text_in_a_numeric_column_makes_it_categorical_and_training_says_so(
    api: Api, base: dict
) -> None:
    resp = api.upload((CORPUS / "text_in_numeric.csv").read_bytes(), "text.csv")
    assert resp.status_code == 201, resp.text
    kinds = {c["name"]: c["kind"] for c in resp.json()["columns"]}
    assert kinds == {"x1": "numeric", "x2": "categorical", "y": "categorical"}
    before = api.inventory()
    run = api.run(dataset_id=resp.json()["id"], target_columns=["y"])
    assert_refused(run, before, api, 422, "not numeric", "classification")


def test_path_traversal_filename_is_never_used_as_a_path(
    api: Api, base: dict, tmp_path: Path
) -> None:
    resp = api.upload(make_csv(5), "../../../../tmp/kanscope-evil.csv")
    assert resp.status_code == 201, resp.text
    assert "/" not in resp.json()["name"] and ".." not in resp.json()["name"]
    assert not Path("/tmp/kanscope-evil.csv").exists()


def test_hostile_names_are_stored_verbatim_and_harm_nothing(api: Api, base: dict) -> None:
    before = api.inventory()
    name = "<script>alert(1)</script>'; DROP TABLE datasets; --"
    resp = api.upload(make_csv(5), "x.csv", name=name)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == name
    assert_kept(before, api.inventory())


def test_hostile_column_names_are_data_not_code(api: Api, base: dict) -> None:
    content = b"__import__('os').system('touch /tmp/kanscope-pwned'),=cmd|' /C calc'!A0,y\n"
    content += b"".join(f"{k},{k % 3},{k * 2}\n".encode() for k in range(12))
    resp = api.upload(content, "cols.csv")
    assert resp.status_code == 201, resp.text
    names = [c["name"] for c in resp.json()["columns"]]
    assert names[0] == "__import__('os').system('touch /tmp/kanscope-pwned')"
    assert not Path("/tmp/kanscope-pwned").exists()


# ── run requests that must be refused ────────────────────────────────────────────────────────

RUN_CASES: list[tuple[str, dict[str, Any], int | tuple[int, ...], list[str]]] = [
    ("negative_width", {"hidden": [-1]}, 422, ["hidden"]),
    ("zero_width", {"hidden": [4, 0]}, 422, ["hidden"]),
    ("grid_zero", {"grid": 0}, 422, ["grid"]),
    ("absurd_size", {"hidden": [1024] * 7, "grid": 200}, 422, ["parameters", "limit"]),
    ("too_deep", {"hidden": [2] * 50}, 422, ["hidden"]),
    ("absurd_steps", {"steps": 10**9}, 422, ["steps"]),
    ("lr_nan_string", {"lr": "NaN"}, 422, ["lr"]),
    ("lr_infinity", {"lr": "Infinity"}, 422, ["lr"]),
    ("lr_negative", {"lr": -0.1}, 422, ["lr"]),
    ("lamb_nan", {"lamb": "nan"}, 422, ["lamb"]),
    ("unknown_target", {"target_columns": ["nope"]}, 422, ["nope", "not in the dataset", "x1"]),
    ("categorical_target", {"target_columns": ["label"]}, 422, ["not numeric"]),
    ("feature_is_target", {"feature_columns": ["x1", "y"]}, 422, ["both feature and target"]),
    ("unknown_feature", {"feature_columns": ["ghost"]}, 422, ["ghost"]),
    ("empty_targets", {"target_columns": []}, 422, ["target_columns"]),
    ("two_targets_classification",
     {"task": "classification", "target_columns": ["label", "y"]}, 422, ["exactly one"]),
    ("unknown_dataset", {"dataset_id": 987654}, 404, ["987654"]),
    ("unknown_basis", {"basis": "fourier"}, 422, ["basis"]),
    ("unknown_model", {"model": "xgboost9000"}, 422, ["xgboost9000", "available"]),
    ("unknown_field", {"hax": 1}, 422, ["hax"]),
    ("shell_in_device", {"device": "cuda; rm -rf /"}, 422, ["device"]),
    ("batch_size_zero", {"batch_size": 0}, 422, ["batch_size"]),
    ("val_rows_out_of_range", {"val_rows": [10**6]}, 422, ["1000000", "rows"]),
    ("train_rows_without_val_rows", {"train_rows": [1, 2]}, 422, ["val_rows"]),
    ("nested_model_options", {"model_options": {"a": {"b": 1}}}, 422, ["model_options"]),
    ("dataset_id_string", {"dataset_id": "1; DROP TABLE runs"}, 422, ["dataset_id"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "overrides", "status", "words"), RUN_CASES,
                         ids=[c[0] for c in RUN_CASES])  # fmt: skip
def test_bad_run_request_is_refused(
    api: Api, base: dict, case: str, overrides: dict, status: int, words: list
) -> None:
    before = api.inventory()
    assert_refused(api.run(**good_run(base, **overrides)), before, api, status, *words)


def test_raw_json_nan_literal_is_refused(api: Api, base: dict) -> None:
    body = json.dumps(good_run(base)).replace('"steps": 5', '"steps": 5, "lr": NaN')
    before = api.inventory()
    resp = api.c.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert_refused(resp, before, api, 422, "lr")


def test_malformed_json_is_refused(api: Api, base: dict) -> None:
    before = api.inventory()
    resp = api.c.post(
        "/api/runs", content=b'{"dataset_id": 1,', headers={"content-type": "application/json"}
    )
    assert_refused(resp, before, api, 422, "json")


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/abc",
        "/api/runs/99999999999999999999999999",
        "/api/runs/-1",
        "/api/datasets/1e3",
    ],
)
def test_bad_ids_in_paths_are_4xx(api: Api, base: dict, path: str) -> None:
    resp = api.c.get(path)
    assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:300])
    assert strict_json(resp.text)["detail"]


def test_reused_idempotency_key_with_another_config_is_a_conflict(api: Api, base: dict) -> None:
    key = {"Idempotency-Key": "bad-input-key-1"}
    first = api.c.post("/api/runs", json=good_run(base, steps=2), headers=key)
    assert first.status_code == 201, first.text
    again = api.c.post("/api/runs", json=good_run(base, steps=2), headers=key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    before = api.inventory()
    other = api.c.post("/api/runs", json=good_run(base, steps=3), headers=key)
    assert_refused(other, before, api, 409, "Idempotency-Key", str(first.json()["id"]))
    api.c.post(f"/api/runs/{first.json()['id']}/cancel")


def test_dataset_without_features_is_refused_at_submission(api: Api, base: dict) -> None:
    ds = api.upload((CORPUS / "single_column.csv").read_bytes(), "one.csv").json()
    before = api.inventory()
    assert_refused(api.run(dataset_id=ds["id"], target_columns=["only"]), before, api, 422,
                   "feature")  # fmt: skip


def test_too_few_usable_rows_fail_the_run_with_a_reason(api: Api, base: dict) -> None:
    submitted = []
    for name in ("one_row.csv", "all_missing_column.csv"):
        ds = api.upload((CORPUS / name).read_bytes(), name).json()
        resp = api.run(dataset_id=ds["id"], target_columns=["y"], steps=3)
        if resp.status_code == 201:  # accepted: the trainer must fail it with a clear reason
            submitted.append(resp.json()["id"])
        else:
            assert 400 <= resp.status_code < 500 and "row" in resp.json()["detail"]
    for run_id in submitted:
        done = api.wait(run_id)
        assert done["status"] == "failed" and "at least 2" in done["error"], done


# ── symbolic / inspection requests that must be refused ──────────────────────────────────────


def test_unknown_symbolic_function_lists_the_options(api: Api, base: dict) -> None:
    run_id = base["run"]["id"]
    before = api.inventory()
    resp = api.c.post(f"/api/runs/{run_id}/edges/0/0/0/fix", json={"name": "frobnicate"})
    detail = assert_refused(resp, before, api, (404, 422), "frobnicate")
    assert "sin" in detail  # the message names what is available


def test_code_as_a_symbolic_function_name_is_refused(api: Api, base: dict) -> None:
    run_id = base["run"]["id"]
    before = api.inventory()
    for name in ["__import__('os').system('touch /tmp/kanscope-pwned2')", "sin(x); exit()",
                 "lambda x: x"]:  # fmt: skip
        resp = api.c.post(f"/api/runs/{run_id}/edges/0/0/0/fix", json={"name": name})
        assert_refused(resp, before, api, 422)  # unknown function, or too long a name
    assert not Path("/tmp/kanscope-pwned2").exists()


def test_unknown_functions_in_an_auto_symbolic_library_are_named(api: Api, base: dict) -> None:
    before = api.inventory()
    resp = api.c.post(f"/api/runs/{base['run']['id']}/auto-symbolic",
                      json={"library": ["sin", "nope_fn"]})  # fmt: skip
    assert_refused(resp, before, api, 422, "nope_fn")


@pytest.mark.parametrize("edge", ["99/0/0", "0/99/0", "0/0/99", "-1/0/0"])
def test_edge_index_out_of_range(api: Api, base: dict, edge: str) -> None:
    before = api.inventory()
    resp = api.c.get(f"/api/runs/{base['run']['id']}/edges/{edge}")
    assert_refused(resp, before, api, (404, 422), "")


def test_formula_of_an_unfinished_run_is_a_conflict(api: Api, base: dict) -> None:
    """While it trains (a cancelled run keeps the model it had, so it is asked mid-run)."""
    resp = api.run(**good_run(base, steps=100_000, early_stopping_patience=None))
    run_id = resp.json()["id"]
    try:
        api.wait(run_id, until=("running",))
        before = api.inventory()
        formula = api.c.get(f"/api/runs/{run_id}/formula")
        assert_refused(formula, before, api, 409, "no trained model yet", "running")
    finally:
        api.c.post(f"/api/runs/{run_id}/cancel")
        api.wait(run_id)


# ── concurrency ─────────────────────────────────────────────────────────────────────────────


def test_two_runs_at_once_both_train_and_keep_their_own_metrics(api: Api, base: dict) -> None:
    runs = [base["run"], base["mlp"]]  # submitted back to back, trained side by side
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], runs
    assert runs[0]["model"] == "kan" and runs[1]["model"] == "mlp"
    for run in runs:
        metrics = api.c.get(f"/api/runs/{run['id']}/metrics").json()
        steps = [p["step"] for p in metrics["points"]]
        assert metrics["run_id"] == run["id"]
        assert steps == sorted(set(steps)) and len(steps) >= 15


@pytest.mark.slow
def test_cancel_during_save_ends_in_one_consistent_state(api: Api, base: dict) -> None:
    run_id = api.run(**good_run(base, steps=10)).json()["id"]
    # poll until the last step is logged, then cancel: it races with storing the result
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        last = api.c.get(f"/api/runs/{run_id}/metrics").json()["last_step"]
        if last is not None and last >= 9:
            break
        time.sleep(0.02)
    resp = api.c.post(f"/api/runs/{run_id}/cancel")
    assert resp.status_code in (200, 409), resp.text
    done = api.wait(run_id)
    assert done["status"] in ("succeeded", "cancelled"), done
    if done["status"] == "succeeded":
        assert done["has_model"] is True
    again = api.c.post(f"/api/runs/{run_id}/cancel")
    assert again.status_code == 409 and "finished" in again.json()["detail"].lower()


@pytest.mark.slow
def test_deleting_a_dataset_used_by_a_running_run_is_refused(api: Api, base: dict) -> None:
    ds = api.upload(make_csv(40, seed=3), "busy.csv").json()
    run_id = api.run(dataset_id=ds["id"], target_columns=["y"], steps=300).json()["id"]
    api.wait(run_id, until=("running", "succeeded", "failed"))
    before = api.inventory()
    detail = assert_refused(api.c.delete(f"/api/datasets/{ds['id']}"), before, api, 409, "run")
    assert "cancel" in detail.lower()
    assert_refused(api.c.delete(f"/api/runs/{run_id}"), before, api, 409, "running")
    api.c.post(f"/api/runs/{run_id}/cancel")
    assert api.wait(run_id)["status"] in ("cancelled", "succeeded")
    before = api.inventory()
    assert_refused(api.c.delete(f"/api/datasets/{ds['id']}"), before, api, 409, "cascade")


# ── security defaults ───────────────────────────────────────────────────────────────────────


def test_api_token_is_enforced(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, executor="local", load_demo=False, api_token="s3cret-token-for-tests"
    )
    app = create_app(settings, mount_dashboard=False, start_executor=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/health").status_code == 200
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "s3cret-token-for-tests"},
        ):
            resp = client.get("/api/datasets", headers=headers)
            assert resp.status_code == 401, headers
            assert "token" in resp.json()["detail"].lower()
        ok = client.get("/api/datasets", headers={"Authorization": "Bearer s3cret-token-for-tests"})
        assert ok.status_code == 200


@pytest.mark.slow
def test_predictions_export_is_safe_for_spreadsheets(api: Api, base: dict) -> None:
    ds = api.upload((CORPUS / "formula_injection.csv").read_bytes(), "inj.csv").json()
    kinds = {c["name"]: c["kind"] for c in ds["columns"]}
    assert kinds["note"] == "categorical"
    resp = api.run(dataset_id=ds["id"], target_columns=["note"], task="classification",
                   model="mlp", hidden=[2], steps=3, val_fraction=0.5)  # fmt: skip
    assert resp.status_code == 201, resp.text
    assert api.wait(resp.json()["id"])["status"] == "succeeded"
    export = api.c.get(f"/api/runs/{resp.json()['id']}/export/predictions")
    assert export.status_code == 200
    for row in csv.reader(io.StringIO(export.text)):
        for cell in row:
            try:
                float(cell)
                continue  # numbers may start with '-'
            except ValueError:
                pass
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


def test_unknown_endpoint_and_method_answer_json(api: Api, base: dict) -> None:
    missing = api.c.get("/api/definitely/not/here")
    assert missing.status_code == 404 and "No API endpoint" in missing.json()["detail"]
    wrong = api.c.put("/api/datasets")
    assert 400 <= wrong.status_code < 500 and wrong.json()["detail"]
