"""Figure parts for ensemble runs (pure functions): the interval on the parity plot (error bars
around the members' mean), an edge's band (the spread of φ across members), and the texts that
say what they are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

INTERVAL_COLOR = "#2ca02c"
BAND_FILL = "rgba(44, 160, 44, 0.18)"


def first_output(rows: Any) -> list[Any]:
    """Column 0 of [n][n_out] rows (the plots show the first output)."""
    if not isinstance(rows, list):
        return []
    return [r[0] if isinstance(r, list) and r else None for r in rows]


def interval_of(predictions: dict[str, Any]) -> dict[str, Any] | None:
    """The first output's ensemble mean and interval from a predictions answer, or None;
    ``current`` False when the run's model was edited after training (the interval is the
    trained members')."""
    if predictions.get("lower") is None or predictions.get("level") is None:
        return None
    return {
        "current": predictions.get("interval_current") is not False,
        "y_true": first_output(predictions.get("y_true")),
        "mean": first_output(predictions.get("y_mean")),
        "lower": first_output(predictions.get("lower")),
        "upper": first_output(predictions.get("upper")),
        "level": float(predictions["level"]),
    }


def level_text(level: float) -> str:
    return f"{100 * level:g} %"


def interval_trace(interval: dict[str, Any]) -> go.Scatter:
    """Ensemble mean against the measured value, with the interval as error bars."""
    rows = [
        (t, m, lo, hi)
        for t, m, lo, hi in zip(
            interval["y_true"], interval["mean"], interval["lower"], interval["upper"], strict=False
        )
        if None not in (t, m, lo, hi)
    ]
    return go.Scatter(
        x=[r[0] for r in rows],
        y=[r[1] for r in rows],
        mode="markers",
        name=f"ensemble mean, {level_text(interval['level'])} interval"
        + ("" if interval.get("current", True) else " (trained members, before the edits)"),
        marker={"size": 6, "color": INTERVAL_COLOR, "symbol": "diamond", "opacity": 0.8},
        error_y={
            "type": "data",
            "symmetric": False,
            "array": [r[3] - r[1] for r in rows],
            "arrayminus": [r[1] - r[2] for r in rows],
            "color": INTERVAL_COLOR,
            "thickness": 1,
            "width": 2,
        },
    )


def band_traces(band: dict[str, Any], scale: Sequence[Any] | None) -> list[go.Scatter]:
    """An edge's band across members: the upper quantile, then the lower one filled up to it
    (x in the input's own units when ``scale`` = [mean, std] is given)."""
    mean, std = (scale[0], scale[1]) if scale and None not in scale[:2] else (0.0, 1.0)
    xs = [None if v is None else mean + std * v for v in band.get("x") or []]
    label = f"{band.get('members')} members, {level_text(float(band.get('level', 0.9)))} band"
    if band.get("note"):  # the run's model was edited: the band is the trained members'
        label += " (trained, before the edits)"
    upper = go.Scatter(
        x=xs,
        y=band.get("upper") or [],
        mode="lines",
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        name="band upper",
    )
    lower = go.Scatter(
        x=xs,
        y=band.get("lower") or [],
        mode="lines",
        line={"width": 0},
        fill="tonexty",
        fillcolor=BAND_FILL,
        name=label,
        hoverinfo="skip",
    )
    return [upper, lower]


EDITED_TEXT = (
    "This run's model was edited after training (symbolic fixes or pruning); the members were "
    "not: the interval on the parity plot and the edge bands describe the model as trained, "
    "not the edited one. Reset the edits to compare like with like; Retrain trains the edited "
    "model alone, without an ensemble."
)


def ensemble_summary_text(summary: dict[str, Any], edited: bool = False) -> list[str]:
    """Sentences for the run page: which model the page shows, the interval's calibration
    and its measured coverage and width, and (``edited``) that the interval is the trained
    model's."""
    e = summary.get("ensemble")
    if not isinstance(e, dict):
        return []
    level = level_text(float(e.get("level") or 0.9))
    lines = [
        f"Ensemble of {e.get('members')} KANs (bootstrap: {e.get('bootstrap')}). Edges, "
        f"symbolic fitting, the formula and the model file use {e.get('main_model')}; the "
        f"parity plot also shows the members' mean with its {level} interval, and the edge "
        "plot the members' band."
    ]
    val = e.get("validation")
    if isinstance(val, dict):
        width = (val.get("mean_width") or [None])[0]
        coverage = val.get("coverage")
        measured = (
            f"covers {100 * coverage:.1f} % of the {val.get('n_rows')} validation rows "
            "(calibrated on one half, counted on the other)"
            if coverage is not None
            else "has too few validation rows to measure its coverage"
        )
        width_text = f"; mean width {width:.4g} (target units)" if width is not None else ""
        lines.append(f"The calibrated {level} interval {measured}{width_text}.")
    lines += [str(n) for n in e.get("notes") or []]
    if edited:
        lines.append(EDITED_TEXT)
    return lines
