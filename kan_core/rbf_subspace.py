"""Gaussian RBF network with a learned active subspace (D'Agostino, Ilievski & Shoemaker 2023).

    z = W x                          W (k, d): the learned projection, k ≤ d
    φ_m(x) = exp(-‖z - c_m‖²)        c_m (k,): centres in the subspace, m = 1..M
    y = A φ(x) + b                   A (out, M)

‖W(x - x_m)‖² = (x - x_m)ᵀ P (x - x_m) with P = WᵀW: the paper's Gaussian kernel with a
learnable precision matrix P of rank ≤ k (its centres x_m in input space are equivalent to ours,
c_m = W x_m). The width of every unit is carried by W's scale.

Feature ranking (`feature_ranking`), from P's spectrum as in the paper: P = V Λ Vᵀ; the
eigenvectors are the active directions (the model varies most along v_1), and input j scores
Σ_i λ_i·|v_ij| (eigenvalue-weighted absolute loadings of x_j on the latent directions),
normalised to sum 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kan_core.errors import ConfigError


def _positive_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return value


class RBFSubspaceNet(nn.Module):
    """y = A·exp(-‖W x - c_m‖²) + b; see the module doc. Same training API as KAN / MLP."""

    kind = "rbf_subspace"

    def __init__(
        self,
        n_in: int,
        n_out: int,
        subspace_dim: int = 2,
        centres: int = 16,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.n_in = _positive_int("n_in", n_in, 1, 100_000)
        self.n_out = _positive_int("n_out", n_out, 1, 100_000)
        self.subspace_dim = _positive_int("subspace_dim", subspace_dim, 1, 64)
        self.n_centres = _positive_int("centres", centres, 1, 4096)
        self.seed = seed
        self.width = [n_in, n_out]  # what the app reads as a model's inputs / outputs
        g = torch.Generator().manual_seed(seed)
        # inputs are standardised: z starts with unit variance per direction, centres on it
        self.projection = nn.Parameter(
            torch.randn(subspace_dim, n_in, generator=g) / math.sqrt(n_in)
        )
        self.centres = nn.Parameter(torch.randn(centres, subspace_dim, generator=g))
        self.out_weight = nn.Parameter(
            torch.randn(n_out, centres, generator=g) / math.sqrt(centres)
        )
        self.out_bias = nn.Parameter(torch.zeros(n_out))
        self.to(device=device, dtype=dtype)

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """φ (batch, M) for x (batch, d)."""
        z = x @ self.projection.T  # (batch, k)
        d2 = (
            z.square().sum(-1, keepdim=True)
            - 2.0 * z @ self.centres.T
            + self.centres.square().sum(-1)
        )  # (batch, M)
        return torch.exp(-d2.clamp_min(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x) @ self.out_weight.T + self.out_bias  # (batch, out)

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "width": list(self.width),
            "subspace_dim": self.subspace_dim,
            "centres": self.n_centres,
            "seed": self.seed,
        }

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@dataclass(frozen=True)
class FeatureRanking:
    """scores (d,): importance per input, sum 1; eigenvalues (k,) of P = WᵀW, largest first;
    directions (k, d): the matching eigenvectors (active directions, sign as eigh returns)."""

    scores: list[float]
    eigenvalues: list[float]
    directions: list[list[float]]
    method: str = (
        "eigen-decomposition of the learned precision P = WᵀW: input j scores Σ_i λ_i·|v_ij| "
        "(eigenvalue-weighted absolute loadings), normalised to sum 1"
    )

    def order(self) -> list[int]:
        """Input indices, most important first."""
        return sorted(range(len(self.scores)), key=lambda j: -self.scores[j])


@torch.no_grad()
def feature_ranking(model: RBFSubspaceNet) -> FeatureRanking:
    w = model.projection.detach().to(torch.float64).cpu()  # (k, d)
    lam, vecs = torch.linalg.eigh(w.T @ w)  # ascending, (d,), (d, d)
    k = min(model.subspace_dim, model.n_in)
    lam, vecs = lam.flip(0)[:k].clamp_min(0.0), vecs.flip(1)[:, :k]  # (k,), (d, k)
    raw = (vecs.abs() * lam).sum(-1)  # (d,)
    total = float(raw.sum())
    scores = (raw / total) if total > 0 else torch.full_like(raw, 1.0 / raw.numel())
    return FeatureRanking(
        scores=[float(s) for s in scores],
        eigenvalues=[float(v) for v in lam],
        directions=vecs.T.tolist(),
    )


__all__ = ["FeatureRanking", "RBFSubspaceNet", "feature_ranking"]
