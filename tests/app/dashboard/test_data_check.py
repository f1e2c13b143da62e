"""The data check behind the Datasets page: defaults on the raw MPEA table (Borg 2020, 1,545 ×
23, in ``app/demo_data`` with its provenance), readable headers, and the row count a run keeps
after dropping missing values (``POST /api/datasets/{id}/row-check``, real database)."""

from __future__ import annotations

import pytest

from app.dashboard.data_check import (
    default_features,
    default_target,
    plural,
    readable_name,
    row_check_text,
    untick_advice,
)
from tests.app.api_helpers import REPO, upload

MPEA_RAW = REPO / "app" / "demo_data" / "MPEA_dataset.csv"
HV = "PROPERTY: HV"


@pytest.fixture(scope="module")
def mpea_stats() -> tuple[list[dict], int]:
    from app.services.datasets import column_stats, parse_csv

    frame = parse_csv(MPEA_RAW.read_bytes(), 100_000, 1000)
    return column_stats(frame), len(frame)


def test_raw_mpea_defaults_pick_hardness_and_leave_out_ids_empty_and_other_properties(
    mpea_stats,
):
    stats, n_rows = mpea_stats
    assert n_rows == 1545
    target = default_target(stats, n_rows)
    assert target == HV  # not "REFERENCE: year", the last numeric column
    features, reasons = default_features(stats, target, n_rows)
    assert features == [
        "PROPERTY: Calculated Density (g/cm$^3$)",
        "PROPERTY: Test temperature ($^\\circ$C)",
    ]
    assert reasons["IDENTIFIER: Reference ID"] == "identifier, year or reference"
    assert reasons["REFERENCE: year"] == "identifier, year or reference"
    assert reasons["PROPERTY: C content (wppm)"] == "empty in 1,541 of 1,545 rows"
    assert reasons["PROPERTY: YS (MPa)"].startswith("another measured property")
    assert HV not in reasons


def test_default_target_without_names_is_the_last_numeric_non_identifier_column():
    stats = [
        {"name": "x", "kind": "numeric", "dtype": "float64"},
        {"name": "strength", "kind": "numeric", "dtype": "float64"},
        {"name": "year", "kind": "numeric", "dtype": "int64"},
    ]
    assert default_target(stats, 100) == "strength"
    # the element Y is not the target "y"; a "PROPERTY: HV" counts as "HV"
    elements = [{"name": n, "kind": "numeric"} for n in ("Al", "Y", "VEC")]
    assert default_target(elements) == "VEC"
    assert default_features(elements, "VEC", 50) == (["Al", "Y"], {})


def test_headers_read_as_text_and_counts_agree_with_their_nouns():
    assert readable_name("PROPERTY: grain size ($\\mu$m)") == "PROPERTY: grain size (μm)"
    assert readable_name("PROPERTY: Exp. Density (g/cm$^3$)") == "PROPERTY: Exp. Density (g/cm³)"
    assert readable_name("PROPERTY: Test temperature ($^\\circ$C)") == (
        "PROPERTY: Test temperature (°C)"
    )
    assert readable_name("H$_2$O") == "H₂O"
    assert readable_name("PROPERTY: HV") == "PROPERTY: HV"
    assert plural(1, "row") == "1 row" and plural(0, "row") == "0 rows"
    assert plural(1545, "column") == "1,545 columns"


REPORT_ALL_GONE = {
    "n_rows": 1545,
    "n_complete": 0,
    "n_dropped": 1545,
    "columns": [
        {"name": HV, "role": "target", "n_missing": 1015, "n_complete_without": 4},
        {"name": "PROPERTY: C content (wppm)", "role": "feature", "n_missing": 1541,
         "n_complete_without": 212},
        {"name": "PROPERTY: YS (MPa)", "role": "feature", "n_missing": 478,
         "n_complete_without": 0},
    ],
}  # fmt: skip


def test_a_run_that_keeps_too_few_rows_is_refused_naming_what_to_untick():
    assert untick_advice(REPORT_ALL_GONE) == [("PROPERTY: C content (wppm)", 1541, 212)]
    kind, text = row_check_text(REPORT_ALL_GONE)
    assert kind == "danger"
    assert text.startswith("0 rows of 1,545 will be used: 1,545 rows dropped for missing values")
    assert "PROPERTY: C content (wppm) (1,541 missing)" in text
    assert "Untick: without PROPERTY: C content (wppm) 212 rows remain." in text
    kind, text = row_check_text({**REPORT_ALL_GONE, "n_complete": 1, "n_dropped": 1544})
    assert kind == "danger" and text.startswith("1 row of 1,545 will be used")
    kind, text = row_check_text({"n_rows": 1, "n_complete": 1, "n_dropped": 0, "columns": []}, 1)
    assert (kind, text) == ("success", "Every row is complete: 1 row will be used.")


@pytest.mark.slow
def test_row_check_counts_the_rows_training_would_drop(client):
    ds = upload(client, MPEA_RAW.read_bytes(), "MPEA_dataset.csv")
    body = {
        "target_columns": [HV],
        "feature_columns": [
            "PROPERTY: C content (wppm)",
            "PROPERTY: Calculated Density (g/cm$^3$)",
        ],
    }
    report = client.post(f"/api/datasets/{ds['id']}/row-check", json=body).json()
    assert report["n_rows"] == 1545 and report["n_complete"] == 1 and report["n_dropped"] == 1544
    by_name = {c["name"]: c for c in report["columns"]}
    assert by_name[HV]["n_missing"] == 1015 and by_name[HV]["role"] == "target"
    assert by_name["PROPERTY: C content (wppm)"]["n_missing"] == 1541
    assert by_name["PROPERTY: C content (wppm)"]["n_complete_without"] == 530  # rows with HV
    unknown = client.post(f"/api/datasets/{ds['id']}/row-check", json={"target_columns": ["nope"]})
    assert unknown.status_code == 422 and "nope" in unknown.json()["detail"]
