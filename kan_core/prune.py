"""Pruning: switch off edges whose attribution is below a threshold; keep the input mapping."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kan_core.errors import ConfigError
from kan_core.inspect import edge_scores_from_traces
from kan_core.model import KAN


@dataclass
class PruneResult:
    pruned: int  # edges switched off by this call
    remaining: int  # edges still active
    kept_inputs: list[int]  # input columns that still reach an output


@torch.no_grad()
def prune_edges(model: KAN, x: torch.Tensor, threshold: float = 1e-2) -> PruneResult:
    """Mask every active edge whose attribution score is below `threshold` (in place)."""
    if not threshold >= 0:
        raise ConfigError(f"threshold must be a number ≥ 0, got {threshold!r}")
    device = next(model.parameters()).device
    _, traces = model.forward_with_activations(x.to(device))
    scores, _ = edge_scores_from_traces(traces)
    pruned = 0
    for layer, s in zip(model.layers, scores, strict=True):
        drop = (s < threshold) & (layer.mask > 0)
        pruned += int(drop.sum())
        layer.mask[drop] = 0.0
    # an input is kept if some active path leads from it to an output
    reach = torch.ones(model.width[-1], dtype=torch.bool, device=device)
    for layer in reversed(model.layers):
        reach = ((layer.mask > 0) & reach[:, None]).any(0)
    remaining = sum(int((layer.mask > 0).sum()) for layer in model.layers)
    return PruneResult(pruned, remaining, [int(i) for i in torch.nonzero(reach).flatten()])
