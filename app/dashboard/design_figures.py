"""The Design page's figure: proposed compositions against the training alloys (a pure
function of the API's design result)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go


def design_candidates_figure(result: dict[str, Any]) -> go.Figure:
    """Predicted target vs distance to the nearest training alloy for the candidates, over the
    training alloys (measured value vs distance to their nearest *other* training alloy): how
    far the proposals reach beyond the data, compared with how densely the data sit. An
    ensemble design's interval is drawn as error bars; the trust region as a vertical line."""
    target = str(result.get("target") or "target")
    training = result.get("training") or {}
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=training.get("distance") or [],
            y=training.get("value") or [],
            mode="markers",
            name="training alloys (measured)",
            marker={"color": "rgba(120,120,120,0.45)", "size": 6},
            hovertemplate="distance to nearest other %{x:.3f}<br>measured %{y:.4g}<extra></extra>",
        )
    )
    cands = result.get("candidates") or []
    predicted = [c.get("predicted") for c in cands]
    error_y = None
    if cands and all(c.get("lower") is not None and c.get("upper") is not None for c in cands):
        # an ensemble run: the calibrated interval around each candidate's mean
        error_y = {
            "type": "data",
            "symmetric": False,
            "array": [c["upper"] - p for c, p in zip(cands, predicted, strict=True)],
            "arrayminus": [p - c["lower"] for c, p in zip(cands, predicted, strict=True)],
            "color": "#d62728",
        }
    fig.add_trace(
        go.Scatter(
            x=[c.get("nearest_distance") for c in cands],
            y=predicted,
            error_y=error_y,
            mode="markers+text",
            name="candidates (predicted)",
            text=[str(c.get("rank")) for c in cands],
            textposition="top center",
            customdata=[c.get("formula") for c in cands],
            marker={"color": "#d62728", "size": 10, "symbol": "diamond"},
            hovertemplate="%{customdata}<br>distance %{x:.3f}<br>predicted %{y:.4g}<extra></extra>",
        )
    )
    trust = result.get("max_distance")
    if trust is not None:
        fig.add_vline(
            x=trust, line_dash="dash", line_color="#1f77b4", annotation_text="trust region limit"
        )
    best = result.get("best_training_value")
    if best is not None:
        fig.add_hline(
            y=best, line_dash="dot", line_color="grey", annotation_text="best training alloy"
        )
    fig.update_layout(
        xaxis_title="distance to the nearest training alloy (fraction of atoms that differ)",
        yaxis_title=target,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        legend={"orientation": "h", "y": 1.08},
        height=420,
    )
    return fig
