"""Per-edge inspection: sampled curves, the data's pre/post-activations, attribution scores.

Layers return data, never figures: plotting belongs to the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kan_core.model import KAN, LayerTrace


@dataclass
class EdgeCurve:
    layer: int
    i: int  # input node
    j: int  # output node
    x: np.ndarray  # (n_points,) sampled over the edge's observed input range
    y: np.ndarray  # (n_points,)
    data_x: np.ndarray  # actual pre-activations on data (subsample)
    data_y: np.ndarray  # φ at those points
    score: float  # attribution
    symbolic: str | None  # function name if the edge is fixed


@torch.no_grad()
def edge_scores_from_traces(
    traces: list[LayerTrace],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """pykan-style attribution propagated back from the outputs.

    Returns (edge scores per layer (out, in), node scores per layer (width_l,)).
    The output nodes score 1; an edge gets its node's score times the share its activation's
    spread has in that node's spread; a node sums its outgoing edges.
    """
    node = torch.ones(traces[-1].outputs.shape[1], device=traces[-1].outputs.device)
    edges: list[torch.Tensor] = [torch.empty(0)] * len(traces)
    nodes: list[torch.Tensor] = [torch.empty(0)] * (len(traces) + 1)
    nodes[-1] = node
    for layer in range(len(traces) - 1, -1, -1):
        t = traces[layer]
        edge_spread = (
            t.edge_values.std(0, unbiased=False)
            if t.edge_values.shape[0] > 1
            else t.edge_values.abs()[0]
        )
        out_spread = (
            t.outputs.std(0, unbiased=False) if t.outputs.shape[0] > 1 else t.outputs.abs()[0]
        )
        e = node[:, None] * edge_spread / (out_spread[:, None] + 1e-12)  # (out, in)
        edges[layer] = e
        node = e.sum(0)
        nodes[layer] = node
    return edges, nodes


def edge_scores(model: KAN, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        _, traces = model.forward_with_activations(x)
    return edge_scores_from_traces(traces)[0]


def node_scores(model: KAN, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        _, traces = model.forward_with_activations(x)
    return edge_scores_from_traces(traces)[1]


def _subsample(n: int, max_points: int) -> torch.Tensor:
    if n <= max_points:
        return torch.arange(n)
    return torch.linspace(0, n - 1, max_points).round().long()


@torch.no_grad()
def edge_curves(
    model: KAN, x: torch.Tensor, n_points: int = 64, max_data_points: int = 256
) -> list[list[EdgeCurve]]:
    """Every edge's curve over its observed input range, with data points and scores."""
    device = next(model.parameters()).device
    x = x.to(device)
    _, traces = model.forward_with_activations(x)
    scores, _ = edge_scores_from_traces(traces)
    sub = _subsample(x.shape[0], max_data_points).to(device)
    out: list[list[EdgeCurve]] = []
    for li, (layer, t) in enumerate(zip(model.layers, traces, strict=True)):
        lo, hi = t.inputs.min(0).values, t.inputs.max(0).values  # (in,)
        hi = torch.where(hi > lo, hi, lo + 1e-3)
        frac = torch.linspace(0, 1, n_points, device=device, dtype=x.dtype)[:, None]
        sweep = lo + (hi - lo) * frac  # (n_points, in)
        ys = layer.edge_values(sweep).cpu().numpy()  # (n_points, out, in)
        xs = sweep.cpu().numpy()
        dx = t.inputs[sub].cpu().numpy()  # (m, in)
        dy = t.edge_values[sub].cpu().numpy()  # (m, out, in)
        sc = scores[li].cpu().numpy()
        names = layer.sym_names
        curves = [
            EdgeCurve(
                li,
                i,
                j,
                xs[:, i],
                ys[:, j, i],
                dx[:, i],
                dy[:, j, i],
                float(sc[j, i]),
                names[j][i] or None,
            )
            for j in range(layer.out_dim)
            for i in range(layer.in_dim)
        ]
        out.append(curves)
    return out


def edge_curve(
    model: KAN,
    x: torch.Tensor,
    layer: int,
    i: int,
    j: int,
    n_points: int = 200,
    max_data_points: int = 2000,
) -> EdgeCurve:
    """One edge in detail (more points); raises ConfigError for an edge that does not exist."""
    from kan_core.errors import ConfigError

    if not 0 <= layer < len(model.layers):
        raise ConfigError(
            f"layer {layer} does not exist: the model has layers 0..{len(model.layers) - 1}"
        )
    model.layers[layer]._check_edge(i, j)
    with torch.no_grad():
        device = next(model.parameters()).device
        h = x.to(device)
        for li in range(layer):
            lay = model.layers[li]
            h = lay(h)
        lay = model.layers[layer]
        lo, hi = h[:, i].min(), h[:, i].max()
        hi = torch.where(hi > lo, hi, lo + 1e-3)
        sweep = h.mean(0, keepdim=True).repeat(n_points, 1)
        sweep[:, i] = torch.linspace(float(lo), float(hi), n_points, device=device, dtype=h.dtype)
        ys = lay.edge_values(sweep)[:, j, i]
        sub = _subsample(h.shape[0], max_data_points).to(device)
        dy = lay.edge_values(h[sub])[:, j, i]
        _, traces = model.forward_with_activations(x.to(device))
        scores, _ = edge_scores_from_traces(traces)
    return EdgeCurve(
        layer,
        i,
        j,
        sweep[:, i].cpu().numpy(),
        ys.cpu().numpy(),
        h[sub, i].cpu().numpy(),
        dy.cpu().numpy(),
        float(scores[layer][j, i]),
        lay.sym_names[j][i] or None,
    )
