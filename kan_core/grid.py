"""Grid update from samples and grid refinement, both keeping the learned functions.

After moving the knots, coefficients are refit by (ridge-stabilised) least squares so the spline
part of every edge matches what it was on the samples.
"""

from __future__ import annotations

import torch
from torch import nn

from kan_core.basis import AFKANBasis, Basis, BSplineBasis, SelectableBasis, uniform_knots
from kan_core.errors import ConfigError
from kan_core.layers import KANLayer
from kan_core.model import KAN


def _lstsq_coefficients(
    feats: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-8
) -> torch.Tensor:
    """Solve per input i: feats_i (n, K) @ C_i (K, out) ≈ targets_i (n, out); returns (out, in, K).

    feats: (n, in, K); targets: (n, out, in). Normal equations with a small ridge term so
    basis functions without samples (outer knots) stay well-defined on CPU and CUDA alike.
    """
    a = feats.permute(1, 0, 2).to(torch.float64)  # (in, n, K)
    b = targets.permute(2, 0, 1).to(torch.float64)  # (in, n, out)
    ata = a.transpose(1, 2) @ a  # (in, K, K)
    scale = ata.diagonal(dim1=1, dim2=2).mean(-1, keepdim=True).clamp_min(1e-12)  # (in, 1)
    eye = torch.eye(ata.shape[-1], dtype=ata.dtype, device=ata.device)
    sol = torch.linalg.solve(ata + ridge * scale[..., None] * eye, a.transpose(1, 2) @ b)
    return sol.permute(2, 0, 1).to(feats.dtype)  # (out, in, K)


def _new_knots(x_sorted: torch.Tensor, grid: int, k: int, grid_eps: float) -> torch.Tensor:
    """Knots (in, grid+2k+1) mixing sample percentiles and a uniform grid over the sample range."""
    n = x_sorted.shape[0]
    idx = torch.linspace(0, n - 1, grid + 1, device=x_sorted.device).round().long()
    adaptive = x_sorted[idx].T  # (in, grid+1)
    lo, hi = x_sorted[0], x_sorted[-1]
    span = torch.where(hi - lo > 1e-6, hi - lo, torch.ones_like(hi))
    hi = lo + span
    uniform = lo[:, None] + (span / grid)[:, None] * torch.arange(
        grid + 1, device=lo.device, dtype=lo.dtype
    )
    inner = grid_eps * uniform + (1 - grid_eps) * adaptive  # (in, grid+1)
    h = (inner[:, -1] - inner[:, 0]) / grid
    steps = torch.arange(1, k + 1, device=lo.device, dtype=lo.dtype)
    left = inner[:, :1] - steps.flip(0)[None, :] * h[:, None]
    right = inner[:, -1:] + steps[None, :] * h[:, None]
    return torch.cat([left, inner, right], dim=1)


@torch.no_grad()
def update_grid_from_samples(layer: KANLayer, x: torch.Tensor, grid_eps: float = 1.0) -> None:
    """Move the layer's grid to cover the samples x (n, in) and refit its coefficients.

    grid_eps=1 gives a uniform grid over the sample range (fast path); grid_eps=0 puts the knots
    at sample percentiles (adaptive, Cox–de Boor path); values in between mix the two.
    Bases without a grid (chebyshev, rational) are left as they are.
    """
    basis = layer.basis
    if not basis.has_range or x.shape[0] < 2:
        return
    if not 0.0 <= grid_eps <= 1.0:
        raise ConfigError(f"grid_eps must be in [0, 1], got {grid_eps}")
    x_sorted = torch.sort(x, dim=0).values
    if isinstance(basis, BSplineBasis):
        before = layer.spline_values(x)  # (n, out, in)
        basis.set_knots(_new_knots(x_sorted, basis.grid, basis.k, grid_eps))
    else:
        lo, hi = x_sorted[0], x_sorted[-1]
        hi = torch.where(hi - lo > 1e-6, hi, lo + 1.0)
        if isinstance(basis, REFIT_ON_SWEEP):
            x = torch.cat([x, range_sweep(lo, hi, 8 * basis.num_features + 1).to(x)])
        if isinstance(basis, SelectableBasis):
            _update_families(layer, basis, x, lo, hi)
            return
        before = layer.spline_values(x)  # (n, out, in)
        basis.set_range(lo, hi)
    layer.coef.copy_(_lstsq_coefficients(basis(x), before))


def _update_families(
    layer: KANLayer, basis: SelectableBasis, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> None:
    """S-KAN's grid update: each ranged family's part of the edge functions refitted onto its
    own new features; the others (tanh-based, range-free) keep theirs. One joint fit of the
    mixture is ill-posed (the families overlap: B-splines sum to 1 = T_0, …): on 64 rows it
    took the coefficients from 0.2 to 11, then 108, and Adam's next steps broke the
    cancellation (loss 0.01 -> 4.4). x: (n, in), samples plus a sweep of the new range."""
    feats = basis(x)  # (n, in, K)
    before = [
        torch.einsum("bik,oik->boi", feats[..., sl], layer.coef[..., sl]) for sl in basis.slices
    ]  # per family (n, out, in)
    basis.set_range(lo, hi)
    feats = basis(x)
    coef = layer.coef.clone()
    for family, sl, part in zip(basis.families, basis.slices, before, strict=True):
        if isinstance(family, Basis) and family.has_range:
            coef[..., sl] = _lstsq_coefficients(feats[..., sl], part)
    layer.coef.copy_(coef)


#: Bases whose grid-update refit also matches the old edge functions on a dense sweep of the new
#: range, as `refine` does: their features overlap (AF-KAN's SiLU side lobes) or mix families
#: (S-KAN), and on the samples alone a heavy-tailed input's sparse windows took large cancelling
#: coefficients that swung between the rows (AF-KAN, Gorsse fold 4: R² -1.46; 0.72 with this)
REFIT_ON_SWEEP = (AFKANBasis, SelectableBasis)


def range_sweep(lo: torch.Tensor, hi: torch.Tensor, points: int) -> torch.Tensor:
    """(points, in): evenly spaced from lo to hi (in,) for every input."""
    t = torch.linspace(0.0, 1.0, points, dtype=lo.dtype, device=lo.device)[:, None]
    return lo + (hi - lo) * t


@torch.no_grad()
def update_grid(model: KAN, x: torch.Tensor, grid_eps: float = 1.0) -> None:
    """Update every layer's grid from the pre-activations that x produces."""
    for layer in model.layers:
        update_grid_from_samples(layer, x, grid_eps)
        x = layer(x)


@torch.no_grad()
def refine(model: KAN, new_grid: int, x: torch.Tensor) -> None:
    """Grid extension (pykan's `refine`): switch every layer to `new_grid` intervals in place.

    The new coefficients are the least-squares fit of the old spline on the layer's inputs
    (plus a dense sweep of the old grid range), so the function is kept. Rebuild optimisers
    afterwards: the coefficient parameters are replaced.
    """
    if not (isinstance(new_grid, int) and new_grid >= 1):
        raise ConfigError(f"new_grid must be an integer ≥ 1, got {new_grid!r}")
    for layer in model.layers:
        old = layer.basis
        if not isinstance(old, BSplineBasis):
            raise ConfigError(f"refine needs the bspline basis, this layer uses {old.name!r}")
        lo, hi = old.knots[:, old.k], old.knots[:, -old.k - 1]  # inner grid range (in,)
        lo = torch.minimum(lo, x.min(0).values.to(lo))  # cover the data as well
        hi = torch.maximum(hi, x.max(0).values.to(hi))
        sweep = lo + (hi - lo) * torch.linspace(0, 1, 8 * new_grid + 1, device=lo.device)[:, None]
        samples = torch.cat([x, sweep.to(x.dtype)], dim=0)  # (n, in)
        before = layer.spline_values(samples)
        new = BSplineBasis(layer.in_dim, new_grid, old.k, (-1.0, 1.0)).to(old.knots)
        if old._uniform:
            new.set_range(lo, hi)
        else:
            inner_sorted = torch.sort(torch.cat([x, sweep.to(x.dtype)]), dim=0).values
            new.set_knots(_new_knots(inner_sorted, new_grid, old.k, 0.0))
        layer.basis = new
        layer.coef = nn.Parameter(_lstsq_coefficients(new(samples), before))
        x = layer(x)


__all__ = ["range_sweep", "refine", "update_grid", "update_grid_from_samples", "uniform_knots"]
