"""Pure figure builders: the API's JSON in, a ``plotly.graph_objects.Figure`` out.

No I/O and no Dash here, so every builder is unit-tested without a server. The network diagram
is drawn the way the recipe measured to be fast: a handful of combined ``go.Scatter`` traces with
``None``-separated segments, one trace per style bucket (numeric / symbolic × 8 opacity levels),
never one trace per edge. Every edge has its own slot in the row between two node layers (pykan's
layout), so a click on a slot is never ambiguous; the slot's invisible hit marker carries
``customdata = [layer, i, j]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from app.dashboard import ensemble_figures
from app.dashboard.data_check import readable_name

# Above this many edges only the TOP_K_MINI_PLOTS edges by attribution get a mini-plot; the
# rest are drawn as lines (a 1-pixel-wide thumbnail shows nothing and costs render time).
MINI_PLOT_EDGE_LIMIT = 100
TOP_K_MINI_PLOTS = 64
SMALL_LAYER_EDGES = 24  # a layer this small always shows every thumbnail
MINI_PLOT_POINTS = 16
OPACITY_LEVELS = 8
SLOT_BOTTOM, SLOT_TOP = 0.32, 0.68  # slot box within the gap between node rows (gap = 1)
SLOT_FILL = 0.84  # share of its slot an edge's box takes
SELECTION_MARGIN = 0.03
# The edge plot shows at most this many data points (evenly picked): enough to see where the
# data sits, and a 1000-marker SVG scatter costs the click ~50 ms more to paint.
MAX_EDGE_DATA_POINTS = 400

NUMERIC_COLOR = "#1f2d3d"
SYMBOLIC_COLOR = "#c0392b"
SELECTED_COLOR = "#f39c12"
DATA_COLOR = "rgba(52, 101, 164, 0.55)"
CANDIDATE_COLOR = "#c0392b"
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")

SELECTED_SHAPE_NAME = "selected-edge"
# Plotly hovers the nearest point within ``hoverdistance`` (20 px), after subtracting the marker
# radius: markers wider than the slot spacing would tie and hover a neighbour. Small markers keep
# "nearest" exact while the 20 px reach keeps them easy to hit.
HIT_MARKER_SIZE = 4
ASSUMED_PLOT_WIDTH_PX = 700  # the diagram's card at 1280 px; wider screens only help
MIN_HIT_SPACING_PX = 6.5
MAX_STAGGER_LEVELS = 12
STAGGER_SPAN = 0.3  # of the gap between node rows, inside the slot box


@dataclass(frozen=True)
class Edge:
    """One edge of the network JSON, normalised (``score`` is relative to its layer's best)."""

    layer: int
    i: int
    j: int
    x: Sequence[float]
    y: Sequence[float]
    score: float
    symbolic: str | None
    pruned: bool


def _as_float(value: Any, default: float = 0.0) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def network_width(network: dict[str, Any]) -> list[int]:
    if network.get("width"):
        return [int(w) for w in network["width"]]
    layers = network.get("layers") or []
    if not layers:
        return []
    return [int(layers[0]["in_dim"])] + [int(layer["out_dim"]) for layer in layers]


def iter_edges(network: dict[str, Any]) -> list[Edge]:
    """Edges from either ``network["edges"]`` (flat, with ``layer``) or ``layers[l]["edges"]``."""
    raw: list[tuple[int, dict[str, Any]]] = []
    if network.get("edges") is not None:
        raw = [(int(e["layer"]), e) for e in network["edges"]]
    else:
        for index, layer in enumerate(network.get("layers") or []):
            layer_index = int(layer.get("index", layer.get("layer", index)))
            raw.extend((int(e.get("layer", layer_index)), e) for e in layer.get("edges") or [])
    best: dict[int, float] = {}
    for layer_index, e in raw:
        best[layer_index] = max(best.get(layer_index, 0.0), _as_float(e.get("score")))
    edges = []
    for layer_index, e in raw:
        top = best.get(layer_index) or 1.0
        edges.append(
            Edge(
                layer=layer_index,
                i=int(e["i"]),
                j=int(e["j"]),
                x=e.get("x") or [],
                y=e.get("y") or [],
                score=_as_float(e.get("score")) / top if top > 0 else 0.0,
                symbolic=e.get("symbolic") or None,
                pruned=not e.get("active", True),
            )
        )
    return edges


def opacity_level(relative_score: float) -> int:
    """Quantise a 0..1 attribution to one of ``OPACITY_LEVELS`` (pykan's tanh(3·s) shading)."""
    shaded = math.tanh(3.0 * max(0.0, min(1.0, relative_score))) / math.tanh(3.0)
    return min(OPACITY_LEVELS - 1, int(shaded * OPACITY_LEVELS))


def level_alpha(level: int) -> float:
    return 0.1 + 0.9 * (level + 1) / OPACITY_LEVELS


def node_positions(count: int) -> list[float]:
    return [(k + 0.5) / count for k in range(count)]


def hit_offset(layer_in: int, layer_out: int, i: int, j: int) -> float:
    """Vertical offset of an edge's hit marker inside its slot.

    Plotly's "closest" hover treats every marker within 3 px of the mouse as equally close, so
    slots narrower than that (a 16×16 layer is ~3 px per slot at 760 px) would hover a neighbour.
    Dense layers stagger their markers over a few heights so that neighbours are ≥ 6 px apart.
    """
    slots = layer_in * layer_out
    spacing_px = ASSUMED_PLOT_WIDTH_PX / slots
    levels = min(MAX_STAGGER_LEVELS, max(1, math.ceil(MIN_HIT_SPACING_PX / spacing_px)))
    if levels == 1:
        return 0.0
    level = (i * layer_out + j) % levels
    return (level - (levels - 1) / 2) * (STAGGER_SPAN / (levels - 1))


def slot_geometry(layer_in: int, layer_out: int, i: int, j: int) -> tuple[float, float]:
    """Centre x and width of edge (i → j)'s slot; slots are grouped by input node."""
    slots = layer_in * layer_out
    index = i * layer_out + j
    return (index + 0.5) / slots, SLOT_FILL / slots


def _downsample(
    xs: Sequence[float], ys: Sequence[float], n: int
) -> tuple[list[float], list[float]]:
    pairs = [
        (float(a), float(b))
        for a, b in zip(xs, ys, strict=False)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
    ]
    if len(pairs) <= n:
        return [p[0] for p in pairs], [p[1] for p in pairs]
    step = (len(pairs) - 1) / (n - 1)
    picked = [pairs[round(k * step)] for k in range(n)]
    return [p[0] for p in picked], [p[1] for p in picked]


def _span(values: Iterable[float]) -> tuple[float, float]:
    values = list(values)
    lo, hi = min(values), max(values)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


#: more inputs than this: their labels alternate between two lines
INPUT_LABELS_ONE_LINE = 6


def _short(name: str, limit: int = 14) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def edge_label(layer: int, i: int, j: int, input_name: str | None = None) -> str:
    source = f" ({input_name})" if input_name else ""
    return f"φ[{layer}] {i}→{j}{source}"


def mini_plot_edges(
    edges: Sequence[Edge], limit: int = MINI_PLOT_EDGE_LIMIT, top_k: int = TOP_K_MINI_PLOTS
) -> set[tuple[int, int, int]]:
    """Which edges get a thumbnail: all of them in a small network; in a large one, every edge
    of a small layer (their slots are wide enough to read) plus the ``top_k`` others by score."""
    if len(edges) <= limit:
        return {(e.layer, e.i, e.j) for e in edges}
    per_layer: dict[int, list[Edge]] = {}
    for e in edges:
        per_layer.setdefault(e.layer, []).append(e)
    chosen: set[tuple[int, int, int]] = set()
    rest: list[Edge] = []
    for layer_edges in per_layer.values():
        if len(layer_edges) <= SMALL_LAYER_EDGES:
            chosen.update((e.layer, e.i, e.j) for e in layer_edges)
        else:
            rest.extend(layer_edges)
    rest.sort(key=lambda e: e.score, reverse=True)
    chosen.update((e.layer, e.i, e.j) for e in rest[:top_k])
    return chosen


def network_figure(
    network: dict[str, Any],
    *,
    selected: Sequence[int] | None = None,
    uirevision: str | int | None = None,
    mini_plot_limit: int = MINI_PLOT_EDGE_LIMIT,
    top_k: int = TOP_K_MINI_PLOTS,
) -> go.Figure:
    """The interactive network diagram (pykan's plot, as a few combined Plotly traces)."""
    width = network_width(network)
    edges = [e for e in iter_edges(network) if not e.pruned]
    input_names = list(
        network.get("input_names") or [f"x{k}" for k in range(width[0] if width else 0)]
    )
    output_names = list(
        network.get("output_names") or [f"y{k}" for k in range(width[-1] if width else 0)]
    )

    with_curve = mini_plot_edges(edges, mini_plot_limit, top_k)

    # style bucket (symbolic?, opacity level) -> (line xs, line ys, curve xs, curve ys)
    buckets: dict[tuple[bool, int], tuple[list, list, list, list]] = {}
    hit_x: list[float] = []
    hit_y: list[float] = []
    hit_data: list[list[int]] = []
    hit_text: list[str] = []
    box_x: list[float | None] = []
    box_y: list[float | None] = []

    for e in edges:
        if e.layer >= len(width) - 1:
            continue
        n_in, n_out = width[e.layer], width[e.layer + 1]
        cx, w = slot_geometry(n_in, n_out, e.i, e.j)
        x_from = node_positions(n_in)[e.i]
        x_to = node_positions(n_out)[e.j]
        y0 = float(e.layer)
        bottom, top = y0 + SLOT_BOTTOM, y0 + SLOT_TOP
        level = opacity_level(e.score)
        lx, ly, cxs, cys = buckets.setdefault((e.symbolic is not None, level), ([], [], [], []))
        has_curve = (e.layer, e.i, e.j) in with_curve and len(e.x) > 1
        if has_curve:
            lx.extend([x_from, cx, None, cx, x_to, None])
            ly.extend([y0, bottom, None, top, y0 + 1.0, None])
            xs, ys = _downsample(e.x, e.y, MINI_PLOT_POINTS)
            if len(xs) > 1:
                x_lo, x_hi = _span(xs)
                y_lo, y_hi = _span(ys)
                pad = 0.05 * (top - bottom)
                cxs.extend([cx - w / 2 + w * (v - x_lo) / (x_hi - x_lo) for v in xs] + [None])
                cys.extend(
                    [
                        bottom + pad + (top - bottom - 2 * pad) * (v - y_lo) / (y_hi - y_lo)
                        for v in ys
                    ]
                    + [None]
                )
            left, right = cx - w / 2, cx + w / 2
            box_x.extend([left, right, right, left, left, None])
            box_y.extend([bottom, bottom, top, top, bottom, None])
        else:
            lx.extend([x_from, cx, cx, x_to, None])
            ly.extend([y0, bottom, top, y0 + 1.0, None])
        hit_x.append(cx)
        hit_y.append(y0 + 0.5 + hit_offset(n_in, n_out, e.i, e.j))
        hit_data.append([e.layer, e.i, e.j])
        source = input_names[e.i] if e.layer == 0 and e.i < len(input_names) else None
        kind = f"symbolic: {e.symbolic}" if e.symbolic else "spline"
        hit_text.append(
            f"{edge_label(e.layer, e.i, e.j, source)}<br>{kind} · attribution {e.score:.2f}"
        )

    traces: list[go.Scatter] = []
    if box_x:
        traces.append(
            go.Scatter(
                x=box_x,
                y=box_y,
                mode="lines",
                hoverinfo="skip",
                showlegend=False,
                line={"color": "rgba(120,120,120,0.35)", "width": 0.6},
                name="slots",
            )
        )
    for (symbolic, level), (lx, ly, cxs, cys) in sorted(buckets.items()):
        color = SYMBOLIC_COLOR if symbolic else NUMERIC_COLOR
        alpha = level_alpha(level)
        kind = "symbolic" if symbolic else "spline"
        if lx:
            traces.append(
                go.Scatter(
                    x=lx,
                    y=ly,
                    mode="lines",
                    hoverinfo="skip",
                    showlegend=False,
                    opacity=alpha * 0.7,
                    line={"color": color, "width": 0.8},
                    name=f"{kind}-links-{level}",
                )
            )
        if cxs:
            traces.append(
                go.Scatter(
                    x=cxs,
                    y=cys,
                    mode="lines",
                    hoverinfo="skip",
                    showlegend=False,
                    opacity=alpha,
                    line={"color": color, "width": 1.6},
                    name=f"{kind}-curves-{level}",
                )
            )

    node_x: list[float] = []
    node_y: list[float] = []
    node_text: list[str] = []
    labels: list[str] = []
    # Inputs in a crowded row are labelled on two staggered lines (every second one lower), so
    # neighbouring names never run together ("smix_J_molKdhmix_kJ_mol") on an 800 px screen.
    stagger = width[0] > INPUT_LABELS_ONE_LINE if width else False
    lower: tuple[list[float], list[str]] = ([], [])
    for layer_index, count in enumerate(width):
        # crowded rows get shorter labels; sized for the diagram at ~450 px wide
        per_label = 170 if layer_index == 0 and stagger else 85
        label_chars = max(4, min(14, per_label // max(count, 1)))
        for k, x in enumerate(node_positions(count)):
            node_x.append(x)
            node_y.append(float(layer_index))
            if layer_index == 0:
                name = input_names[k] if k < len(input_names) else f"x{k}"
                if stagger and k % 2:
                    lower[0].append(x)
                    lower[1].append(_short(name, label_chars))
                    labels.append("")
                else:
                    labels.append(_short(name, label_chars))
                node_text.append(f"input {k}: {name}")
            elif layer_index == len(width) - 1:
                name = output_names[k] if k < len(output_names) else f"y{k}"
                labels.append(_short(name, label_chars))
                node_text.append(f"output {k}: {name}")
            else:  # named as the edge plot's x axis names it
                labels.append(f"{layer_index}.{k}" if count <= 24 else "")
                node_text.append(f"hidden node {layer_index}.{k}")
    traces.append(
        go.Scatter(
            x=node_x,
            y=node_y,
            mode="markers+text",
            text=labels,
            textposition=["bottom center" if y == 0 else "top center" for y in node_y],
            textfont={"size": 10},
            hovertext=node_text,
            hoverinfo="text",
            showlegend=False,
            marker={"size": 9, "color": "#ffffff", "line": {"color": NUMERIC_COLOR, "width": 1.5}},
            name="nodes",
        )
    )
    if lower[0]:
        traces.append(
            go.Scatter(
                x=lower[0],
                y=[-0.17] * len(lower[0]),
                mode="text",
                text=lower[1],
                textposition="bottom center",
                textfont={"size": 10},
                hoverinfo="skip",
                showlegend=False,
                name="input-labels-lower",
            )
        )
    traces.append(
        go.Scatter(
            x=hit_x,
            y=hit_y,
            mode="markers",
            customdata=hit_data,
            hovertext=hit_text,
            hoverinfo="text",
            showlegend=False,
            name="edges",
            marker={
                "symbol": "square",
                "size": HIT_MARKER_SIZE,
                "color": "rgba(0,0,0,0)",
            },
        )
    )

    n_layers = max(1, len(width) - 1)
    # an S-KAN's family tags first: drawn under the edges' hit markers
    fig = go.Figure(data=[*family_traces(network, width), *traces])
    fig.update_layout(
        height=min(900, 170 * n_layers + 110),
        margin={"l": 10, "r": 10, "t": 20, "b": 10},
        xaxis={"visible": False, "range": [-0.01, 1.01], "fixedrange": False},
        yaxis={"visible": False, "range": [-0.55 if lower[0] else -0.4, n_layers + 0.35]},
        plot_bgcolor="#ffffff",
        paper_bgcolor="#ffffff",
        hovermode="closest",
        clickmode="event",
        dragmode="zoom",
        uirevision=uirevision if uirevision is not None else "network",
        showlegend=False,
        shapes=selection_shapes(width, selected),
    )
    return fig


#: S-KAN: the tag drawn beside a node for the activation family it chose, and its colour
FAMILY_TAGS = {"bspline": "B-spl", "rbf": "RBF", "chebyshev": "Cheb", "rational": "Rat"}
FAMILY_COLORS = {
    "bspline": "#1f77b4",
    "rbf": "#2ca02c",
    "chebyshev": "#9467bd",
    "rational": "#d62728",
}


def family_traces(network: dict[str, Any], width: Sequence[int]) -> list[go.Scatter]:
    """An S-KAN's chosen activation family per node (``network["node_families"]``, per layer
    its input nodes), as a small coloured tag right of each node; nothing for other KANs."""
    xs: dict[str, list[float]] = {}
    ys: dict[str, list[float]] = {}
    hover: dict[str, list[str]] = {}
    for layer_index, families in enumerate(network.get("node_families") or []):
        if layer_index >= len(width) - 1 or not isinstance(families, list):
            break
        positions = node_positions(int(width[layer_index]))
        for k, family in enumerate(families[: len(positions)]):
            if not isinstance(family, str) or not family:
                continue
            xs.setdefault(family, []).append(positions[k] + 0.012)
            ys.setdefault(family, []).append(float(layer_index) + 0.1)
            where = f"input {k}" if layer_index == 0 else f"hidden node {layer_index}.{k}"
            hover.setdefault(family, []).append(f"{where}: {family} activations (S-KAN)")
    return [
        go.Scatter(
            x=xs[family],
            y=ys[family],
            mode="text",
            text=[FAMILY_TAGS.get(family, family[:5])] * len(xs[family]),
            textposition="middle right",
            textfont={"size": 9, "color": FAMILY_COLORS.get(family, "#555555")},
            hovertext=hover[family],
            hoverinfo="text",
            showlegend=False,
            name=f"node-family-{family}",
        )
        for family in sorted(xs)
    ]


def feature_ranking_figure(ranking: dict[str, Any]) -> go.Figure:
    """An RBF-subspace run's feature ranking (``summary["feature_ranking"]``: features, scores
    summing to 1), most important on top."""
    names = [str(n) for n in ranking.get("features") or []]
    scores = [_as_float(v) for v in ranking.get("scores") or []]
    pairs = sorted(zip(names, scores, strict=False), key=lambda p: p[1])
    if not pairs:
        return message_figure("No feature ranking stored for this run.")
    fig = go.Figure(
        go.Bar(
            x=[s for _, s in pairs],
            y=[_short(n, 24) for n, _ in pairs],
            orientation="h",
            marker={"color": NUMERIC_COLOR},
            hovertext=[f"{n}: {s:.3f}" for n, s in pairs],
            hoverinfo="text",
            name="feature-ranking",
        )
    )
    fig.update_layout(
        title={"text": "Feature ranking (learned active subspace)", "font": {"size": 13}},
        height=min(900, 24 * len(pairs) + 120),
        margin={"l": 10, "r": 10, "t": 40, "b": 30},
        xaxis={"title": "share of importance", "rangemode": "tozero"},
        plot_bgcolor="#ffffff",
        paper_bgcolor="#ffffff",
    )
    return fig


def zoom_from_relayout(relayout: Any) -> dict[str, list[float] | None] | None:
    """The axis ranges a Plotly ``relayoutData`` event sets, ``{"xaxis": [lo, hi] | None,
    "yaxis": …}`` (None = back to the full view); None when the event is not a zoom (a shape
    drawn, a hover …)."""
    if not isinstance(relayout, dict):
        return None
    zoom: dict[str, list[float] | None] = {}
    for axis in ("xaxis", "yaxis"):
        lo, hi = relayout.get(f"{axis}.range[0]"), relayout.get(f"{axis}.range[1]")
        if isinstance(lo, int | float) and isinstance(hi, int | float):
            zoom[axis] = [float(lo), float(hi)]
        elif relayout.get(f"{axis}.autorange") is True:
            zoom[axis] = None
    return zoom or None


def keep_zoom(fig: go.Figure, zoom: Any) -> go.Figure:
    """``fig`` with the ranges the user zoomed to (``zoom_from_relayout``'s form)."""
    if isinstance(zoom, dict):
        for axis in ("xaxis", "yaxis"):
            bounds = zoom.get(axis)
            if isinstance(bounds, list) and len(bounds) == 2:
                fig.layout[axis].range = bounds
    return fig


def selection_shape_style() -> dict[str, Any]:
    """What ``frontend_assets/kanscope.js`` needs to outline a slot exactly as below."""
    return {
        "slot_fill": SLOT_FILL,
        "bottom": SLOT_BOTTOM - SELECTION_MARGIN,
        "top": SLOT_TOP + SELECTION_MARGIN,
        "min_half": 0.004,
        "line": {"color": SELECTED_COLOR, "width": 2.5},
        "name": SELECTED_SHAPE_NAME,
    }


def selection_shapes(width: Sequence[int], selected: Sequence[int] | None) -> list[dict]:
    """``layout.shapes`` outlining the selected edge's slot (empty when nothing valid is
    selected). A shape, not a trace: a click then re-draws only the shape (~20 ms), where
    changing a trace re-draws the whole diagram (~100 ms for 432 edges)."""
    if not selected or len(selected) != 3:
        return []
    layer, i, j = (int(v) for v in selected)
    if not (0 <= layer < len(width) - 1 and 0 <= i < width[layer] and 0 <= j < width[layer + 1]):
        return []
    cx, w = slot_geometry(width[layer], width[layer + 1], i, j)
    half = max(w / 2, 0.004)
    return [
        {
            "type": "rect",
            "xref": "x",
            "yref": "y",
            "x0": cx - half,
            "x1": cx + half,
            "y0": layer + SLOT_BOTTOM - SELECTION_MARGIN,
            "y1": layer + SLOT_TOP + SELECTION_MARGIN,
            "line": {"color": SELECTED_COLOR, "width": 2.5},
            "layer": "above",
            "name": SELECTED_SHAPE_NAME,
        }
    ]


def in_units(xs: Sequence[Any], scale: Sequence[Any] | None) -> list[Any]:
    """Standardised inputs ``xs`` in the column's own units, ``mean + std · x`` for
    ``scale = [mean, std]`` (``xs`` unchanged without a usable scale; ``None`` stays ``None``)."""
    if not scale or len(scale) != 2 or not all(isinstance(v, int | float) for v in scale):
        return list(xs)
    mean, std = float(scale[0]), float(scale[1])
    return [None if x is None else mean + std * float(x) for x in xs]


def edge_x_title(layer: int, i: int, input_name: str | None, scale: Any) -> str:
    if input_name and scale:
        return f"{readable_name(input_name)} (data units)"
    if input_name:
        return f"input ({readable_name(input_name)}, standardised)"
    return f"hidden node {layer}.{i}"


def edge_figure(
    edge: dict[str, Any],
    *,
    input_name: str | None = None,
    candidate: dict[str, Any] | None = None,
) -> go.Figure:
    """A large φ(x) plot: the learned curve, the data's actual pre-activations, a candidate;
    an input edge's x axis in the column's own units (``edge["input_scale"]``)."""
    layer, i, j = int(edge.get("layer", 0)), int(edge.get("i", 0)), int(edge.get("j", 0))
    scale = edge.get("input_scale")
    fig = go.Figure()
    data_x, data_y = in_units(edge.get("data_x") or [], scale), edge.get("data_y") or []
    if len(data_x) > MAX_EDGE_DATA_POINTS:
        step = len(data_x) / MAX_EDGE_DATA_POINTS
        picked = [int(k * step) for k in range(MAX_EDGE_DATA_POINTS)]
        data_x, data_y = [data_x[k] for k in picked], [data_y[k] for k in picked]
    if data_x:
        fig.add_trace(
            go.Scatter(
                x=data_x,
                y=data_y,
                mode="markers",
                name="data (pre-activations)",
                marker={"size": 5, "color": DATA_COLOR},
            )
        )
    if edge.get("band"):  # an ensemble run: the members' spread of this edge
        fig.add_traces(ensemble_figures.band_traces(edge["band"], scale))
    symbolic = edge.get("symbolic")
    fig.add_trace(
        go.Scatter(
            x=in_units(edge.get("x") or [], scale),
            y=edge.get("y") or [],
            mode="lines",
            name=f"φ(x) = {symbolic}" if symbolic else "φ(x) (spline)",
            line={"color": SYMBOLIC_COLOR if symbolic else NUMERIC_COLOR, "width": 2.5},
        )
    )
    if candidate is not None:
        candidate = {**candidate, "x": in_units(candidate.get("x") or [], scale)}
        fig.add_trace(candidate_trace(candidate))
    fig.update_layout(
        title={"text": edge_label(layer, i, j, input_name), "font": {"size": 14}},
        height=340,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        xaxis_title=edge_x_title(layer, i, input_name, scale),
        yaxis_title="φ(x)",
        legend={"orientation": "h", "y": -0.2},
        plot_bgcolor="#fafafa",
        uirevision=f"edge-{layer}-{i}-{j}",
    )
    return fig


def candidate_label(candidate: dict[str, Any]) -> str:
    r2 = _as_float(candidate.get("r2"), float("nan"))
    return (
        f"{candidate.get('name', '?')} (R² {r2:.3f})"
        if math.isfinite(r2)
        else str(candidate.get("name", "?"))
    )


def candidate_preview(edge: dict[str, Any], suggestion: dict[str, Any]) -> dict[str, Any]:
    """``suggestion`` plus ``x``/``y``: c·f(a·x+b)+d sampled on the edge's own x grid.

    The API sends each candidate's name and (a, b, c, d); the function itself comes from the
    library's registry by name (no string is ever parsed). Non-finite samples become ``None``.
    """
    from kan_core.functions import FUNCTIONS

    xs = [float(v) for v in edge.get("x") or [] if v is not None]
    function = FUNCTIONS.get(str(suggestion.get("name")))
    params = suggestion.get("params") or []
    if function is None or len(params) != 4 or not xs or any(p is None for p in params):
        return {**suggestion, "x": [], "y": []}
    import torch

    a, b, c, d = (float(p) for p in params)
    with torch.no_grad():
        values = c * function.torch_fn(a * torch.tensor(xs, dtype=torch.float64) + b) + d
    ys = [float(v) if math.isfinite(v) else None for v in values.tolist()]
    return {**suggestion, "x": xs, "y": ys}


def candidate_trace(candidate: dict[str, Any]) -> go.Scatter:
    xs = candidate.get("x") or candidate.get("preview_x") or []
    ys = candidate.get("y") or candidate.get("preview_y") or []
    return go.Scatter(
        x=xs,
        y=ys,
        mode="lines",
        name=f"candidate: {candidate_label(candidate)}",
        line={"color": CANDIDATE_COLOR, "width": 2, "dash": "dash"},
    )


def _metric_series(metrics: Sequence[dict[str, Any]], key: str) -> tuple[list, list]:
    xs, ys = [], []
    for m in metrics:
        value = m.get(key)
        if value is None:
            continue
        xs.append(m.get("step"))
        ys.append(value)
    return xs, ys


def loss_figure(
    metrics: Sequence[dict[str, Any]],
    *,
    uirevision: str | int | None = None,
    best_step: int | None = None,
    task: str | None = None,
) -> go.Figure:
    """Train and validation loss against step (two traces, extended live with ``extendData``);
    ``best_step``: the step whose weights the run kept (early stopping), marked by a line;
    ``task`` names the loss on the axis."""
    fig = go.Figure()
    if best_step is not None:
        fig.add_vline(
            x=best_step,
            line={"color": "#667085", "dash": "dash", "width": 1},
            annotation={"text": f"best, kept (step {best_step:,})", "font": {"size": 11}},
            annotation_position="top",
        )
    for key, name, color in (
        ("train_loss", "train loss", RUN_COLORS[0]),
        ("val_loss", "validation loss", RUN_COLORS[1]),
    ):
        xs, ys = _metric_series(metrics, key)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, line={"color": color}))
    fig.update_layout(
        height=300,
        margin={"l": 55, "r": 10, "t": 30, "b": 40},
        xaxis_title="step",
        yaxis={"title": loss_axis_title(task), "type": "log"},
        legend={"orientation": "h", "y": 1.12},
        uirevision=uirevision if uirevision is not None else "loss",
        plot_bgcolor="#fafafa",
    )
    return fig


def loss_axis_title(task: str | None) -> str:
    """What the loss is: the network fits a standardised target (regression)."""
    if task == "regression":
        return "MSE (standardised target)"
    if task == "classification":
        return "cross-entropy"
    return "loss"


def loss_extension(metrics: Sequence[dict[str, Any]]) -> tuple[dict[str, list], list[int]]:
    """``(data, trace_indices)`` for ``dcc.Graph.extendData`` on :func:`loss_figure`."""
    tx, ty = _metric_series(metrics, "train_loss")
    vx, vy = _metric_series(metrics, "val_loss")
    return {"x": [tx, vx], "y": [ty, vy]}, [0, 1]


def compare_loss_figure(
    series: Sequence[tuple[str, Sequence[dict[str, Any]]]],
) -> go.Figure:
    """Validation (solid) and train (dotted) loss of several runs on one plot."""
    fig = go.Figure()
    for index, (label, metrics) in enumerate(series):
        color = RUN_COLORS[index % len(RUN_COLORS)]
        vx, vy = _metric_series(metrics, "val_loss")
        tx, ty = _metric_series(metrics, "train_loss")
        if vx:
            fig.add_trace(
                go.Scatter(x=vx, y=vy, mode="lines", name=f"{label} val", line={"color": color})
            )
        fig.add_trace(
            go.Scatter(
                x=tx,
                y=ty,
                mode="lines",
                name=f"{label} train",
                line={"color": color, "dash": "dot"},
            )
        )
    fig.update_layout(
        height=340,
        margin={"l": 55, "r": 10, "t": 30, "b": 40},
        xaxis_title="step",
        yaxis={"title": "loss", "type": "log"},
        legend={"orientation": "h", "y": 1.15},
        uirevision="compare",
        plot_bgcolor="#fafafa",
    )
    return fig


def predictions_figure(
    y_true: Sequence[float],
    y_pred: Sequence[float],
    *,
    title: str = "predicted vs measured",
    interval: dict[str, Any] | None = None,
) -> go.Figure:
    """Parity plot; ``interval`` (``ensemble_figures.interval_of``): the members' mean with
    its interval as error bars, beside the run's model."""
    pairs = [
        (float(a), float(b))
        for a, b in zip(y_true, y_pred, strict=False)
        if a is not None and b is not None
    ]
    fig = go.Figure()
    if pairs:
        lo = min(min(p) for p in pairs)
        hi = max(max(p) for p in pairs)
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                name="ideal",
                line={"color": "#999", "dash": "dash"},
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in pairs],
            y=[p[1] for p in pairs],
            mode="markers",
            name="validation",
            marker={"size": 6, "color": RUN_COLORS[0], "opacity": 0.7},
        )
    )
    if interval is not None:
        fig.add_trace(ensemble_figures.interval_trace(interval))
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=320,
        margin={"l": 55, "r": 10, "t": 40, "b": 40},
        xaxis_title="measured",
        yaxis_title="predicted",
        showlegend=interval is not None,
        legend={"orientation": "h", "y": -0.25},
        plot_bgcolor="#fafafa",
    )
    return fig


def formula_markdown(latex: str, label: str | None = None) -> str:
    """Markdown for ``dcc.Markdown(mathjax=True)``: ``$$`` must sit on lines of their own."""
    latex = (latex or "").strip()
    if not latex:
        return ""
    prefix = f"{label}\n\n" if label else ""
    return f"{prefix}$$\n{latex}\n$$"


def edge_curves_for_client(network: dict[str, Any]) -> dict[str, Any]:
    """``{"edges": {"l-i-j": [xs, ys, symbolic]}, "inputs": [...]}`` for the browser's instant
    preview of a clicked edge (``frontend_assets/kanscope.js``)."""
    edges = {}
    scales = network.get("input_scales") or []
    for e in iter_edges(network):
        xs, ys = _downsample(e.x, e.y, 64)
        if e.layer == 0 and e.i < len(scales):
            xs = in_units(xs, scales[e.i])
        edges[f"{e.layer}-{e.i}-{e.j}"] = [
            [round(v, 5) for v in xs],
            [round(v, 5) for v in ys],
            e.symbolic,
        ]
    inputs = list(network.get("input_names") or [])
    titles = [edge_x_title(0, k, name, k < len(scales)) for k, name in enumerate(inputs)]
    return {"edges": edges, "inputs": inputs, "x_titles": titles}


def message_figure(text: str, height: int = 260) -> go.Figure:
    """An empty plot that says why there is nothing to show yet."""
    fig = go.Figure()
    fig.add_annotation(
        text=text,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font={"size": 14, "color": "#6b7785"},
    )
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"visible": False},
        yaxis={"visible": False},
        plot_bgcolor="#ffffff",
    )
    return fig


# ── leaderboard (alloy workflow) ───────────────────────────────────────────────────────────

SCORE_LABELS = {"r2": "R²", "accuracy": "accuracy", "mae": "MAE", "f1_macro": "macro F1"}


def _mean_std(mean: Any, std: Any, digits: int = 3) -> str:
    """``0.812 ± 0.034`` (``–`` when the mean is missing; no ± with a single fold)."""
    if mean is None or not math.isfinite(_as_float(mean, math.nan)):
        return "–"
    text = f"{float(mean):.{digits}g}"
    if std is not None and math.isfinite(_as_float(std, math.nan)):
        text += f" ± {float(std):.{max(digits - 1, 1)}g}"
    return text


def leaderboard_table(board: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Rows and columns for a ``dash_table.DataTable`` from ``GET …/leaderboards/{id}``: one row
    per model (the API sorts best score first), score and second metric as mean ± std over
    folds, training seconds per fold and parameter count."""
    rows = board.get("rows") or []
    score_name = rows[0]["score_name"] if rows else "r2"
    second_name = rows[0]["second_name"] if rows else "mae"
    score_label = SCORE_LABELS.get(score_name, score_name)
    second_label = SCORE_LABELS.get(second_name, second_name)
    columns = [
        {"name": "rank", "id": "rank"},
        {"name": "model", "id": "model"},
        {"name": "status", "id": "status"},
        {"name": f"{score_label} (mean ± std)", "id": "score"},
        {"name": f"{second_label} (mean ± std)", "id": "second"},
        {"name": "folds", "id": "folds"},
        {"name": "train time / fold (s)", "id": "time"},
        {"name": "parameters", "id": "parameters"},
        {"name": "run", "id": "run"},
    ]
    data = []
    rank = 0
    for row in rows:
        finished = row.get("score_mean") is not None
        if finished:
            rank += 1
        time_s = row.get("train_time_s_mean")
        n_params = row.get("n_parameters")
        data.append(
            {
                "rank": rank if finished else "",
                "model": row.get("name", ""),
                "status": row.get("status", ""),
                "score": _mean_std(row.get("score_mean"), row.get("score_std")),
                "second": _mean_std(row.get("second_mean"), row.get("second_std")),
                "folds": row.get("n_folds", 0),
                "time": "–" if time_s is None else f"{float(time_s):.2g}",
                "parameters": "–" if n_params is None else f"{int(n_params):,}",
                "run": f"[{row['run_id']}](/runs/{row['run_id']})" if "run_id" in row else "",
                "error": row.get("error") or "",
            }
        )
    columns[-1]["presentation"] = "markdown"
    return data, columns


def leaderboard_progress(board: dict[str, Any]) -> tuple[int, int]:
    """(finished runs, all runs) of a leaderboard."""
    rows = board.get("rows") or []
    done = sum(1 for r in rows if r.get("status") in ("succeeded", "failed", "cancelled"))
    return done, len(rows)


def _confusion_figure(y_true: Sequence[Any], y_pred: Sequence[Any], title: str) -> go.Figure:
    labels = sorted({str(v) for v in [*y_true, *y_pred] if v is not None})
    index = {label: n for n, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for a, b in zip(y_true, y_pred, strict=False):
        if a is not None and b is not None:
            counts[index[str(b)]][index[str(a)]] += 1
    fig = go.Figure(
        go.Heatmap(
            z=counts,
            x=labels,
            y=labels,
            colorscale="Blues",
            showscale=False,
            text=counts,
            texttemplate="%{text}",
        )  # fmt: skip
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=320,
        margin={"l": 55, "r": 10, "t": 40, "b": 40},
        xaxis_title="measured",
        yaxis_title="predicted",
    )
    return fig


def leaderboard_prediction_figures(
    board: dict[str, Any], max_points: int = 2000
) -> list[tuple[str, go.Figure]]:
    """(model name, figure) per finished model, in table order: out-of-fold predicted vs
    measured (regression) or a confusion matrix (classification)."""
    order = {r.get("run_id"): n for n, r in enumerate(board.get("rows") or [])}
    series = sorted(board.get("predictions") or [], key=lambda s: order.get(s.get("run_id"), 99))
    scores = {r.get("run_id"): r for r in board.get("rows") or []}
    out = []
    for s in series:
        row = scores.get(s.get("run_id")) or {}
        label = SCORE_LABELS.get(row.get("score_name", ""), "score")
        title = f"{s.get('name', '')} · {label} {_mean_std(row.get('score_mean'), None)}"
        y_true, y_pred = list(s.get("y_true") or []), list(s.get("y_pred") or [])
        if board.get("task") == "classification":
            fig = _confusion_figure(y_true, y_pred, title)
        else:
            step = max(1, math.ceil(len(y_true) / max_points))
            fig = predictions_figure(y_true[::step], y_pred[::step], title=title)
            fig.update_traces(selector={"name": "validation"}, name="out-of-fold")
        out.append((str(s.get("name", "")), fig))
    return out
