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
`model.forward_with_activations(x)`; `auto_symbolic` works layer by layer, so each layer is
fitted on the inputs it sees once the layers before it are symbolic.

`formula` composes the sympy expression through all layers exactly (the unrounded
`exact_expr` equals the network in symbolic mode to float tolerance), undoes the input/output
standardisation, expands, refits every constant against the data (Levenberg–Marquardt), snaps
constants to integers / multiples of π/2 where the error does not grow (others refitted), rounds
the rest to `digits` significant digits, and picks the simplest formula of a small Pareto list
(forward selection over the expanded additive terms) that is as accurate as the full one.
Every sympy rewrite is bounded by size (`FormulaBounds`): one whose input is too large, or whose
result would be (estimated before it runs), is skipped, the formula keeps the unrewritten form
and `OutputFormula.notes` says so. With `allow_numeric=True` edges that are still splines are
composed as placeholders φ_{l,i,j}(·) (`export.edge_placeholder`): a partial formula for
display, with no R² of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import sympy
import torch

from kan_core.errors import ConfigError, KanCoreError
from kan_core.export import (
    CompiledExpression,
    ExportError,
    compile_expression,
    edge_placeholder,
    placeholder_edges,
)
from kan_core.functions import SymbolicFunction, get_function, resolve_library
from kan_core.metrics import r2_score
from kan_core.model import KAN
from kan_core.naming import SymbolMap, make_symbols

# Functions whose affine inner parameters are redundant: fitted with a = 1, b = 0.
_AFFINE_FREE = frozenset({"0", "x"})
# Functions where b is redundant with c (exp(a·x + b) = e^b·exp(a·x)): grid over a only.
_SHIFT_FREE = frozenset({"exp"})

DEFAULT_R2_FLOOR = 1e-6
# One decade of unexplained variance per unit of complexity: a spline edge is only accurate to
# ~1e-5..1e-6, and a 4-parameter tan(a·x + b) near its pole mimics log(x) that closely.
DEFAULT_COMPLEXITY_WEIGHT = 1.0
# Edges auto_symbolic fits in one batch: its time budget is checked between batches. With the
# full library an edge costs ~0.2 s on a 2-core machine at load 14 (a batch about 13 s), a few
# times less on an idle core; the fitting buffers of a batch stay small.
AUTO_SYMBOLIC_BATCH = 64
# With a time budget: the first batch's size (it measures the seconds per edge that size the
# next batches to the time left, so the budget is overrun by about one edge's fit, not a batch)
AUTO_SYMBOLIC_FIRST_TIMED = 4
# f(a·u) = a^p·f(u) (integer p) or |a|^p·f(sign(a)·u): fitted a is folded into c for readability.
_HOMOGENEOUS = {
    "x^2": 2, "x^3": 3, "x^4": 4, "x^5": 5, "1/x": -1, "1/x^2": -2, "1/x^3": -3, "1/x^4": -4,
}  # fmt: skip
_HOMOGENEOUS_POSITIVE = {"sqrt": 0.5, "x^1.5": 1.5, "1/sqrt": -0.5}


class SymbolicFitError(KanCoreError, ValueError):
    """A function cannot be fitted to an edge (e.g. it is non-finite on the edge's data)."""


def numeric_edges_note(edges: Sequence[tuple[int, int, int]]) -> str:
    """A sentence naming the live edges (layer, i, j) that are still splines."""
    shown = ", ".join(f"({l}, {i}→{j})" for l, i, j in edges[:10])
    more = f" and {len(edges) - 10} more" if len(edges) > 10 else ""
    head = (
        "1 edge is still a spline" if len(edges) == 1 else f"{len(edges)} edges are still splines"
    )
    return (
        f"{head}: {shown}{more} (layer, input→output), shown as φ; fix them or run "
        "auto-symbolic for a complete formula."
    )


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
    """Every candidate on every edge: `params` (E, F, 4) = (a, b, c, d), `r2` (E, F).

    R² is NaN where the candidate is non-finite on the edge's data (never chosen)."""

    names: tuple[str, ...]
    complexity: torch.Tensor  # (F,)
    params: torch.Tensor  # (E, F, 4), float64
    r2: torch.Tensor  # (E, F), float64; NaN where the candidate is non-finite on the data

    def scores(
        self,
        complexity_weight: float = DEFAULT_COMPLEXITY_WEIGHT,
        r2_floor: float = DEFAULT_R2_FLOOR,
    ) -> torch.Tensor:
        """(E, F) ranking score, lower is better; +inf for invalid candidates."""
        return candidate_scores(self.r2, self.complexity, complexity_weight, r2_floor)

    def ranked(
        self,
        edge: int,
        complexity_weight: float = DEFAULT_COMPLEXITY_WEIGHT,
        r2_floor: float = DEFAULT_R2_FLOOR,
        top: int | None = None,
    ) -> list[CandidateFit]:
        """Valid candidates of one edge, best first (ties keep the library order)."""
        s = self.scores(complexity_weight, r2_floor)[edge]
        # scores within 0.05 decades count as equal: the library order (simpler first) decides
        valid = [f for f in range(len(self.names)) if math.isfinite(float(s[f]))]
        order = sorted(valid, key=lambda f: (round(float(s[f]) / 0.05), f))
        out = []
        for f in order:
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
        self,
        complexity_weight: float = DEFAULT_COMPLEXITY_WEIGHT,
        r2_floor: float = DEFAULT_R2_FLOOR,
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
            if fu.requires_grad:  # a constant function has no graph
                (g,) = torch.autograd.grad(fu.sum(), u, allow_unused=True)
            else:
                g = None
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
    x = x.detach().to("cpu", torch.float64)  # small problems: CPU float64 wherever the model is
    y = y.detach().to("cpu", torch.float64)
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
    items: list[object] = list(library)
    funcs = [f for f in items if isinstance(f, SymbolicFunction)]
    if len(funcs) == len(items):
        return funcs
    names = [f for f in items if isinstance(f, str)]
    if len(names) != len(items):
        raise ConfigError("library must be function names (strings) from kan_core.functions")
    return resolve_library(dict.fromkeys(names))  # de-duplicated, order kept


# ------------------------------------------------------------------------------------------
# Model level: suggest / fix / unfix / auto_symbolic
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeChoice:
    """The function fixed on edge (layer, i → j)."""

    layer: int
    i: int
    j: int
    fit: CandidateFit


@dataclass(frozen=True)
class NumericEdge:
    """An edge left numeric by auto_symbolic: its best candidate (if any) missed the threshold."""

    layer: int
    i: int
    j: int
    best_name: str | None
    best_r2: float | None


@dataclass(frozen=True)
class AutoSymbolicReport:
    fixed: list[EdgeChoice]
    numeric: list[NumericEdge]
    already_symbolic: int  # live edges that were symbolic before the call (left unchanged)
    inactive: int  # pruned edges and edges into nodes that reach no output
    elapsed_s: float
    #: live numeric edges not tried because the time budget ran out (still splines)
    out_of_time: list[tuple[int, int, int]] = field(default_factory=list)


def _sample_rows(x: torch.Tensor, max_points: int | None) -> torch.Tensor:
    if max_points is None or x.shape[0] <= max_points:
        return x
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:max_points]
    return x[idx.sort().values.to(x.device)]


def _model_input(model: KAN, x: torch.Tensor) -> torch.Tensor:
    p = next(model.parameters())
    if x.dim() != 2 or x.shape[1] != model.width[0]:
        raise ConfigError(f"x must have shape (rows, {model.width[0]}), got {tuple(x.shape)}")
    return x.to(device=p.device, dtype=p.dtype)


def _check_edge(model: KAN, layer: int, i: int, j: int) -> None:
    if not 0 <= layer < len(model.layers):
        raise ConfigError(
            f"layer {layer} does not exist: the model has layers 0..{len(model.layers) - 1}"
        )
    model.layers[layer]._check_edge(i, j)


def live_edges(model: KAN) -> list[torch.Tensor]:
    """Per layer, bool (out, in): edge not pruned and its output node reaches a model output."""
    reach = torch.ones(model.width[-1], dtype=torch.bool, device=model.layers[-1].mask.device)
    live: list[torch.Tensor] = []
    for layer in reversed(model.layers):
        m = (layer.mask > 0) & reach[:, None]
        live.append(m)
        reach = m.any(0)
    return live[::-1]


@torch.no_grad()
def _layer_data(model: KAN, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-activations (batch, in), post-activations (batch, out, in)) of one layer."""
    _, traces = model.forward_with_activations(x)
    return traces[layer].inputs, traces[layer].edge_values


def suggest(
    model: KAN,
    x: torch.Tensor,
    layer: int,
    i: int,
    j: int,
    library: Iterable[str] | None = None,
    top: int = 8,
    complexity_weight: float = DEFAULT_COMPLEXITY_WEIGHT,
    max_points: int | None = 512,
) -> list[CandidateFit]:
    """Ranked candidate functions for edge (layer, i → j), fitted on the edge's activations."""
    _check_edge(model, layer, i, j)
    xin = _sample_rows(_model_input(model, x), max_points)
    pre, post = _layer_data(model, xin, layer)
    fits = fit_edge_candidates(pre[:, i][None], post[:, j, i][None], library)
    return fits.ranked(0, complexity_weight, top=top)


def fix(
    model: KAN, x: torch.Tensor, layer: int, i: int, j: int, name: str, max_points: int | None = 512
) -> CandidateFit:
    """Fit function `name` to edge (layer, i → j) and make the edge symbolic with it."""
    _check_edge(model, layer, i, j)
    xin = _sample_rows(_model_input(model, x), max_points)
    pre, post = _layer_data(model, xin, layer)
    fits = fit_edge_candidates(pre[:, i][None], post[:, j, i][None], [name])
    ranked = fits.ranked(0)
    if not ranked:
        raise SymbolicFitError(
            f"{name!r} gives non-finite values on the data of edge (layer {layer}, {i}→{j}) "
            "for every tried a, b; choose another function"
        )
    fit = ranked[0]
    model.layers[layer].set_symbolic(i, j, fit.name, fit.a, fit.b, fit.c, fit.d)
    return fit


def unfix(model: KAN, layer: int, i: int, j: int) -> None:
    """Make edge (layer, i → j) numeric again (its spline weights were kept)."""
    _check_edge(model, layer, i, j)
    model.layers[layer].clear_symbolic(i, j)


def auto_symbolic(
    model: KAN,
    x: torch.Tensor,
    r2_threshold: float = 0.99,
    complexity_weight: float = DEFAULT_COMPLEXITY_WEIGHT,
    library: Iterable[str] | None = None,
    max_points: int | None = 512,
    time_budget_s: float | None = None,
    edges_per_batch: int = AUTO_SYMBOLIC_BATCH,
) -> AutoSymbolicReport:
    """Fix every live numeric edge to its best candidate if that reaches `r2_threshold`.

    Layer by layer: each layer is fitted on the inputs it sees once the layers before it are
    symbolic. Edges whose best R² is below the threshold keep their spline and are reported.
    Edges are fitted `edges_per_batch` at a time. With `time_budget_s`, the first batch has
    `AUTO_SYMBOLIC_FIRST_TIMED` edges and each later one as many as the seconds per edge so
    far say fit in the time left; once the budget is spent no batch starts: the edges fixed so
    far stay fixed (each one whole), the rest stay splines and are listed in `out_of_time` (a
    later call continues with them).
    """
    if not (math.isfinite(r2_threshold) and r2_threshold <= 1.0):
        raise ConfigError(f"r2_threshold must be a number ≤ 1, got {r2_threshold!r}")
    if not (math.isfinite(complexity_weight) and complexity_weight >= 0):
        raise ConfigError(f"complexity_weight must be a number ≥ 0, got {complexity_weight!r}")
    if time_budget_s is not None and not time_budget_s >= 0:
        raise ConfigError(f"time_budget_s must be ≥ 0 seconds or None, got {time_budget_s!r}")
    if edges_per_batch < 1:
        raise ConfigError(f"edges_per_batch must be ≥ 1, got {edges_per_batch!r}")
    funcs = _resolve(library)
    t0 = time.perf_counter()
    deadline = math.inf if time_budget_s is None else t0 + time_budget_s
    xin = _sample_rows(_model_input(model, x), max_points)
    live = live_edges(model)
    fixed: list[EdgeChoice] = []
    numeric: list[NumericEdge] = []
    out_of_time: list[tuple[int, int, int]] = []
    already = inactive = tried = 0
    spent = 0.0
    for l, layer in enumerate(model.layers):
        todo = live[l] & (layer.sym_mask == 0)
        already += int((live[l] & (layer.sym_mask > 0)).sum())
        inactive += int((~live[l]).sum())
        js, is_ = torch.nonzero(todo, as_tuple=True)
        if len(js) == 0:
            continue
        pre = post = None
        start = 0
        while start < len(js):
            now = time.perf_counter()
            if now >= deadline:
                late = zip(is_[start:], js[start:], strict=True)
                out_of_time += [(l, int(i), int(j)) for i, j in late]
                break
            n = edges_per_batch
            if math.isfinite(deadline):  # a batch that should end by the deadline
                rate = spent / tried if tried else None  # seconds per edge so far
                n = min(n, AUTO_SYMBOLIC_FIRST_TIMED if rate is None else
                        max(1, int((deadline - now) / rate)))  # fmt: skip
            bj, bi = js[start : start + n], is_[start : start + n]
            start += len(bj)
            if pre is None or post is None:  # the layer's data, once it is needed
                pre, post = _layer_data(model, xin, l)
            fits = fit_edge_candidates(pre[:, bi].T, post[:, bj, bi].T, funcs)
            spent, tried = spent + time.perf_counter() - now, tried + len(bj)
            for e in range(len(bj)):
                i, j = int(bi[e]), int(bj[e])
                ranked = fits.ranked(e, complexity_weight)
                passing = [c for c in ranked if c.r2 >= r2_threshold]
                if passing:
                    best = passing[0]
                    layer.set_symbolic(i, j, best.name, best.a, best.b, best.c, best.d)
                    fixed.append(EdgeChoice(l, i, j, best))
                else:
                    top = max(ranked, key=lambda c: c.r2) if ranked else None
                    numeric.append(
                        NumericEdge(l, i, j, top.name if top else None, top.r2 if top else None)
                    )
    elapsed = time.perf_counter() - t0
    return AutoSymbolicReport(fixed, numeric, already, inactive, elapsed, out_of_time)


# ------------------------------------------------------------------------------------------
# Formula: compose, undo scaling, simplify, round, refit, Pareto list
# ------------------------------------------------------------------------------------------


class _Scaler(Protocol):
    mean: torch.Tensor
    std: torch.Tensor


@dataclass(frozen=True)
class FormulaCandidate:
    expr: sympy.Expr
    complexity: int  # nodes in the expression tree
    r2: float
    rmse: float


@dataclass(frozen=True)
class OutputFormula:
    """One output's formula in the original units of the columns."""

    output: str  # original output column name
    symbol: sympy.Symbol  # safe symbol for the output
    expr: sympy.Expr  # simplified, rounded, constants refitted
    exact_expr: sympy.Expr  # composed from the edges as they are (before rounding and refit)
    r2: float  # of `expr` on the data given
    rmse: float
    network_r2: float  # of the network on the same data
    network_rmse: float
    exact_max_abs_diff: float  # max |exact_expr − network| on the data (float tolerance)
    pareto: list[FormulaCandidate]  # complexity ascending, error descending; includes `expr`
    # what the user should know: numeric edges left (a partial formula), rewrites skipped
    # because the expression was too large (`FormulaBounds`)
    notes: tuple[str, ...] = ()
    # edges (layer, i, j) still numeric, shown as placeholders φ in `expr`: a partial formula
    # (display only: r2, rmse and exact_max_abs_diff are NaN, `pareto` is empty)
    numeric_edges: tuple[tuple[int, int, int], ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.numeric_edges)


@dataclass(frozen=True)
class FormulaResult:
    inputs: SymbolMap
    outputs: SymbolMap
    formulas: list[OutputFormula]
    numeric_edges: tuple[tuple[int, int, int], ...] = ()  # live edges still numeric (all outputs)

    @property
    def complete(self) -> bool:
        """True when no formula holds a placeholder for a numeric edge."""
        return not self.numeric_edges

    def exprs(self) -> dict[str, sympy.Expr]:
        return {f.output: f.expr for f in self.formulas}


@dataclass(frozen=True)
class FormulaBounds:
    """Size limits that keep every sympy rewrite of `formula` short (sizes are tree nodes).

    A rewrite whose input is larger, or whose result would be larger (estimated before it
    runs), is skipped: the formula keeps the form it had, and `OutputFormula.notes` says so."""

    max_expand_nodes: int = 2_000  # estimated size of an expansion's result
    max_rewrite_nodes: int = 1_500  # input of powsimp / factor_terms / trigonometric expansion
    max_trig_terms: int = 8  # additive terms one sin/cos/tan(h) may expand into
    max_pool_terms: int = 40  # terms the Pareto forward selection chooses from
    # constant refitting and snapping per output, in work units (`_Limits`): a few s of a core
    max_refit_work: int = 3_000_000_000

    def validate(self) -> None:
        for name in (
            "max_expand_nodes", "max_rewrite_nodes", "max_trig_terms", "max_pool_terms",
            "max_refit_work",
        ):  # fmt: skip
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ConfigError(f"FormulaBounds.{name} must be an integer ≥ 1, got {v!r}")


def numeric_edges(model: KAN) -> list[tuple[int, int, int]]:
    """Live edges (layer, i, j) that are still numeric (splines), sorted."""
    live = live_edges(model)
    return sorted(
        (l, int(i), int(j))
        for l, layer in enumerate(model.layers)
        for j, i in torch.nonzero(live[l] & (layer.sym_mask == 0)).tolist()
    )


def compose_expressions(
    model: KAN, inputs: Sequence[sympy.Expr], allow_numeric: bool = False
) -> list[sympy.Expr]:
    """The model's outputs as sympy expressions of `inputs` (one per input node), exactly.

    Every live edge must be symbolic, else FormulaIncompleteError lists the numeric ones. With
    `allow_numeric` a numeric edge (layer, i → j) is composed as the placeholder
    φ_{layer,i,j}(its input) (`export.edge_placeholder`, the whole edge value, mask included);
    in the first layer its input is the column's symbol itself when `inputs[i]` is a function
    of that one column (the input standardisation is part of the spline).
    """
    live = live_edges(model)
    missing = numeric_edges(model)
    if missing and not allow_numeric:
        raise FormulaIncompleteError(missing)
    nodes = list(inputs)
    for l, layer in enumerate(model.layers):
        names = layer.sym_names
        affine = layer.sym_affine.detach().double().cpu().tolist()
        mask = layer.mask.detach().double().cpu().tolist()
        bias = layer.bias.detach().double().cpu().tolist()
        out = []
        for j in range(layer.out_dim):
            terms: list[sympy.Expr] = [sympy.Float(bias[j])]
            for i in range(layer.in_dim):
                if not live[l][j, i]:
                    continue
                if not names[j][i]:  # numeric (allow_numeric): a named placeholder
                    arg = nodes[i]
                    if l == 0 and len(arg.free_symbols) == 1:
                        (arg,) = arg.free_symbols
                    terms.append(edge_placeholder(l, i, j)(arg))
                    continue
                a, b, c, d = (sympy.Float(v) for v in affine[j][i])
                f = get_function(names[j][i]).sympy_fn
                term = c * f(a * nodes[i] + b) + d
                if mask[j][i] != 1.0:
                    term = sympy.Float(mask[j][i]) * term
                terms.append(term)
            out.append(sympy.Add(*terms))
        nodes = out
    return nodes


def _tree_size(expr: sympy.Basic, limit: int | None = None) -> int:
    """Nodes of the expression tree (a repeated subtree counts each time); with `limit`,
    counting stops at limit + 1."""
    n = 0
    for _ in sympy.preorder_traversal(expr):
        n += 1
        if limit is not None and n > limit:
            break
    return n


_SIZE_CAP = 1e15


def _expanded_size(expr: sympy.Basic) -> float:
    """Estimated tree size of `sympy.expand(expr, deep=True, mul=True, multinomial=True)`,
    without expanding: a product of sums has the product of their term counts, (a sum of t
    terms)^n has C(n + t − 1, n) terms; function arguments are expanded in place."""
    memo: dict[sympy.Basic, tuple[float, float]] = {}

    def walk(e: sympy.Basic) -> tuple[float, float]:  # (additive terms, nodes)
        if not e.args:
            return 1.0, 1.0
        hit = memo.get(e)
        if hit is not None:
            return hit
        parts = [walk(a) for a in e.args]
        if isinstance(e, sympy.Add):
            terms, nodes = sum(t for t, _ in parts), sum(n for _, n in parts) + 1
        elif isinstance(e, sympy.Mul):
            terms = math.prod(t for t, _ in parts)
            nodes = terms * (sum(n / t for t, n in parts) + 1) + 1
        elif isinstance(e, sympy.Pow) and e.exp.is_Integer and abs(int(e.exp)) > 1:
            (tb, nb), (_, ne) = parts
            k = min(abs(int(e.exp)), 10_000)
            count = math.exp(
                min(60.0, math.lgamma(k + tb) - math.lgamma(k + 1) - math.lgamma(tb))
            )  # C(k + tb − 1, k) monomials
            poly = count * (k * nb / tb + 2) + ne
            terms, nodes = (count, poly) if e.exp > 0 else (1.0, poly + 2)
        else:  # a function, or a power kept as it is: its arguments are expanded in place
            terms, nodes = 1.0, sum(n for _, n in parts) + 1
        out = (min(terms, _SIZE_CAP), min(nodes, _SIZE_CAP))
        memo[e] = out
        return out

    try:
        return walk(expr)[1]
    except RecursionError:  # pragma: no cover - a pathologically deep tree
        return _SIZE_CAP


class _Limits:
    """One output's `FormulaBounds` at work: the notes on what was skipped and the constant
    fitting work left.

    Work units model the cost of the torch evaluator: an evaluation of an expression of N
    nodes on R rows costs N·(R + 3000), a Levenberg–Marquardt step with P free constants
    N·((P + 3)·R + 60000) (a forward-mode Jacobian and a few trial evaluations); the fixed
    terms are the per-operation overhead. About 2 ns each on one core."""

    def __init__(self, bounds: FormulaBounds | None = None) -> None:
        self.bounds = bounds or FormulaBounds()
        self._notes: dict[str, str] = {}
        self.work_left = float(self.bounds.max_refit_work)

    @property
    def notes(self) -> list[str]:
        return list(self._notes.values())

    def note(self, text: str, kind: str | None = None) -> None:
        """Record `text`; only the first note of each `kind` (default: the text) is kept."""
        self._notes.setdefault(kind or text, text)

    def too_large(self, step: str, expr: sympy.Basic) -> None:
        size = _tree_size(expr, 10**6)
        self.note(f"{step} skipped: expression too large ({size} nodes)", kind=step)

    def charge(self, units: float) -> bool:
        """Take `units` of work if that much is left."""
        if units > self.work_left:
            return False
        self.work_left -= units
        return True

    def lm_steps(self, wanted: int, nodes: int, free: int, rows: int) -> int:
        """Levenberg–Marquardt steps granted (≤ wanted), at most half the work left."""
        per_step = nodes * ((free + 3) * rows + 60_000)
        granted = max(0, min(wanted, int(0.5 * self.work_left // per_step)))
        self.work_left -= granted * per_step
        return granted


def _simplify(expr: sympy.Expr, limits: _Limits | None = None) -> sympy.Expr:
    """Distribute constants into sums and expand small polynomials; never blow the tree up
    (skipped, with a note, when the expansion would exceed `max_expand_nodes`)."""
    limits = limits or _Limits()
    if _expanded_size(expr) > limits.bounds.max_expand_nodes:
        limits.too_large("simplification", expr)
        return expr
    try:
        expanded = sympy.expand(
            expr,
            deep=True,
            mul=True,
            multinomial=True,
            power_exp=False,
            power_base=False,
            log=False,
        )
    except (TypeError, ValueError, RecursionError):  # pragma: no cover - defensive
        return expr
    return expanded if _tree_size(expanded) <= 2 * _tree_size(expr) + 10 else expr


def _metrics(pred: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(R², RMSE); both NaN when the prediction is non-finite anywhere."""
    if not bool(torch.isfinite(pred).all()):
        return math.nan, math.nan
    sse = float(((pred - y) ** 2).sum())
    return r2_score(y, pred), math.sqrt(sse / max(1, y.numel()))


def _mse(compiled: CompiledExpression, x: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> float:
    with torch.no_grad():
        v = float(((compiled(x, p) - y) ** 2).mean())
    return v if math.isfinite(v) else math.inf


def _refit_constants(
    compiled: CompiledExpression,
    x: torch.Tensor,
    y: torch.Tensor,
    p0: torch.Tensor,
    steps: int = 60,
    frozen: Iterable[int] = (),
    must_improve: bool = True,
) -> torch.Tensor:
    """Levenberg–Marquardt on the expression's Float constants (float64), `frozen` ones held.

    The Jacobian comes from forward-mode autodiff (one pass per free constant). Returns p0 when
    the fit fails or (with `must_improve`) does not lower the error."""
    held = set(frozen)
    free = torch.tensor([k for k in range(p0.numel()) if k not in held], dtype=torch.long)
    if free.numel() == 0:
        return p0
    p0 = p0.detach()

    def residual(q: torch.Tensor) -> torch.Tensor:
        return compiled(x, p0.index_put((free,), q)) - y

    q = p0[free].clone()
    base = _mse(compiled, x, y, p0)
    loss, lam = base, 1e-3
    eye = torch.eye(free.numel(), dtype=q.dtype)
    for _ in range(steps):
        try:
            jac = torch.func.jacfwd(residual)(q)  # (n, F)
        except RuntimeError:  # pragma: no cover - an op without forward-mode support
            return p0
        r = residual(q).detach()
        if not (bool(torch.isfinite(jac).all()) and bool(torch.isfinite(r).all())):
            break
        jtj, jtr = jac.T @ jac, jac.T @ r
        improved = False
        for _ in range(8):
            a = (
                jtj
                + lam * torch.diag(torch.diagonal(jtj))
                + 1e-12 * (1 + jtj.diagonal().max()) * eye
            )
            try:
                step = torch.linalg.solve(a, -jtr)
            except RuntimeError:  # pragma: no cover - singular even with damping
                lam *= 10.0
                continue
            trial = q + step
            err = _mse(compiled, x, y, p0.index_put((free,), trial))
            if err < loss:
                q, lam, improved = trial, max(lam / 3.0, 1e-12), True
                converged = loss - err <= 1e-12 * loss
                loss = err
                break
            lam *= 10.0
        if not improved or converged:
            break
    p = p0.index_put((free,), q)
    ok = bool(torch.isfinite(p).all()) and math.isfinite(loss)
    if must_improve:
        ok = ok and loss < base
    return p if ok else p0


def _round_sig(v: float, digits: int) -> float:
    return float(f"{v:.{digits}g}") if math.isfinite(v) else v


def _snap_candidates(v: float) -> list[tuple[float, sympy.Expr]]:
    """Exact values a fitted constant may stand for: an integer, or a multiple of π/2."""
    out: list[tuple[float, sympy.Expr]] = []
    r = round(v)
    if abs(v - r) <= 0.05 * max(1.0, abs(r)):
        out.append((float(r), sympy.Integer(r)))
    k = round(v / (math.pi / 2))
    if 0 < abs(k) <= 8 and abs(v - k * math.pi / 2) <= 0.01 * max(1.0, abs(v)):
        out.append((k * math.pi / 2, sympy.pi * sympy.Rational(k, 2)))
    return out


def _finalise(
    expr: sympy.Expr,
    symbols: Sequence[sympy.Symbol],
    x: torch.Tensor,
    y: torch.Tensor,
    digits: int,
    refit: bool,
    snap_tolerance: float = 0.05,
    snap_refit: bool = True,
    max_snap_refits: int = 40,
    limits: _Limits | None = None,
) -> sympy.Expr:
    """Refit the constants (optional), then replace constants by integers or multiples of π/2
    one at a time — the others refitted each time — where the error grows by at most
    `snap_tolerance` (relative); finally round the rest to `digits` significant digits.
    Refits and snaps stop when `limits`' work is spent (the constants are then kept as they
    are, rounded), with a note."""
    limits = limits or _Limits()
    compiled = compile_expression(expr, symbols)
    nodes, rows, n_const = _tree_size(expr), x.shape[0], len(compiled.constants)
    size = f"{nodes} nodes, {n_const} constants"
    p = torch.tensor([float(c) for c in compiled.constants], dtype=torch.float64)
    if refit and n_const:
        steps = limits.lm_steps(60, nodes, n_const, rows)
        if steps < 60:
            limits.note(
                f"constant refit limited to {steps} steps: expression too large ({size})",
                kind="refit",
            )
        if steps:
            p = _refit_constants(compiled, x, y, p, steps=steps)
    ref = _mse(compiled, x, y, p)
    budget = ref * (1 + snap_tolerance) + 1e-12 * float(y.var()) + 1e-30
    exact: dict[int, sympy.Expr] = {}
    refits = 0
    evaluation = nodes * (rows + 3_000)
    spent = False
    for _ in range(3):  # a snap can make another one possible: repeat while anything changes
        changed = False
        order = sorted(range(p.numel()), key=lambda k: abs(float(p[k]) - round(float(p[k]))))
        for k in (k for k in order if k not in exact):
            for value, symbolic in _snap_candidates(float(p[k])):
                if not limits.charge(2 * evaluation):
                    spent = True
                    break
                trial = p.clone()
                trial[k] = value
                if (
                    snap_refit
                    and refit
                    and refits < max_snap_refits
                    and (_mse(compiled, x, y, trial) > budget)
                ):
                    steps = limits.lm_steps(20, nodes, n_const - len(exact) - 1, rows)
                    if steps:
                        refits += 1
                        trial = _refit_constants(
                            compiled, x, y, trial, steps=steps, frozen=[*exact, k],
                            must_improve=False,
                        )  # fmt: skip
                if _mse(compiled, x, y, trial) <= budget:
                    p, exact[k], changed = trial, symbolic, True
                    break
            if spent:
                break
        if spent:
            limits.note(
                f"constant snapping stopped early: expression too large ({size})", kind="snap"
            )
        if spent or not changed:
            break
    rounded = torch.tensor([_round_sig(float(v), digits) for v in p], dtype=torch.float64)
    repl: dict[sympy.Basic, sympy.Basic] = {
        c: exact[k] if k in exact else sympy.Float(float(rounded[k]))
        for k, c in enumerate(compiled.constants)
    }
    return _round_floats(_tidy(expr.xreplace(repl), limits), digits)


def _tidy(expr: sympy.Expr, limits: _Limits | None = None) -> sympy.Expr:
    """Exact rewrites that shorten the tree: exp(a + log x) → e^a·x, products of powers,
    common numeric factors (c·x/(c·y − c) → x/(y − 1)); each only on trees within bounds."""
    limits = limits or _Limits()
    bounds = limits.bounds
    size = _tree_size(expr, bounds.max_rewrite_nodes)
    if size > bounds.max_rewrite_nodes:
        limits.too_large("tidying", expr)
        return expr
    best, best_size = expr, size
    try:
        powers = sympy.powsimp(sympy.expand_power_exp(expr))
        cands = [powers]
        if _expanded_size(expr) <= bounds.max_expand_nodes:
            cands.append(sympy.expand(expr))
        if _tree_size(powers, bounds.max_rewrite_nodes) <= bounds.max_rewrite_nodes:
            cands.append(sympy.factor_terms(powers))
        for cand in cands:
            n = _tree_size(cand, best_size)
            if n < best_size:
                best, best_size = cand, n
    except (TypeError, ValueError, RecursionError):  # pragma: no cover - defensive
        pass
    return best


def _round_floats(expr: sympy.Expr, digits: int) -> sympy.Expr:
    repl = {}
    for c in expr.atoms(sympy.Float):
        v = _round_sig(float(c), digits)
        # full binary precision of the rounded decimal: what is shown is what is evaluated
        repl[c] = sympy.Integer(int(v)) if v == int(v) and abs(v) < 1e15 else sympy.Float(v)
    return expr.xreplace(repl)


_TRIG_EXPANDABLE = (sympy.sin, sympy.cos, sympy.tan, sympy.sinh, sympy.cosh, sympy.tanh)


def _trig_terms(f: sympy.Basic) -> float:
    """About how many terms expand_trig makes of f(arg): 2^(m−1) for m additive terms in arg,
    times k for each integer multiple k·u among them (multiple-angle formulas)."""
    terms = sympy.Add.make_args(f.args[0])
    n = 2.0 ** min(len(terms) - 1, 60)
    for t in terms:
        k, _ = t.as_coeff_Mul(rational=True)
        if k.is_Integer and abs(int(k)) > 1:
            n *= min(abs(int(k)), 10**6)
    return min(n, _SIZE_CAP)


def _expand_trig_bounded(expr: sympy.Expr, max_terms: int) -> tuple[sympy.Expr, list[float]]:
    """expand_trig on each sin/cos/tan(h) (innermost first) that expands into at most
    `max_terms` terms; the others are kept. Returns the result and the skipped functions'
    estimated term counts."""
    memo: dict[sympy.Basic, sympy.Basic] = {}
    skipped: list[float] = []

    def walk(e: sympy.Basic) -> sympy.Basic:
        if not e.args:
            return e
        hit = memo.get(e)
        if hit is not None:
            return hit
        args = tuple(walk(a) for a in e.args)
        out = e.func(*args) if args != e.args else e
        if isinstance(out, _TRIG_EXPANDABLE):
            n = _trig_terms(out)
            if 1 < n <= max_terms:
                out = sympy.expand_trig(out, deep=False)
            elif n > max_terms:
                skipped.append(n)
        memo[e] = out
        return out

    return walk(expr), skipped  # type: ignore[return-value]


def _term_pool(expr: sympy.Expr, limits: _Limits | None = None) -> list[sympy.Expr]:
    """Additive terms of `expr` expanded (and trig-expanded), without numeric factors; the
    expansions only within bounds (else the unexpanded terms, with a note)."""
    limits = limits or _Limits()
    bounds = limits.bounds
    pool: dict[sympy.Expr, None] = {}
    variants = [expr]
    size = _tree_size(expr, bounds.max_rewrite_nodes)
    if size > bounds.max_rewrite_nodes:
        limits.too_large("trigonometric expansion (term search)", expr)
    else:
        try:
            trig, skipped = _expand_trig_bounded(expr, bounds.max_trig_terms)
            if skipped:
                limits.note(
                    kind="trig",
                    text=f"trigonometric expansion (term search) skipped for {len(skipped)} "
                    f"function(s): too many terms (about {max(skipped):.3g})",
                )
            if trig != expr and _tree_size(trig, 4 * size + 20) <= 4 * size + 20:
                variants.append(trig)
        except (TypeError, ValueError, RecursionError):  # pragma: no cover - defensive
            pass
    for v in variants:
        if _expanded_size(v) <= bounds.max_expand_nodes:
            v = sympy.expand(v, power_exp=False, log=False)
        else:
            limits.too_large("expansion (term search)", v)
        for t in sympy.Add.make_args(v):
            if t.is_number:
                continue
            _, rest = t.as_coeff_Mul()
            pool[rest] = None
    return list(pool)


def _pareto(
    expr: sympy.Expr,
    symbols: Sequence[sympy.Symbol],
    x: torch.Tensor,
    y: torch.Tensor,
    digits: int,
    refit: bool,
    max_terms: int = 6,
    limits: _Limits | None = None,
) -> list[FormulaCandidate]:
    """`expr` and sparser alternatives: forward selection over its expanded additive terms
    (linear least squares; at most `bounds.max_pool_terms` terms, those most correlated with
    y), each candidate refitted and rounded; the Pareto front of tree size against RMSE,
    simplest first."""
    limits = limits or _Limits()
    bounds = limits.bounds

    def candidate(e: sympy.Expr) -> FormulaCandidate:
        r2, rmse = _metrics(compile_expression(e, symbols)(x), y)
        return FormulaCandidate(e, _tree_size(e), r2, rmse)

    mean_y = _round_floats(sympy.Float(float(y.mean())), digits)
    found = [candidate(expr), candidate(mean_y)]
    pool = _term_pool(expr, limits)
    if len(pool) > 1:
        cols, terms = [], []
        for t in pool:
            try:
                v = compile_expression(t, symbols)(x)
            except ExportError:  # a rewrite outside the evaluator's functions: not a candidate
                continue
            if bool(torch.isfinite(v).all()) and float(v.std()) > 0:
                cols.append(v)
                terms.append(t)
        if len(terms) > bounds.max_pool_terms:  # screen by |correlation| with y
            yc = y - y.mean()
            corr = [
                abs(float((c - c.mean()) @ yc)) / (float((c - c.mean()).norm()) + 1e-300)
                for c in cols
            ]
            keep = sorted(
                sorted(range(len(terms)), key=lambda k: -corr[k])[: bounds.max_pool_terms]
            )
            limits.note(
                f"term search limited to the {bounds.max_pool_terms} of {len(terms)} terms most "
                "correlated with the data",
            )
            cols, terms = [cols[k] for k in keep], [terms[k] for k in keep]
        chosen: list[int] = []
        ones = torch.ones_like(y)[:, None]
        for _ in range(min(max_terms, len(terms))):
            best: tuple[float, int, torch.Tensor] | None = None
            for k in range(len(terms)):
                if k in chosen:
                    continue
                a = torch.cat([ones] + [cols[m][:, None] for m in chosen + [k]], 1)
                sol = torch.linalg.lstsq(a, y[:, None]).solution[:, 0]
                err = float(((a @ sol - y) ** 2).mean())
                if best is None or err < best[0]:
                    best = (err, k, sol)
            if best is None:
                break
            _, k, sol = best
            chosen.append(k)
            e = sympy.Float(float(sol[0])) + sympy.Add(
                *[sympy.Float(float(sol[n + 1])) * terms[m] for n, m in enumerate(chosen)]
            )
            simpler = _finalise(e, symbols, x, y, digits, refit, max_snap_refits=8, limits=limits)
            found.append(candidate(simpler))
            if best[0] <= 1e-12 * float(y.var()):
                break
    front: list[FormulaCandidate] = []
    ordered = sorted(found, key=lambda c: (c.complexity, _nan_last(c.rmse)))
    for c in ordered:
        if math.isfinite(c.rmse) and (not front or c.rmse < front[-1].rmse):
            front.append(c)
    return front


def _nan_last(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def formula(
    model: KAN,
    x: torch.Tensor,
    y: torch.Tensor,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    x_scaler: _Scaler | None = None,
    y_scaler: _Scaler | None = None,
    digits: int = 4,
    refit: bool = True,
    max_points: int | None = 4096,
    allow_numeric: bool = False,
    bounds: FormulaBounds | None = None,
) -> FormulaResult:
    """One formula per output, in the original units of the columns.

    x (rows, n_in), y (rows, n_out) are the data in original units; the network sees
    `x_scaler.transform(x)` and its outputs are mapped back with `y_scaler`. Every edge that
    reaches an output must be symbolic (FormulaIncompleteError otherwise), unless
    `allow_numeric`: then an output that depends on numeric edges gets a *partial* formula
    with placeholders φ_{l,i,j}(·) for them (`numeric_edges`, a note; for display only: no
    refit, R², RMSE and pareto left empty). Sympy rewrites stay within `bounds`; what was
    skipped is told in `notes`.
    """
    if not (isinstance(digits, int) and 1 <= digits <= 15):
        raise ConfigError(f"digits must be an integer from 1 to 15, got {digits!r}")
    bounds = bounds or FormulaBounds()
    bounds.validate()
    n_in, n_out = model.width[0], model.width[-1]
    input_names = (
        list(input_names) if input_names is not None else [f"x{k + 1}" for k in range(n_in)]
    )
    if output_names is None:
        output_names = ["y"] if n_out == 1 else [f"y{k + 1}" for k in range(n_out)]
    output_names = list(output_names)
    if len(input_names) != n_in or len(output_names) != n_out:
        raise ConfigError(
            f"the model has {n_in} inputs and {n_out} outputs; got {len(input_names)} input "
            f"names and {len(output_names)} output names"
        )
    if y.dim() == 1:
        y = y[:, None]
    if x.dim() != 2 or x.shape[1] != n_in or y.shape != (x.shape[0], n_out):
        raise ConfigError(
            f"x must be (rows, {n_in}) and y (rows, {n_out}); "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    rows = _sample_rows(torch.arange(x.shape[0])[:, None], max_points)[:, 0]
    x64, y64 = x[rows].detach().double().cpu(), y[rows].detach().double().cpu()
    in_map = make_symbols(input_names)
    out_map = make_symbols(output_names, taken=[s.name for s in in_map.symbols])
    syms = list(in_map.symbols)
    scaled_inputs: list[sympy.Expr] = list(syms)
    if x_scaler is not None:
        m, s = x_scaler.mean.double().tolist(), x_scaler.std.double().tolist()
        scaled_inputs = [(v - sympy.Float(m[k])) / sympy.Float(s[k]) for k, v in enumerate(syms)]
    raw = compose_expressions(model, scaled_inputs, allow_numeric=allow_numeric)
    with torch.no_grad():
        xin = x64 if x_scaler is None else (x64 - x_scaler.mean.double()) / x_scaler.std.double()
        net = model(xin.to(next(model.parameters()))).double().cpu()
    if y_scaler is not None:
        ym, ys = y_scaler.mean.double().tolist(), y_scaler.std.double().tolist()
        raw = [e * sympy.Float(ys[k]) + sympy.Float(ym[k]) for k, e in enumerate(raw)]
        net = net * y_scaler.std.double() + y_scaler.mean.double()
    formulas = []
    for k, exact in enumerate(raw):
        target = y64[:, k]
        net_r2, net_rmse = _metrics(net[:, k], target)
        limits = _Limits(bounds)
        edges = placeholder_edges(exact)
        if edges:  # partial: shown, never evaluated
            limits.note(numeric_edges_note(edges))
            shown = _round_floats(_tidy(_simplify(exact, limits), limits), digits)
            formulas.append(
                OutputFormula(
                    output_names[k], out_map.symbols[k], shown, exact, math.nan, math.nan,
                    net_r2, net_rmse, math.nan, [], tuple(limits.notes), tuple(edges),
                )
            )  # fmt: skip
            continue
        exact_pred = compile_expression(exact, syms)(x64)
        diff = float((exact_pred - net[:, k]).abs().max()) if exact_pred.numel() else 0.0
        full = _finalise(_simplify(exact, limits), syms, x64, target, digits, refit, limits=limits)
        front = _pareto(full, syms, x64, target, digits, refit, limits=limits)
        # the reported formula: the simplest one as accurate as the full composition
        _, full_rmse = _metrics(compile_expression(full, syms)(x64), target)
        allowed = _nan_last(full_rmse) * 1.1 + 1e-3 * float(target.std())
        final = next((c.expr for c in front if c.rmse <= allowed), full)
        r2, rmse = _metrics(compile_expression(final, syms)(x64), target)
        formulas.append(
            OutputFormula(
                output_names[k], out_map.symbols[k], final, exact, r2, rmse,
                net_r2, net_rmse, diff, front, tuple(limits.notes),
            )
        )  # fmt: skip
    return FormulaResult(in_map, out_map, formulas, tuple(numeric_edges(model)))
