"""Edge bases: pure functions plus tiny modules, chosen by name through `make_basis`.

Every basis maps inputs `x (batch, in)` to features `(batch, in, K)`; a KAN layer multiplies them
with one coefficient matrix `(out, in·K)`. Range-based bases (B-spline, RBF, ReLU-KAN) expose
`set_range(lo, hi)` for grid updates; the B-spline basis also accepts arbitrary knots.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from kan_core import cpu_kernels
from kan_core.engine import Engine, basis_engine
from kan_core.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def bspline_basis_cox_de_boor(x: torch.Tensor, knots: torch.Tensor, k: int) -> torch.Tensor:
    """B-spline basis of degree k on arbitrary per-input knots (Cox–de Boor recursion).

    x: (batch, in); knots: (in, M) non-decreasing. Returns (batch, in, M - k - 1).
    Intervals are half-open [t_m, t_{m+1}), as in `scipy.interpolate.BSpline`.
    """
    xe = x.unsqueeze(-1)  # (batch, in, 1)
    t = knots.unsqueeze(0)  # (1, in, M)
    bases = ((xe >= t[..., :-1]) & (xe < t[..., 1:])).to(x.dtype)  # (batch, in, M-1)
    for p in range(1, k + 1):
        left_den = t[..., p:-1] - t[..., : -(p + 1)]
        right_den = t[..., p + 1 :] - t[..., 1:-p]
        left = (xe - t[..., : -(p + 1)]) / torch.where(left_den == 0, 1.0, left_den)
        right = (t[..., p + 1 :] - xe) / torch.where(right_den == 0, 1.0, right_den)
        left = torch.where(left_den == 0, 0.0, left)
        right = torch.where(right_den == 0, 0.0, right)
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


def _relus(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = u.abs()
    return (1.0 - a).clamp_min(0.0), (2.0 - a).clamp_min(0.0)


def b6(u: torch.Tensor) -> torch.Tensor:
    """SIX times the centred cubic cardinal B-spline, branch-free (exactly Cox–de Boor):
    relu(2-|u|)³ - 4·relu(1-|u|)³. The one written form in PyTorch; numba's and C++'s `b6`
    are the same expression."""
    r1, r2 = _relus(u)
    return torch.add(r2 * r2 * r2, r1 * r1 * r1, alpha=-4.0)


def db6_over_minus3(u: torch.Tensor) -> torch.Tensor:
    """d(6B)/du divided by -3 (callers fold the -3 into one multiply): sign(u)·(relu(2-|u|)² -
    4·relu(1-|u|)²), as numba's and C++'s `db6_over_minus3`."""
    r1, r2 = _relus(u)
    return torch.add(r2 * r2, r1 * r1, alpha=-4.0).mul_(u.sign())


def cardinal_bspline(u: torch.Tensor, k: int) -> torch.Tensor:
    """Centred cardinal B-spline of degree k ∈ {1, 2, 3}, branch-free (exactly Cox–de Boor).

    k=1: relu(1-|u|); k=2: (relu(1.5-|u|)² - 3 relu(0.5-|u|)²)/2; k=3: `b6(u)`/6.
    """
    a = u.abs()
    if k == 1:
        return torch.relu(1.0 - a)
    if k == 2:
        return (torch.relu(1.5 - a).square() - 3.0 * torch.relu(0.5 - a).square()) * 0.5
    if k == 3:
        return b6(u) * (1.0 / 6.0)
    raise ConfigError(f"cardinal_bspline supports k in 1..3, got {k}")


def rbf_basis(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, grid: int) -> torch.Tensor:
    """Gaussian bumps exp(-((x - c_m) / h)²) on `grid` centres from lo to hi (in,), h apart.
    x: (batch, in) -> (batch, in, grid)."""
    h = (hi - lo) / (grid - 1)  # (in,)
    steps = torch.arange(grid, dtype=x.dtype, device=x.device)
    centres = lo[:, None] + steps * h[:, None]  # (in, K)
    return torch.exp(-(((x.unsqueeze(-1) - centres) / h[:, None]) ** 2))


def chebyshev_basis(z: torch.Tensor, degree: int) -> torch.Tensor:
    """Chebyshev polynomials T_0..T_degree of z (batch, in) -> (batch, in, degree + 1)."""
    terms = [torch.ones_like(z), z]
    for _ in range(2, degree + 1):
        terms.append(2.0 * z * terms[-1] - terms[-2])
    return torch.stack(terms[: degree + 1], dim=-1)


def rational_basis(
    x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor
) -> torch.Tensor:
    """P(x) / (1 + |Q(x)|) per input: numerator (in, m+1) = p_0..p_m, denominator (in, n) =
    q_1..q_n (Q has no constant term). x: (batch, in) -> (batch, in, 1)."""
    m, n = numerator.shape[-1] - 1, denominator.shape[-1]
    p_pows = torch.stack([x**d for d in range(m + 1)], dim=-1)  # (batch, in, m+1)
    q_pows = torch.stack([x**d for d in range(1, n + 1)], dim=-1)  # (batch, in, n)
    p = (p_pows * numerator).sum(-1)
    q = (q_pows * denominator).sum(-1)
    return (p / (1.0 + q.abs())).unsqueeze(-1)  # (batch, in, 1)


class CubicBSplineUniform(torch.autograd.Function):
    """Fast path: 6·B_m(x) for the cubic uniform B-spline basis with a hand-written backward.

    Returns SIX times the basis (the caller folds 1/6 into its weights, which are tiny) to save
    a full-size multiply. With `numba` the fused loops of `kan_core.cpu_kernels` (one pass each
    way, CPU); else `b6` and `db6_over_minus3` in PyTorch ops.
    Reference: autograd through `cardinal_bspline(u, 3)`; tests check values and gradients.
    x: (batch, in); t0, inv_h: (in,) first knot and 1/spacing. Output (batch, in, K).
    """

    @staticmethod
    def forward(ctx, x, t0, inv_h, num_features, numba):  # type: ignore[override]
        ctx.numba = numba
        if numba:  # one fused pass instead of ~12 elementwise kernels
            if ctx.needs_input_grad[0]:
                ctx.save_for_backward(x, t0, inv_h)
            return cpu_kernels.basis6_forward(x, t0, inv_h, num_features)
        offsets = torch.arange(num_features, dtype=x.dtype, device=x.device) + 2.0
        u = ((x - t0) * inv_h).unsqueeze(-1) - offsets  # (batch, in, K), centred
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(u, inv_h)
        return b6(u)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if ctx.numba:
            x, t0, inv_h = ctx.saved_tensors
            return cpu_kernels.basis6_backward(x, t0, inv_h, grad_out), None, None, None, None
        u, inv_h = ctx.saved_tensors
        grad_x = db6_over_minus3(u).mul_(grad_out).sum(-1) * (-3.0 * inv_h)  # (batch, in)
        return grad_x, None, None, None, None


class CubicBSplineKnots(torch.autograd.Function):
    """Cubic B-spline basis on arbitrary (adaptive) knots, by the numba de Boor kernels of
    `kan_core.cpu_kernels` (CPU only, where `engine.basis_engine` says NUMBA).
    Reference: `bspline_basis_cox_de_boor`; tests check values and gradients.
    x: (batch, in); knots: (in, M). Output (batch, in, M - 4)."""

    @staticmethod
    def forward(ctx, x, knots):  # type: ignore[override]
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, knots)
        return cpu_kernels.basis_knots_forward(x, knots, knots.shape[1] - 4)

    @staticmethod
    @torch.autograd.function.once_differentiable  # numba inside: no double backward
    def backward(ctx, grad_out):  # type: ignore[override]
        x, knots = ctx.saved_tensors
        return cpu_kernels.basis_knots_backward(x, knots, grad_out), None


def uniform_knots(lo: torch.Tensor, hi: torch.Tensor, grid: int, k: int) -> torch.Tensor:
    """Knots (in, grid + 2k + 1): grid intervals on [lo, hi] extended by k on each side."""
    h = (hi - lo) / grid  # (in,)
    steps = torch.arange(-k, grid + k + 1, dtype=lo.dtype, device=lo.device)  # (M,)
    return lo[:, None] + steps[None, :] * h[:, None]


def _is_uniform(knots: torch.Tensor) -> bool:
    d = knots[:, 1:] - knots[:, :-1]
    return bool(
        torch.allclose(d, d[:, :1].expand_as(d), rtol=1e-5, atol=1e-7 * float(d.abs().max()))
    )


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class Basis(nn.Module):
    """Interface: forward(x (batch, in)) -> features (batch, in, num_features)."""

    name: str = ""
    num_features: int
    has_range: bool = False
    # the compiled form that computes this basis (`kan_core.engine`): "" = none, PyTorch only
    kernel: str = ""

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:  # pragma: no cover
        raise ConfigError(f"basis {self.name!r} has no grid to update")

    def scaled_features(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(features / scale, scale): lets fast paths skip a full-size multiply."""
        return self(x), 1.0

    def compact_features(self, x: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor | None]:
        """(features / scale (batch, in, Kc), scale, index): the features a layer multiplies, and
        per input the coefficient (0..K-1) each one goes with, (in, Kc); index None: all K in
        order, as `scaled_features`. S-KAN after selection: each node's own family only."""
        feats, scale = self.scaled_features(x)
        return feats, scale, None

    def node_features(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Features of the input nodes `nodes` (n,) alone: x (batch, n) -> (batch, n, K)."""
        raise NotImplementedError(f"basis {self.name!r} computes all its nodes at once")


class BSplineBasis(Basis):
    """B-spline basis: uniform grids take the branch-free fast path, adaptive knots Cox–de Boor."""

    name = "bspline"
    has_range = True
    knots: torch.Tensor

    def __init__(self, in_dim: int, grid: int, k: int, grid_range: tuple[float, float]) -> None:
        super().__init__()
        self.grid, self.k = grid, k
        self.num_features = grid + k
        lo = torch.full((in_dim,), float(grid_range[0]))
        hi = torch.full((in_dim,), float(grid_range[1]))
        self.register_buffer("knots", uniform_knots(lo, hi, grid, k))  # (in, grid + 2k + 1)
        self._uniform = True

    @property
    def kernel(self) -> str:  # type: ignore[override]
        return "cubic_bspline" if self.k == 3 else ""

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "grid": self.grid, "k": self.k}

    def set_knots(self, knots: torch.Tensor) -> None:
        self.knots = knots.to(self.knots)
        self._uniform = _is_uniform(self.knots)

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.knots = uniform_knots(lo.to(self.knots), hi.to(self.knots), self.grid, self.k)
        self._uniform = True

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._uniform = _is_uniform(self.knots)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, scale = self.scaled_features(x)
        return feats * scale if scale != 1.0 else feats

    def scaled_features(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        return self._scaled_features(x, self.knots)

    def node_features(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        feats, scale = self._scaled_features(x, self.knots[nodes])
        return feats * scale if scale != 1.0 else feats

    def _scaled_features(
        self, x: torch.Tensor, knots: torch.Tensor
    ) -> tuple[torch.Tensor, float]:  # x (batch, n), knots (n, M)
        numba = basis_engine(self, x) is Engine.NUMBA  # cubic only
        if self._uniform and self.k == 3:
            t0 = knots[:, 0]  # (n,)
            inv_h = 1.0 / (knots[:, 1] - t0)
            feats = CubicBSplineUniform.apply(x, t0, inv_h, self.num_features, numba)
            return feats, 1.0 / 6.0
        if numba:
            return CubicBSplineKnots.apply(x, knots.to(x.dtype)), 1.0
        return self.reference_features(x, knots), 1.0

    def reference_features(
        self, x: torch.Tensor, knots: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pure-torch reference (autograd through elementary ops); knots: the basis's own, or
        those of the nodes x holds."""
        knots = self.knots if knots is None else knots
        if self._uniform and self.k <= 3:
            t0 = knots[:, 0]  # (in,)
            h = knots[:, 1] - t0  # (in,)
            # basis m is centred at t_m + (k+1)h/2
            u = (x - t0) / h - (self.k + 1) * 0.5  # (batch, in)
            offsets = torch.arange(self.num_features, dtype=x.dtype, device=x.device)
            return cardinal_bspline(u.unsqueeze(-1) - offsets, self.k)  # (batch, in, K)
        return bspline_basis_cox_de_boor(x, knots, self.k)


class RBFBasis(Basis):
    """Gaussian radial basis (FastKAN): exp(-((x - c_m) / h)²) on `grid` centres over the range."""

    name = "rbf"
    has_range = True
    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, in_dim: int, grid: int, k: int, grid_range: tuple[float, float]) -> None:
        super().__init__()
        self.grid = max(grid, 2)
        self.num_features = self.grid
        self.register_buffer("lo", torch.full((in_dim,), float(grid_range[0])))
        self.register_buffer("hi", torch.full((in_dim,), float(grid_range[1])))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "grid": self.grid}

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.lo, self.hi = lo.to(self.lo), hi.to(self.hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rbf_basis(x, self.lo, self.hi, self.grid)

    def node_features(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        return rbf_basis(x, self.lo[nodes], self.hi[nodes], self.grid)


class WindowBasis(Basis):
    """grid + k windows shifted along each input's range [lo, hi] (ReLU-KAN and AF-KAN)."""

    has_range = True
    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, in_dim: int, grid: int, k: int, grid_range: tuple[float, float]) -> None:
        super().__init__()
        self.grid, self.k = grid, k
        self.num_features = grid + k
        self.register_buffer("lo", torch.full((in_dim,), float(grid_range[0])))
        self.register_buffer("hi", torch.full((in_dim,), float(grid_range[1])))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "grid": self.grid, "k": self.k}

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.lo, self.hi = lo.to(self.lo), hi.to(self.hi)


class ReLUKANBasis(WindowBasis):
    """ReLU-KAN basis: (relu(e_m - x)·relu(x - s_m))² · 16 / (e_m - s_m)⁴ on shifted windows."""

    name = "relu_kan"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (self.hi - self.lo) / self.grid  # (in,)
        m = torch.arange(self.num_features, dtype=x.dtype, device=x.device) - self.k
        s = self.lo[:, None] + m * h[:, None]  # (in, K)
        e = s + (self.k + 1) * h[:, None]
        xe = x.unsqueeze(-1)
        r = torch.relu(e - xe) * torch.relu(xe - s)
        return r.square() * (16.0 / ((self.k + 1) * h[:, None]) ** 4)


class ChebyshevBasis(Basis):
    """Chebyshev polynomials T_0..T_degree of tanh(x) (degree = grid)."""

    name = "chebyshev"

    def __init__(self, in_dim: int, grid: int, k: int, grid_range: tuple[float, float]) -> None:
        super().__init__()
        self.degree = grid
        self.num_features = grid + 1

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "grid": self.degree}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return chebyshev_basis(torch.tanh(x), self.degree)

    def node_features(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        return self(x)


class RationalBasis(Basis):
    """Group-rational basis (KAT's GR-KAN): one learnable P(x)/(1+|Q(x)|) per input node.

    Numerator degree `grid`, denominator degree `k`; initialised close to SiLU-like identity
    so training starts stable. One feature per input; edges scale it by their coefficient.
    """

    name = "rational"

    def __init__(self, in_dim: int, grid: int, k: int, grid_range: tuple[float, float]) -> None:
        super().__init__()
        self.m, self.n = max(grid, 1), max(k, 1)
        self.num_features = 1
        num = torch.zeros(in_dim, self.m + 1)
        num[:, 1] = 1.0  # start as the identity
        self.numerator = nn.Parameter(num)
        self.denominator = nn.Parameter(torch.zeros(in_dim, self.n))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "grid": self.m, "k": self.n}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rational_basis(x, self.numerator, self.denominator)

    def node_features(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        return rational_basis(x, self.numerator[nodes], self.denominator[nodes])


def _af_combine(a: torch.Tensor, b: torch.Tensor, function: str) -> torch.Tensor:
    """AF-KAN's ways of combining the two activations of a window (a = σ(x - s), b = σ(e - x))."""
    if function == "quad1":
        return (a * b).square()
    if function == "quad2":
        return a * b + a.square() + b.square()
    if function == "sum":
        return a + b
    if function == "prod":
        return a * b
    if function == "sum_prod":
        return a + b + a * b
    if function == "cubic1":
        return (a + b) * (a.square() + b.square())
    if function == "cubic2":
        return (a * b).pow(3)
    raise ConfigError(f"Unknown AF-KAN function {function!r}. Available: {sorted(AF_FUNCTIONS)}")


AF_FUNCTIONS = ("quad1", "quad2", "sum", "prod", "sum_prod", "cubic1", "cubic2")
AF_ACTIVATIONS = {
    "silu": torch.nn.functional.silu,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
}


def af_kan_basis(
    x: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    grid: int,
    k: int,
    activation: str = "silu",
    function: str = "quad1",
) -> torch.Tensor:
    """AF-KAN basis (Ta 2025, the ReLU-KAN follow-up): F(σ(x-s_m), σ(e_m-x)) / F(σ(w/2), σ(w/2)).

    Windows as ReLU-KAN's: s_m = lo + (m - k)·h, e_m = s_m + w, w = (k + 1)·h, h = (hi - lo)/grid,
    m = 0..grid+k-1. σ an activation, F a combination (`AF_FUNCTIONS`). σ's argument is measured
    in grid steps, σ((x - s)/h) and σ((e - x)/h), so a feature's shape does not depend on the
    range its grid covers (SiLU is not scale-free: on raw units a narrow window's side lobes
    outgrow its peak; the paper normalises its inputs instead). Dividing by F at the window
    centre makes each feature 1 there; with σ = ReLU and F = quad1 this is ReLU-KAN's
    (relu(e - x)·relu(x - s))²·16/(e - s)⁴ exactly. The paper's batch min-max normalisation
    and its attention over inputs are left out: they make predictions batch-dependent and mix
    inputs, so an edge would no longer be a function of one input.
    x: (batch, in); lo, hi: (in,). Returns (batch, in, grid + k).
    """
    if activation not in AF_ACTIVATIONS:
        raise ConfigError(
            f"Unknown AF-KAN activation {activation!r}. Available: {sorted(AF_ACTIVATIONS)}"
        )
    act = AF_ACTIVATIONS[activation]
    h = (hi - lo) / grid  # (in,)
    m = torch.arange(grid + k, dtype=x.dtype, device=x.device) - k
    s = lo[:, None] + m * h[:, None]  # (in, K)
    u = (x.unsqueeze(-1) - s) / h[:, None]  # (batch, in, K): grid steps past the window start
    raw = _af_combine(act(u), act((k + 1) - u), function)  # (batch, in, K)
    half = act(torch.tensor((k + 1) / 2, dtype=x.dtype, device=x.device))
    return raw / _af_combine(half, half, function)


class AFKANBasis(WindowBasis):
    """AF-KAN basis: SiLU activations of ReLU-KAN's windows combined as (σ(x-s)·σ(e-x))²
    (the paper's `quad1`), each feature 1 at its window centre. See `af_kan_basis`."""

    name = "af_kan"
    activation = "silu"
    function = "quad1"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return af_kan_basis(
            x, self.lo.to(x.dtype), self.hi.to(x.dtype), self.grid, self.k,
            self.activation, self.function,
        )  # fmt: skip


class SelectableBasis(Basis):
    """S-KAN (Yang et al. 2024): every input node chooses one activation family.

    Until a choice is made (`chosen` = -1) the features are all families' side by side, so
    each edge is a mixture Σ_f Σ_k c_fk B_fk(x) (the paper's full-training phase);
    `kan_core.selectable.select_families` then picks, per node, the family that carries most
    of its edges' functions and refits it, after which only that family's features are nonzero
    and, once every node has chosen, only that family is computed (`compact_features`).
    Families: `FAMILIES` (names in `BASES`). Not a cubic B-spline basis: trains on the torch
    engine (`kan_core.engine`). Grid updates move the ranged families (B-spline, RBF) to the new
    range; Chebyshev and rational take tanh(x), bounded and independent of the range.
    """

    name = "s_kan"
    has_range = True
    FAMILIES = ("bspline", "rbf", "chebyshev", "rational")
    chosen: torch.Tensor  # (in,) index into FAMILIES, -1 = not chosen yet
    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, in_dim: int, grid: int, k: int, grid_range: tuple[float, float]) -> None:
        super().__init__()
        self.grid, self.k = grid, k
        members = [BASES[name](in_dim, grid, k, grid_range) for name in self.FAMILIES]
        self.families = nn.ModuleList(members)
        sizes = [int(b.num_features) for b in members]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.slices = [slice(a, a + n) for a, n in zip(starts, sizes, strict=True)]
        self.num_features = sum(sizes)
        self.register_buffer("chosen", torch.full((in_dim,), -1, dtype=torch.long))
        # the grid's range (for the dense sweeps of the least-squares refits)
        self.register_buffer("lo", torch.full((in_dim,), float(grid_range[0])))
        self.register_buffer("hi", torch.full((in_dim,), float(grid_range[1])))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "grid": self.grid, "k": self.k, "families": list(self.FAMILIES)}

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.lo, self.hi = lo.to(self.lo), hi.to(self.hi)
        for basis in self.families:
            if isinstance(basis, Basis) and basis.has_range:
                basis.set_range(lo, hi)

    def chosen_families(self) -> list[str | None]:
        """Per input node: its family's name, None while not chosen."""
        return [self.FAMILIES[int(c)] if c >= 0 else None for c in self.chosen.tolist()]

    def selection_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """(in, K): 1 on the chosen family's features (on all for a node not chosen yet)."""
        mask = torch.zeros(self.chosen.shape[0], self.num_features, dtype=dtype)
        for i, c in enumerate(self.chosen.tolist()):
            mask[i, self.slices[c] if c >= 0 else slice(None)] = 1.0
        return mask.to(self.chosen.device)

    def family_input(self, basis: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """What a family takes: x for the ranged ones; tanh(x) for the rational one (Chebyshev
        applies tanh itself). Its powers of raw inputs blew up: standardised columns reach 90
        before any grid update (the phase table: one Adam step, loss 1.3 -> 1e18), and mapped
        by the grid range the family changed shape at every grid update."""
        return torch.tanh(x) if isinstance(basis, RationalBasis) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((self.chosen >= 0).all()):  # each node's own family, at its place among all K
            feats, _, index = self.compact_features(x)  # (batch, in, Kc), (in, Kc)
            assert index is not None
            full = feats.new_zeros(*feats.shape[:2], self.num_features)
            return full.scatter_add(-1, index.expand_as(feats), feats)  # (batch, in, K)
        parts = [basis(self.family_input(basis, x)) for basis in self.families]
        feats = torch.cat(parts, dim=-1)  # (batch, in, K)
        if bool((self.chosen >= 0).any()):
            feats = feats * self.selection_mask(feats.dtype)
        return feats

    def compact_features(self, x: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor | None]:
        """Once every node has chosen: per node its family's features only, padded with zeros
        to the largest chosen family's size Kc, (batch, in, Kc), and their coefficients' index
        (in, Kc) (padding: the family's first). Before: all K features (index None)."""
        chosen = self.chosen
        if not bool((chosen >= 0).all()):
            return self(x), 1.0, None
        sizes = torch.tensor([s.stop - s.start for s in self.slices], device=chosen.device)
        starts = torch.tensor([s.start for s in self.slices], device=chosen.device)
        size = sizes[chosen]  # (in,)
        width = int(size.max())
        steps = torch.arange(width, device=chosen.device)
        index = starts[chosen, None] + torch.minimum(steps, size[:, None] - 1)  # (in, Kc)
        parts, order = [], []
        for f, basis in enumerate(self.families):
            nodes = (chosen == f).nonzero().squeeze(1)  # (n_f,)
            if nodes.numel() == 0:
                continue
            assert isinstance(basis, Basis)
            part = basis.node_features(self.family_input(basis, x[:, nodes]), nodes)
            parts.append(nn.functional.pad(part, (0, width - part.shape[-1])))  # (batch, n_f, Kc)
            order.append(nodes)
        nodes = torch.cat(order)  # (in,): the nodes by family
        place = torch.empty_like(nodes)
        place[nodes] = torch.arange(nodes.numel(), device=nodes.device)
        return torch.cat(parts, dim=1)[:, place], 1.0, index  # (batch, in, Kc)


BASES: dict[str, type[Basis]] = {
    cls.name: cls
    for cls in (
        BSplineBasis,
        RBFBasis,
        ChebyshevBasis,
        RationalBasis,
        ReLUKANBasis,
        AFKANBasis,
        SelectableBasis,
    )
}


def make_basis(
    name: str, in_dim: int, grid: int, k: int, grid_range: tuple[float, float] = (-1.0, 1.0)
) -> Basis:
    """Build a basis by name; an unknown name raises ConfigError listing the options."""
    if name not in BASES:
        raise ConfigError(f"Unknown basis {name!r}. Available bases: {sorted(BASES)}")
    if not (isinstance(grid, int) and grid >= 1):
        raise ConfigError(f"grid must be an integer ≥ 1, got {grid!r}")
    if not (isinstance(k, int) and 1 <= k <= 5):
        raise ConfigError(f"k (spline order) must be an integer in 1..5, got {k!r}")
    lo, hi = float(grid_range[0]), float(grid_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"grid_range must be two finite numbers lo < hi, got {grid_range!r}")
    return BASES[name](in_dim, grid, k, (lo, hi))
