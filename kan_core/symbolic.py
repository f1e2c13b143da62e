"""Symbolic regression on KAN edges: fit y ≈ c·f(a·x + b) + d for every candidate on every edge.

The fitter is a pure tensor function, `fit_edge_candidates(x (E, n), y (E, n), library)`:
1. standardise each edge's x and y (so one grid of (a, b) suits every edge);
2. grid search over (a, b) for every function and edge at once, with c, d in closed form
   (least squares: c = cov(f, y)/var(f), d = mean(y) − c·mean(f), R² = corr²);
3. a finer grid around each best (a, b);
4. a few batched Levenberg–Marquardt steps on (a, b, c, d), then c, d re-solved exactly;
5. parameters mapped back to the edge's own units. A candidate whose values are non-finite on
   the edge's data (1/x at 0, log of negatives) gets R² = NaN and is never chosen.

Model-level functions (`suggest`, `fix`, `unfix`, `auto_symbolic`) read pre-activations
(the layer's inputs) and post-activations (`edge_values[:, j, i]`) from
`model.forward_with_activations(x)`; `formula` composes the sympy expression through all layers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sympy
import torch

from kan_core.errors import ConfigError, KanCoreError
from kan_core.functions import SymbolicFunction, get_function, resolve_library
from kan_core.model import KAN

# Functions whose affine inner parameters are redundant: fitted with a = 1, b = 0.
_AFFINE_FREE = frozenset({"0", "x"})
# Functions where b is redundant with c (exp(a·x + b) = e^b·exp(a·x)): grid over a only.
_SHIFT_FREE = frozenset({"exp"})

DEFAULT_R2_FLOOR = 1e-6
# f(a·u) = a^p·f(u) (integer p) or |a|^p·f(sign(a)·u): fitted a is folded into c for readability.
_HOMOGENEOUS = {"x^2": 2, "x^3": 3, "x^4": 4, "1/x": -1, "1/x^2": -2}
_HOMOGENEOUS_POSITIVE = {"sqrt": 0.5, "x^1.5": 1.5, "1/sqrt": -0.5}


class SymbolicFitError(KanCoreError, ValueError):
    """A function cannot be fitted to an edge (e.g. it is non-finite on the edge's data)."""


class FormulaIncompleteError(KanCoreError, ValueError):
    """`formula` needs every edge that reaches an output to be symbolic."""

    def __init__(self, edges: list[tuple[int, int, int]]) -> None:
        self.edges = edges
        shown = ", ".join(f"(layer {l}, {i}→{j})" for l, i, j in edges[:10])
        more = f" and {len(edges) - 10} more" if len(edges) > 10 else ""
        super().__init__(
            f"{len(edges)} edge(s) are still numeric: {shown}{more}. Fix them (fix or "
            "auto_symbolic with a lower r2_threshold) or prune them before asking for a formula."
        )


# ------------------------------------------------------------------------------------------
# Pure fitter
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateFit:
    """One function fitted to one edge: y ≈ c·f(a·x + b) + d in the edge's own units."""

    name: str
    a: float
    b: float
    c: float
    d: float
    r2: float
    complexity: int
    score: float  # lower is better: log10(1 − R² + floor) + complexity_weight·complexity

    @property
    def params(self) -> tuple[float, float, float, float]:
        return (self.a, self.b, self.c, self.d)


@dataclass(frozen=True)
class CandidateFits:
    """Every candidate on every edge. `params` (E, F, 4) = (a, b, c, d); `r2` (E, F), NaN = invalid."""

    names: tuple[str, ...]
    complexity: torch.Tensor  # (F,)
    params: torch.Tensor  # (E, F, 4), float64
    r2: torch.Tensor  # (E, F), float64; NaN where the candidate is non-finite on the data

    def scores(
        self, complexity_weight: float = 0.3, r2_floor: float = DEFAULT_R2_FLOOR
    ) -> torch.Tensor:
        """(E, F) ranking score, lower is better; +inf for invalid candidates."""
        return candidate_scores(self.r2, self.complexity, complexity_weight, r2_floor)

    def ranked(
        self,
        edge: int,
        complexity_weight: float = 0.3,
        r2_floor: float = DEFAULT_R2_FLOOR,
        top: int | None = None,
    ) -> list[CandidateFit]:
        """Valid candidates of one edge, best first (ties keep the library order)."""
        s = self.scores(complexity_weight, r2_floor)[edge]
        order = sorted(range(len(self.names)), key=lambda f: (float(s[f]), f))
        out = []
        for f in order:
            if not math.isfinite(float(s[f])):
                continue
            a, b, c, d = (float(v) for v in self.params[edge, f])
            out.append(
                CandidateFit(
                    self.names[f],
                    a,
                    b,
                    c,
                    d,
                    float(self.r2[edge, f]),
                    int(self.complexity[f]),
                    float(s[f]),
                )
            )
        return out[:top] if top is not None else out

    def best(
        self, complexity_weight: float = 0.3, r2_floor: float = DEFAULT_R2_FLOOR
    ) -> list[CandidateFit | None]:
        """The best valid candidate per edge (None when no candidate is valid)."""
        result: list[CandidateFit | None] = []
        for e in range(self.r2.shape[0]):
            r = self.ranked(e, complexity_weight, r2_floor, top=1)
            result.append(r[0] if r else None)
        return result


def candidate_scores(
    r2: torch.Tensor, complexity: torch.Tensor, complexity_weight: float, r2_floor: float
) -> torch.Tensor:
    """log10(1 − R² + floor) + w·complexity; +inf where R² is NaN.

    The floor makes fits better than ~1 − floor equally good, so the simpler function wins
    (cos(a·x) with tiny a is a parabola too, but x² is listed first and is as simple).
    """
    unexplained = (1.0 - r2).clamp_min(0.0) + r2_floor
    s = torch.log10(unexplained) + complexity_weight * complexity.to(r2.dtype)
    return torch.where(torch.isnan(r2), torch.full_like(s, math.inf), s)


def _a_grid(dtype: torch.dtype) -> torch.Tensor:
    g = torch.logspace(math.log10(0.15), math.log10(10.0), 9, dtype=dtype)
    return torch.cat([-g.flip(0), g])  # (18,)


def _b_grid(dtype: torch.dtype) -> torch.Tensor:
    return torch.linspace(-6.0, 6.0, 25, dtype=dtype)  # (25,)


def _closed_form(
    z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least squares y ≈ c·z + d along the last axis; y centred with unit variance.

    z (..., n), y broadcastable to z → (c, d, R²) each (...), R² = NaN where z is non-finite.
    """
    finite = torch.isfinite(z).all(-1)
    z = torch.where(finite.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype))
    mz = z.mean(-1, keepdim=True)
    zc = z - mz
    vz = (zc * zc).mean(-1)
    czy = (zc * y).mean(-1)
    ok = vz > 1e-12
    safe_vz = torch.where(ok, vz, torch.ones_like(vz))
    c = torch.where(ok, czy / safe_vz, torch.zeros_like(vz))
    d = -c * mz.squeeze(-1)  # mean(y) = 0
    r2 = torch.where(ok, (czy * czy / safe_vz).clamp(0.0, 1.0), torch.zeros_like(vz))
    nan = torch.full_like(r2, math.nan)
    return c, d, torch.where(finite, r2, nan)


def _grid_r2(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R² of the best y ≈ c·z + d for z (e, G, n), y (e, n) centred, unit variance → (e, G).

    Sums only (few passes over z); z is shifted by its first sample against cancellation.
    Non-finite (or overflowing) candidates come out NaN.
    """
    n = z.shape[-1]
    z = z - z[..., :1]
    sz = z.sum(-1)
    szz = (z * z).sum(-1)
    szy = torch.bmm(z, y.unsqueeze(-1)).squeeze(-1)  # Σ z·y (Σ y = 0)
    vz = szz / n - (sz / n) ** 2
    czy = szy / n
    ok = vz > 1e-10 * (szz / n).clamp_min(1e-30)
    r2 = torch.where(ok, (czy * czy / torch.where(ok, vz, 1.0)).clamp(0.0, 1.0), 0.0)
    return torch.where(torch.isfinite(szz) & torch.isfinite(szy), r2, math.nan)


def _grid_search(
    fn: SymbolicFunction,
    xs: torch.Tensor,
    ys: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    max_elements: int = 2_000_000,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best (a, b) per edge over the pairs (a[g], b[g]) (or per-edge pairs (E, G)).

    xs, ys (E, n) standardised → (a (E,), b (E,), R² (E,)), R² NaN if no pair is finite.
    """
    E, n = xs.shape
    a2 = a if a.dim() == 2 else a.expand(E, -1)  # (E, G)
    b2 = b if b.dim() == 2 else b.expand(E, -1)
    G = a2.shape[1]
    chunk = max(1, max_elements // max(1, G * n))
    best_a, best_b, best_r2 = [], [], []
    for s in range(0, E, chunk):
        x, y = xs[s : s + chunk], ys[s : s + chunk]
        ag, bg = a2[s : s + chunk], b2[s : s + chunk]
        with torch.no_grad():
            u = torch.addcmul(bg.unsqueeze(-1), ag.unsqueeze(-1), x.unsqueeze(1))  # (e, G, n)
            r2 = _grid_r2(fn.torch_fn(u), y)  # (e, G)
        idx = torch.nan_to_num(r2, nan=-1.0).argmax(-1, keepdim=True)  # (e, 1)
        best_a.append(ag.gather(1, idx).squeeze(1))
        best_b.append(bg.gather(1, idx).squeeze(1))
        best_r2.append(r2.gather(1, idx).squeeze(1))
    return torch.cat(best_a), torch.cat(best_b), torch.cat(best_r2)


def _sse(fn: SymbolicFunction, p: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = fn.torch_fn(p[:, 0:1] * x + p[:, 1:2])
    r = p[:, 2:3] * z + p[:, 3:4] - y
    sse = (r * r).sum(-1)
    return torch.where(torch.isfinite(sse), sse, torch.full_like(sse, math.inf))


def _levenberg_marquardt(
    fn: SymbolicFunction,
    p: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    fix_b: bool = False,
) -> torch.Tensor:
    """Batched LM on (a, b, c, d) for P independent problems; x, y (P, n), p (P, 4)."""
    lam = torch.full((p.shape[0],), 1e-3, dtype=p.dtype)
    loss = _sse(fn, p, x, y)
    eye = torch.eye(4, dtype=p.dtype)
    for _ in range(steps):
        with torch.enable_grad():
            u = (p[:, 0:1] * x + p[:, 1:2]).requires_grad_(True)
            fu = fn.torch_fn(u)
            (g,) = torch.autograd.grad(fu.sum(), u, allow_unused=True)
        fu = fu.detach()
        g = torch.zeros_like(u) if g is None else g.detach()
        c = p[:, 2:3]
        r = c * fu + p[:, 3:4] - y  # (P, n)
        jac = torch.stack([c * g * x, c * g, fu, torch.ones_like(fu)], -1)  # (P, n, 4)
        if fix_b:
            jac[..., 1] = 0.0
        jac = torch.nan_to_num(jac, nan=0.0, posinf=0.0, neginf=0.0)
        r = torch.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
        jtj = jac.transpose(1, 2) @ jac  # (P, 4, 4)
        jtr = (jac * r.unsqueeze(-1)).sum(1)  # (P, 4)
        diag = torch.diagonal(jtj, dim1=1, dim2=2)
        damp = (
            lam[:, None, None] * torch.diag_embed(diag)
            + 1e-9 * (1 + diag.amax(-1))[:, None, None] * eye
        )
        delta = torch.linalg.solve(jtj + damp, -jtr.unsqueeze(-1)).squeeze(-1)
        delta = torch.nan_to_num(delta, nan=0.0, posinf=0.0, neginf=0.0)
        trial = p + delta
        new_loss = _sse(fn, trial, x, y)
        better = new_loss < loss
        p = torch.where(better.unsqueeze(-1), trial, p)
        loss = torch.where(better, new_loss, loss)
        lam = torch.where(better, lam * 0.3, lam * 10.0).clamp(1e-9, 1e9)
    return p


def fit_edge_candidates(
    x: torch.Tensor,
    y: torch.Tensor,
    library: Iterable[str] | Sequence[SymbolicFunction] | None = None,
    refine_steps: int = 12,
    grid_points: int = 64,
) -> CandidateFits:
    """Fit y ≈ c·f(a·x + b) + d for every function of `library` on every edge at once.

    x, y: (E, n) pre- and post-activations of E edges (any float dtype; fitted in float64).
    Returns parameters in the units of x and y and R² per (edge, function); NaN R² marks a
    candidate that is non-finite on that edge's data.
    """
    if x.dim() != 2 or x.shape != y.shape:
        raise ConfigError(
            f"x and y must both be (edges, points), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    funcs = _resolve(library)
    if not funcs:
        raise ConfigError("the function library is empty; name at least one function")
    x = x.detach().to(torch.float64)
    y = y.detach().to(torch.float64)
    E, n = x.shape
    F = len(funcs)
    mx, sx = x.mean(-1, keepdim=True), x.std(-1, unbiased=False, keepdim=True)
    my, sy = y.mean(-1, keepdim=True), y.std(-1, unbiased=False, keepdim=True)
    const_y = (sy <= 1e-9 * (1.0 + my.abs())).squeeze(-1)  # (E,)
    sx = sx.clamp_min(1e-12)
    sy_safe = torch.where(sy > 0, sy, torch.ones_like(sy))
    xs = (x - mx) / sx
    ys = (y - my) / sy_safe
    params = torch.zeros(E, F, 4, dtype=torch.float64)
    r2 = torch.full((E, F), math.nan, dtype=torch.float64)
    # grid search on an evenly spread subsample in float32 (ranking only), refinement on all
    order = xs.argsort(-1)
    pick = torch.linspace(0, n - 1, min(n, grid_points)).round().long()
    sel = order[:, pick]  # (E, m)
    xg, yg = xs.gather(1, sel).float(), ys.gather(1, sel).float()
    yg = yg - yg.mean(-1, keepdim=True)
    yg = yg / yg.std(-1, unbiased=False, keepdim=True).clamp_min(1e-12)
    a_coarse, b_coarse = _a_grid(torch.float32), _b_grid(torch.float32)
    for f, fn in enumerate(funcs):
        if fn.name in _AFFINE_FREE:
            p = torch.zeros(E, 4, dtype=torch.float64)
            p[:, 0] = 1.0
            with torch.no_grad():
                z = fn.torch_fn(xs)
            c, d, rr = _closed_form(z, ys)
            p[:, 2], p[:, 3] = c, d
        else:
            shift_free = fn.name in _SHIFT_FREE
            if shift_free:
                a_pairs, b_pairs = a_coarse, torch.zeros_like(a_coarse)
            else:
                a_pairs = a_coarse.repeat_interleave(len(b_coarse))
                b_pairs = b_coarse.repeat(len(a_coarse))
            a0, b0, _ = _grid_search(fn, xg, yg, a_pairs, b_pairs)
            # zoom: a finer grid around each edge's best pair
            fa = torch.tensor([0.6, 0.75, 0.87, 1.0, 1.15, 1.33, 1.6])
            fb = torch.linspace(-0.5, 0.5, 7) * (0.0 if shift_free else 1.0)
            a_z = (a0[:, None] * fa[None, :]).repeat_interleave(7, dim=1)  # (E, 49)
            b_z = (b0[:, None] + fb[None, :]).repeat(1, 7)
            a1, b1, _ = _grid_search(fn, xg, yg, a_z, b_z)
            a1, b1 = a1.double(), b1.double()
            z = fn.torch_fn(a1[:, None] * xs + b1[:, None])
            c, d, _ = _closed_form(z, ys)
            p = torch.stack([a1, b1, c, d], -1)
            if refine_steps > 0:
                p = _levenberg_marquardt(fn, p, xs, ys, refine_steps, fix_b=shift_free)
            with torch.no_grad():
                z = fn.torch_fn(p[:, 0:1] * xs + p[:, 1:2])
            c, d, rr = _closed_form(z, ys)
            p[:, 2], p[:, 3] = c, d
        params[:, f] = p
        r2[:, f] = rr
    # back to the edge's own units: y = sy·(c'·f(a'·(x − mx)/sx + b') + d') + my
    a_s, b_s, c_s, d_s = params.unbind(-1)
    a = a_s / sx
    b = b_s - a_s * mx / sx
    c = c_s * sy_safe
    d = d_s * sy_safe + my
    params = torch.stack([a, b, c, d], -1)
    for f, fn in enumerate(funcs):
        if fn.name == "x":  # y = c'·sy/sx·x + …: report a = 1, b = 0
            params[:, f] = torch.stack(
                [
                    torch.ones_like(a[:, f]),
                    torch.zeros_like(a[:, f]),
                    a[:, f] * c[:, f],
                    b[:, f] * c[:, f] + d[:, f],
                ],
                -1,
            )
        elif fn.name == "0":
            params[:, f, :3] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        else:
            params[:, f] = _normalise(fn.name, params[:, f])
    if const_y.any():  # a constant edge: every finite candidate fits exactly with c = 0
        valid = ~torch.isnan(r2[const_y])
        params[const_y] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
        params[const_y, :, 3] = my[const_y]
        r2[const_y] = torch.where(valid, torch.ones_like(r2[const_y]), r2[const_y])
    complexity = torch.tensor([fn.complexity for fn in funcs], dtype=torch.float64)
    return CandidateFits(tuple(fn.name for fn in funcs), complexity, params, r2)


def _normalise(name: str, p: torch.Tensor) -> torch.Tensor:
    """An equivalent, more readable (a, b, c, d) (E, 4): a = ±1 where f allows, b = 0 for exp."""
    a, b, c, d = p.unbind(-1)
    ok = a.abs() > 1e-12
    a_safe = torch.where(ok, a, torch.ones_like(a))
    if name in _HOMOGENEOUS:
        q = torch.stack([torch.ones_like(a), b / a_safe, c * a_safe ** _HOMOGENEOUS[name], d], -1)
    elif name in _HOMOGENEOUS_POSITIVE:
        s = torch.sign(a_safe)
        q = torch.stack(
            [s, b / a_safe.abs(), c * a_safe.abs() ** _HOMOGENEOUS_POSITIVE[name], d], -1
        )
    elif name == "log":
        s = torch.sign(a_safe)
        q = torch.stack([s, b / a_safe.abs(), c, d + c * torch.log(a_safe.abs())], -1)
    elif name == "exp":
        q = torch.stack([a, torch.zeros_like(b), c * torch.exp(b), d], -1)
    else:
        return p
    keep = ok & torch.isfinite(q).all(-1)
    return torch.where(keep.unsqueeze(-1), q, p)


def _resolve(library: Iterable[str] | Sequence[SymbolicFunction] | None) -> list[SymbolicFunction]:
    if library is None:
        return resolve_library(None)
    items = list(library)
    if all(isinstance(f, SymbolicFunction) for f in items):
        return items  # type: ignore[return-value]
    if any(not isinstance(f, str) for f in items):
        raise ConfigError("library must be function names (strings) from kan_core.functions")
    return resolve_library(dict.fromkeys(items))  # de-duplicated, order kept
