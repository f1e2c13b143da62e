"""The Design page's figure and defaults (pure functions, no server): an ensemble design's
interval as asymmetric error bars, the trust region as a line, the page's default
max_distance and input_margin equal to the API's, and the table's interval /
expected-improvement columns."""

from __future__ import annotations

from app.dashboard.design_figures import design_candidates_figure
from kan_core.design import DEFAULT_INPUT_MARGIN, DEFAULT_MAX_DISTANCE


def _result(**kw: object) -> dict:
    cand = {"rank": 1, "formula": "Al0.2 Co0.8", "nearest_distance": 0.1, "predicted": 500.0}
    base = {"target": "HV", "training": {"distance": [0.05], "value": [400.0]}}
    return base | {"candidates": [cand | kw.pop("cand", {})]} | kw  # type: ignore[operator]


def test_interval_error_bars_and_trust_line() -> None:
    fig = design_candidates_figure(
        _result(cand={"lower": 450.0, "upper": 580.0}, max_distance=0.15)
    )
    trace = next(t for t in fig.data if t.name == "candidates (predicted)")
    assert list(trace.error_y.array) == [80.0] and list(trace.error_y.arrayminus) == [50.0]
    lines = [s for s in fig.layout.shapes if s.x0 == s.x1]
    assert [s.x0 for s in lines] == [0.15]
    plain = design_candidates_figure(_result(cand={"lower": None, "upper": None}))
    assert plain.data[1].error_y.array is None and not plain.layout.shapes


def test_page_default_and_rows_follow_the_api() -> None:
    from app.dashboard import create_dash_app

    create_dash_app("http://127.0.0.1:9/api")  # pages register with an app
    from app.dashboard.pages import design as page

    assert page.DEFAULT_MAX_DISTANCE == DEFAULT_MAX_DISTANCE
    assert page.DEFAULT_INPUT_MARGIN == DEFAULT_INPUT_MARGIN
    ensemble = _result(
        cand={"lower": 450.0, "upper": 580.0, "expected_improvement": 12.34567},
        interval_level=0.9,
        acquisition="ei",
        best_training_value=790.0,
    )
    row = page._rows(ensemble)[0]
    assert (row["lower"], row["upper"], row["expected_improvement"]) == (450.0, 580.0, 12.3457)
    names = [c["name"] for c in page._columns(ensemble)]
    assert names[2:6] == ["predicted", "lower (90 %)", "upper (90 %)", "expected improvement"]
    assert "expected improvement over the best training alloy (measured 790)" in page._ranking(
        ensemble
    )
    assert page._interval(ensemble) == "; intervals at 90 % (ensemble)"
    edited = ensemble | {"interval_of": "trained members"}  # an edited ensemble run's design
    names = [c["name"] for c in page._columns(edited)]
    assert names[3:5] == ["lower (90 %, trained members)", "upper (90 %, trained members)"]
    assert "members as trained, not the edited model" in page._interval(edited)
    single = _result()
    assert page._interval(single) == ""
    assert page._rows(single)[0]["lower"] == "–" and page._columns(single) == page.BASE_COLUMNS
    assert page._ranking(single) == ""
