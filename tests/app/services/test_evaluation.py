"""Grouped K-fold splits (app.services.evaluation): no shared groups, reproducible, stored."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services import alloys
from app.services.evaluation import (
    Split,
    SplitError,
    SplitSpec,
    classification_metrics,
    group_labels,
    inner_validation_split,
    make_split,
    regression_metrics,
    summarise_folds,
)

DEMO = Path(__file__).resolve().parents[3] / "app" / "demo_data"


@pytest.fixture(scope="module")
def mpea_raw() -> pd.DataFrame:
    return pd.read_csv(DEMO / "MPEA_dataset.csv")


def _assert_no_shared_groups(split: Split, groups: np.ndarray) -> None:
    for train, test in split.folds():
        assert len(test) > 0
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == split.n_rows


def test_composition_folds_never_share_an_alloy(mpea_raw):
    split = make_split(mpea_raw, SplitSpec(n_splits=5, group_by="composition", seed=3))
    keys = alloys.composition_keys(mpea_raw)
    assert split.n_groups == len(set(keys)) < len(mpea_raw)  # the same alloy appears many times
    _assert_no_shared_groups(split, keys)
    # a stricter check than "same string": formulas that differ only in writing share a fold
    by_key = pd.Series(split.fold_of_row).groupby(keys).nunique()
    assert (by_key == 1).all()


def test_composition_grouping_merges_formula_spellings():
    df = pd.DataFrame(
        {
            "formula": ["Al0.5CoCrFeNi", "Al0.5 Co1 Cr1 Fe1 Ni1", "CoCrFeNiAl0.5"]
            + [f"Fe{i}Ni" for i in range(1, 11)],
            "y": np.arange(13.0),
        }
    )
    split = make_split(df, SplitSpec(n_splits=5, seed=0))
    assert split.n_groups == 11
    assert len(set(split.fold_of_row[:3])) == 1


def test_any_column_can_be_the_group(mpea_raw):
    spec = SplitSpec(n_splits=4, group_by="IDENTIFIER: Reference ID", seed=1)
    split = make_split(mpea_raw, spec)
    _assert_no_shared_groups(split, mpea_raw[spec.group_by].astype(str).to_numpy())


def test_split_is_reproducible_from_its_seed_and_stored_form(mpea_raw):
    spec = SplitSpec(n_splits=5, seed=7)
    a = make_split(mpea_raw, spec)
    b = make_split(mpea_raw, spec)
    assert np.array_equal(a.fold_of_row, b.fold_of_row)
    assert a.fingerprint() == b.fingerprint()
    c = make_split(mpea_raw, SplitSpec(n_splits=5, seed=8))
    assert not np.array_equal(a.fold_of_row, c.fold_of_row)  # the seed matters

    stored = json.loads(json.dumps(a.to_dict()))  # what a run keeps
    restored = Split.from_dict(stored)
    assert np.array_equal(restored.fold_of_row, a.fold_of_row)
    assert restored.verify_against(mpea_raw)
    assert not restored.verify_against(mpea_raw.iloc[::-1].reset_index(drop=True))

    stored["fold_of_row"][0] = (stored["fold_of_row"][0] + 1) % 5
    with pytest.raises(SplitError, match="fingerprint"):
        Split.from_dict(stored)


def test_stratified_group_folds_balance_classes():
    df = pd.read_csv(DEMO / "hea_phase_peivaste.csv", usecols=["formula", "phase_coarse"])
    spec = SplitSpec(n_splits=5, group_by="formula", seed=0, stratify=True)
    split = make_split(df, spec, target="phase_coarse")
    _assert_no_shared_groups(split, df["formula"].to_numpy())
    overall = df["phase_coarse"].value_counts(normalize=True)
    for _, test in split.folds():
        share = df["phase_coarse"].iloc[test].value_counts(normalize=True)
        assert (share.reindex(overall.index) - overall).abs().max() < 0.05
    with pytest.raises(SplitError, match="target"):
        make_split(df, spec)


@settings(max_examples=40, deadline=None)
@given(
    groups=st.lists(st.integers(0, 12), min_size=5, max_size=60),
    n_splits=st.integers(2, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_folds_partition_rows_and_never_share_a_group(groups, n_splits, seed):
    df = pd.DataFrame({"g": groups})
    spec = SplitSpec(n_splits=n_splits, group_by="g", seed=seed)
    if len(set(groups)) < n_splits:
        with pytest.raises(SplitError, match="at least"):
            make_split(df, spec)
        return
    split = make_split(df, spec)
    assert sorted(np.concatenate([t for _, t in split.folds()]).tolist()) == list(range(len(df)))
    _assert_no_shared_groups(split, df["g"].astype(str).to_numpy())


def test_missing_group_values_form_one_group():
    df = pd.DataFrame({"g": ["a", None, "b", None, "c", "d"]})
    labels = group_labels(df, "g")
    assert labels[1] == labels[3] != labels[0]
    split = make_split(df, SplitSpec(n_splits=2, group_by="g"))
    assert split.fold_of_row[1] == split.fold_of_row[3]


def test_user_errors_are_clear():
    df = pd.DataFrame({"formula": ["CoCrFeNi", "AlCoCrFeNi"] * 5, "y": range(10)})
    with pytest.raises(SplitError, match="needs at least 5 distinct groups.*has 2"):
        make_split(df, SplitSpec(n_splits=5))
    with pytest.raises(SplitError, match="no such column"):
        make_split(df, SplitSpec(group_by="lab"))
    with pytest.raises(SplitError, match="n_splits"):
        make_split(df, SplitSpec(n_splits=1))
    with pytest.raises(SplitError, match="Unknown split option"):
        SplitSpec.from_dict({"folds": 5})
    plain = make_split(df, SplitSpec(n_splits=5, group_by=None, seed=0))
    assert plain.n_groups == 10


def test_inner_validation_split_is_grouped():
    groups = np.repeat(np.arange(20), 3).astype(str)
    train = np.arange(45)
    fit_rows, val_rows = inner_validation_split(train, groups, fraction=0.2, seed=0)
    assert len(val_rows) > 0 and len(fit_rows) + len(val_rows) == 45
    assert not set(groups[fit_rows]) & set(groups[val_rows])
    again = inner_validation_split(train, groups, fraction=0.2, seed=0)
    assert np.array_equal(again[1], val_rows)


def test_metrics_and_summary():
    m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["r2"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(1 / 3))
    c = classification_metrics(["a", "b", "b", "c"], ["a", "b", "c", "c"])
    assert c["accuracy"] == 0.75
    assert c["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    s = summarise_folds([{"r2": 0.5, "mae": 1.0}, {"r2": 0.7, "mae": math.nan}])
    assert s["r2"]["mean"] == pytest.approx(0.6) and s["r2"]["std"] == pytest.approx(0.1)
    assert s["mae"]["mean"] == 1.0
