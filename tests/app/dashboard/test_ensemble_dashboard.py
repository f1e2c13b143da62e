"""The dashboard's ensemble helpers (pure): the Train form's model_options, the parity plot's
interval, the run page's sentences."""

from __future__ import annotations

import re

import pytest

from app.dashboard.ensemble_figures import ensemble_summary_text, interval_of, interval_trace
from app.dashboard.ensemble_form import with_ensemble

KAN = {"model": "kan", "target_columns": ["y"]}


def test_train_form_asks_for_an_ensemble_only_when_members_exceed_one():
    assert with_ensemble(KAN, 1, "rows", None, "holdout") == KAN
    body = with_ensemble(KAN, 8.0, "groups", "alloy", "holdout")
    assert body["model_options"] == {
        "ensemble_members": 8, "ensemble_bootstrap": "groups", "group_column": "alloy",
    }  # fmt: skip
    for args, words in [
        ((KAN, 40, "none", None, "holdout"), "1 (no ensemble) to 32"),
        ((KAN, 4, "groups", None, "holdout"), "group column"),
        ((KAN | {"model": "mlp"}, 4, "none", None, "holdout"), "KAN runs"),
        ((KAN, 4, "none", None, "kfold"), "hold-out"),
    ]:
        with pytest.raises(ValueError, match=re.escape(words)):
            with_ensemble(*args)


def test_parity_interval_becomes_asymmetric_error_bars():
    predictions = {
        "y_true": [[1.0], [2.0]], "y_mean": [[1.1], [1.8]],
        "lower": [[0.9], [1.0]], "upper": [[1.5], [2.0]], "level": 0.9,
    }  # fmt: skip
    trace = interval_trace(interval_of(predictions))
    assert list(trace.error_y.array) == pytest.approx([0.4, 0.2])
    assert list(trace.error_y.arrayminus) == pytest.approx([0.2, 0.8])
    assert interval_of({"y_true": [[1.0]], "lower": None, "level": None}) is None


def test_run_page_says_which_model_it_shows_and_the_measured_coverage():
    summary = {
        "ensemble": {
            "members": 8, "bootstrap": "rows", "level": 0.9, "main_model": "member 0 (seed 3)",
            "validation": {"coverage": 0.875, "n_rows": 40, "mean_width": [12.5]}, "notes": [],
        }
    }  # fmt: skip
    text = " ".join(ensemble_summary_text(summary))
    assert "member 0 (seed 3)" in text and "87.5 % of the 40 validation rows" in text
    assert "12.5" in text
    assert ensemble_summary_text({}) == []


def test_an_edited_runs_interval_and_band_are_labelled_as_the_trained_models():
    from app.dashboard.ensemble_figures import band_traces

    predictions = {
        "y_true": [[1.0]], "y_mean": [[1.1]], "lower": [[0.9]], "upper": [[1.5]], "level": 0.9,
    }  # fmt: skip
    assert "before the edits" not in interval_trace(interval_of(predictions)).name
    edited = interval_of(predictions | {"interval_current": False})
    assert "trained members, before the edits" in interval_trace(edited).name
    band = {"members": 3, "level": 0.9, "x": [0.0], "lower": [0.0], "upper": [1.0]}
    assert "before the edits" not in band_traces(band, None)[1].name
    assert "before the edits" in band_traces(band | {"note": "edited"}, None)[1].name
    summary = {"ensemble": {"members": 3, "bootstrap": "none", "level": 0.9, "notes": []}}
    assert "edited after training" not in " ".join(ensemble_summary_text(summary))
    assert "edited after training" in " ".join(ensemble_summary_text(summary, edited=True))
