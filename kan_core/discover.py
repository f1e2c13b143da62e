"""Formula discovery: one call from a table to the simplest formula that explains it.

    result = discover(X, y, names=["m", "v", "c"], budget_s=60)
    result.expr, result.front, result.formula.r2

Every candidate formula comes from the data's training rows; every choice is made on held-out
validation rows (a quarter of the rows, shuffled by `seed`) — never on a ground truth.
Generators, cheapest first, each adding candidates to one pool:

0. **separability** (`kan_core.discover_separable`, as AI Feynman): a small network fitted
   to the training rows stands in for f; pairs of rows test whether f is a sum or a product
   of parts of fewer columns (f(a,b)·f(a',b') = f(a,b')·f(a',b) for a product). The columns
   that split off, and the rest, get tables of their own (the surrogate with the other
   columns held at an anchor); the search recurses on each (twice at most), the parts'
   formulas are joined and their constants refitted on the real rows.
1. **term search** (`kan_core.discover_library`): for each target transform t = T(y) that the
   data allow (y, 1/y, y², 1/y², log|y|, √|y|, sin y, e^y), sparse linear fits of t over a
   library of monomials (integer and half exponents), unary functions of columns, of products,
   ratios, sums and differences, and their products with small monomials; `implicit` terms
   t·M give rational forms t = ΣaF / (1 − ΣbM). A beam-widened matching pursuit picks subsets
   of 1–5 terms; y = T⁻¹(t) is the candidate. Log space turns products and powers into sums.
2. **KAN structure search**: KANs [d, 1] (additive), [d, 1, 1] (a function of a sum: with
   log/exp edges, products) and [d, 2, 1] trained with L-BFGS on standardised data, every edge
   fitted to a library function (`auto_symbolic`), composed and simplified (`formula`); and
   each first-layer edge's best library fits used as terms of a sparse least-squares fit of y
   (`kan_core.discover_guided`: an edge is judged by what it adds end to end). Training stops
   early on a fifth of the training rows (noisy tables overfit). The best network by
   validation R² is the result's `network`.

Each candidate's constants are refitted on the training rows (Levenberg–Marquardt), then
snapped one by one to integers, small rationals or rational multiples of π (π², 1/π) when the
validation error does not grow beyond noise, the others refitted each time. The front keeps
the candidates that are simpler or more accurate than every other (complexity = nodes in the
sympy tree); the chosen formula is the simplest whose validation RMSE is within noise of the
best (`noise`, the relative noise level if known, else judged from the spread on validation).

The time budget is honoured: every stage checks the clock, sympy work is bounded (no open-ended
`simplify`); `progress(stage, fraction)` is called along the way and may return False to stop
early (the best formula so far is returned, with a note).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
import torch

from kan_core import discover_library as lib
from kan_core import discover_separable as sep
from kan_core.discover_guided import guided_formulas
from kan_core.errors import ConfigError, KanCoreError
from kan_core.export import ExportError, compile_expression, to_latex, to_text
from kan_core.model import KAN
from kan_core.naming import SymbolMap, make_symbols
from kan_core.scaling import Standardizer
from kan_core.symbolic import _refit_constants, auto_symbolic, formula
from kan_core.train import FitConfig, TrainData, fit

Progress = Callable[[str, float], Any]

MIN_ROWS = 10
MAX_SEARCH_ROWS = 500
MAX_DEPTH = 2  # separability recursion: parts of parts, no deeper


@dataclass(frozen=True)
class DiscoveredFormula:
    """One formula of the front, scored on the validation rows (original units)."""

    expr: sympy.Expr
    complexity: int  # nodes in the sympy expression tree
    r2: float
    rmse: float
    source: str  # the generator that proposed it, e.g. "terms: 1/y" or "kan [2, 1, 1]"

    @property
    def text(self) -> str:
        return to_text(self.expr)

    @property
    def latex(self) -> str:
        return to_latex(self.expr)

    def to_dict(self) -> dict[str, Any]:
        return {
            "formula": self.text,
            "latex": self.latex,
            "complexity": self.complexity,
            "r2": _finite_or_none(self.r2),
            "rmse": _finite_or_none(self.rmse),
            "source": self.source,
        }


@dataclass(frozen=True)
class Attempt:
    """What one stage tried: how many candidates it proposed and how good the best was."""

    stage: str
    detail: str
    seconds: float
    candidates: int
    best_r2: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "candidates": self.candidates,
            "best_r2": _finite_or_none(self.best_r2),
        }


@dataclass
class DiscoveryResult:
    formula: DiscoveredFormula  # the chosen one: simplest within noise of the best
    front: list[DiscoveredFormula]  # complexity ascending, validation error descending
    inputs: SymbolMap
    network: KAN | None  # the best KAN of the structure search (standardised units)
    x_scaler: Standardizer
    y_scaler: Standardizer
    network_r2: float | None  # the network's validation R²
    tried: list[Attempt]
    notes: list[str]
    seconds: float
    n_train: int
    n_validation: int
    noise_estimate: float  # relative RMSE of the best formula on validation (≈ noise level)

    @property
    def expr(self) -> sympy.Expr:
        return self.formula.expr

    def predict(self, X: Any) -> np.ndarray:
        x = _as_matrix(X, "X")
        if x.shape[1] != len(self.inputs.symbols):
            raise ConfigError(
                f"X has {x.shape[1]} columns; the formula takes {len(self.inputs.symbols)}"
            )
        return compile_expression(self.expr, self.inputs.symbols)(x).numpy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: formulas as text and LaTeX, symbols with their column names."""
        return {
            "formula": self.formula.to_dict(),
            "front": [f.to_dict() for f in self.front],
            "symbols": self.inputs.as_dict(),
            "network_width": self.network.width if self.network is not None else None,
            "network_r2": _finite_or_none(self.network_r2),
            "tried": [a.to_dict() for a in self.tried],
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "noise_estimate": _finite_or_none(self.noise_estimate),
        }


def _finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


class DiscoveryCancelled(KanCoreError):
    """Raised internally when `progress` returns False; `discover` returns what it has."""


# ---- input checks ----------------------------------------------------------------------------


def _as_matrix(X: Any, what: str) -> torch.Tensor:
    try:
        arr = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be numeric: {exc}") from None
    if arr.ndim == 1 and what == "X":
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be a table (rows, columns); got shape {arr.shape}")
    return torch.from_numpy(np.array(arr, dtype=np.float64, order="C", copy=True))


def _check_inputs(
    X: Any, y: Any, names: Sequence[str] | None, budget_s: float, noise: float | None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    if names is None and hasattr(X, "columns"):
        names = [str(c) for c in X.columns]
    x = _as_matrix(X, "X")
    yt = _as_matrix(np.asarray(y, dtype=np.float64).reshape(-1, 1), "y")[:, 0]
    n, d = x.shape
    if d == 0:
        raise ConfigError("X has 0 feature columns: give at least one input column")
    if yt.shape[0] != n:
        raise ConfigError(f"X has {n} rows but y has {yt.shape[0]}: give one target per row")
    bad = ~(torch.isfinite(x).all(1) & torch.isfinite(yt))
    if bool(bad.any()):
        rows = torch.nonzero(bad)[:5, 0].tolist()
        raise ConfigError(
            f"{int(bad.sum())} row(s) hold NaN or infinite values (first rows: {rows}); "
            "drop or fill them before discovering a formula"
        )
    if n < MIN_ROWS:
        raise ConfigError(f"discovery needs at least {MIN_ROWS} rows; got {n}")
    if float(yt.std()) <= 1e-12 * max(1.0, float(yt.abs().max())):
        raise ConfigError("y is constant: there is no formula to discover beyond its value")
    if names is None:
        names = [f"x{k + 1}" for k in range(d)]
    names = [str(v) for v in names]
    if len(names) != d:
        raise ConfigError(f"{len(names)} names given for {d} columns: give one name per column")
    if len(set(names)) != d:
        raise ConfigError("names must be unique: two columns have the same name")
    if not (isinstance(budget_s, int | float) and math.isfinite(budget_s) and budget_s > 0):
        raise ConfigError(f"budget_s must be a number of seconds > 0; got {budget_s!r}")
    if noise is not None and not (math.isfinite(noise) and 0 <= noise < 1):
        raise ConfigError(f"noise must be a relative level in [0, 1) or None; got {noise!r}")
    return x, yt, names


# ---- the clock -------------------------------------------------------------------------------


@dataclass
class _Clock:
    budget_s: float
    progress: Progress | None
    start: float = field(default_factory=time.perf_counter)
    fraction: float = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def over(self, reserve: float = 0.0) -> bool:
        return self.left() <= reserve

    def report(self, stage: str, fraction: float) -> None:
        self.fraction = min(1.0, max(self.fraction, fraction))  # progress never goes back
        if self.progress is not None and self.progress(stage, self.fraction) is False:
            raise DiscoveryCancelled("stopped by the caller")


# ---- candidates ------------------------------------------------------------------------------


@dataclass
class _Data:
    syms: tuple[sympy.Symbol, ...]
    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    def r2(self, mse: float) -> float:
        """R² on the validation rows from a mean squared error (as `kan_core.metrics.r2_score`:
        NaN when those rows' target is constant, non-finite when the error is)."""
        sst = float((self.y_val - self.y_val.mean()).pow(2).mean())
        return 1 - mse / sst if sst > 0 else math.nan

    def val_mse(self, expr: sympy.Expr, p: torch.Tensor | None = None) -> float:
        try:
            compiled = compile_expression(expr, self.syms)
            with torch.no_grad():
                pred = compiled(self.x_val, p)
        except (ExportError, RuntimeError, TypeError, ValueError, ZeroDivisionError):
            return math.inf
        if pred.shape != self.y_val.shape or not bool(torch.isfinite(pred).all()):
            return math.inf
        return float(((pred - self.y_val) ** 2).mean())


def tree_size(expr: sympy.Basic) -> int:
    """Nodes of the expression tree; an exact number (3, 1/2, π/4) is one node, a fitted
    decimal constant two (it carries more information), so a snapped formula is simpler."""
    if isinstance(expr, sympy.Float):
        return 2
    if expr.is_number and not expr.atoms(sympy.Float):
        return 1
    return 1 + sum(tree_size(a) for a in expr.args)


@dataclass
class _Pool:
    data: _Data
    enough: float = 0.0  # relative RMSE that counts as exact (see `_exact_found`)
    raw: dict[str, tuple[sympy.Expr, float, str]] = field(default_factory=dict)
    done: dict[str, DiscoveredFormula] = field(default_factory=dict)

    def propose(self, expr: sympy.Expr, source: str) -> float:
        key = sympy.srepr(expr)
        if key in self.raw:
            return self.raw[key][1]
        mse = self.data.val_mse(expr)
        self.raw[key] = (expr, mse, source)
        return mse

    def add_final(self, expr: sympy.Expr, source: str) -> None:
        mse = self.data.val_mse(expr)
        if not math.isfinite(mse):
            return
        f = DiscoveredFormula(expr, tree_size(expr), self.data.r2(mse), math.sqrt(mse), source)
        key = sympy.srepr(expr)
        if key not in self.done or self.done[key].rmse > f.rmse:
            self.done[key] = f


# ---- constants: refit and snap ---------------------------------------------------------------


def _nice_values(v: float) -> list[tuple[float, sympy.Expr]]:
    """Simple exact numbers close to v, simplest first: 0 (the term goes), the nearest
    integer, a small rational, small rational multiples of π, 1/π, π²."""
    out: list[tuple[float, sympy.Expr]] = [(0.0, sympy.Integer(0))]
    if not math.isfinite(v) or v == 0:
        return out
    candidates: list[tuple[float, sympy.Expr]] = [(float(round(v)), sympy.Integer(round(v)))]
    bases = (
        (1.0, sympy.Integer(1), 100),
        (math.pi, sympy.pi, 12),
        (1 / math.pi, 1 / sympy.pi, 12),
        (math.pi**2, sympy.pi**2, 12),
    )
    for base, sym, top in bases:
        r = Fraction(v / base).limit_denominator(12)
        if r != 0 and abs(r.numerator) <= top:
            candidates.append((float(r) * base, sympy.Rational(r.numerator, r.denominator) * sym))
    for value, sym in candidates:
        if value != 0 and abs(value - v) <= 0.02 * abs(v) and all(value != o for o, _ in out):
            out.append((value, sym))
    return out


def _finalise(expr: sympy.Expr, data: _Data, tolerance: float, clock: _Clock) -> sympy.Expr:
    """Refit the Float constants on the training rows, snap what validation allows, round."""
    try:
        compiled = compile_expression(expr, data.syms)
    except ExportError:
        return expr
    if not compiled.constants:
        return expr
    p = torch.tensor([float(c) for c in compiled.constants], dtype=torch.float64)
    p = _refit_constants(compiled, data.x_tr, data.y_tr, p, steps=40)
    base = data.val_mse(expr, p)
    if not math.isfinite(base):
        return expr
    # the same yardstick as the final choice: validation RMSE within (1 + tolerance) of the fit
    allowed = base * (1 + tolerance) ** 2 + 1e-26 * float(data.y_val.var())
    exact: dict[int, sympy.Expr] = {}
    order = sorted(range(p.numel()), key=lambda k: -abs(float(p[k])))
    for k in order:
        if clock.over(0.5):
            break
        for value, sym in _nice_values(float(p[k])):
            trial = p.clone()
            trial[k] = value
            if data.val_mse(expr, trial) > allowed and value != 0.0:
                trial = _refit_constants(
                    compiled, data.x_tr, data.y_tr, trial, steps=15,
                    frozen=[*exact, k], must_improve=False,
                )  # fmt: skip
            if data.val_mse(expr, trial) <= allowed:
                p, exact[k] = trial, sym
                break
    repl: dict[sympy.Basic, sympy.Basic] = {}
    for k, c in enumerate(compiled.constants):
        repl[c] = exact.get(k, sympy.Float(float(p[k])))
    snapped = expr.xreplace(repl)
    for digits in (4, 6):
        rounded = snapped.xreplace(
            {
                c: sympy.Float(float(f"{float(c):.{digits}g}"), 15)
                for c in snapped.atoms(sympy.Float)
            }
        )
        if data.val_mse(rounded) <= allowed:
            return _tidy(rounded, data)
    return _tidy(snapped, data)


# sympy.factor has no time limit: multivariate factoring (Wang's algorithm) of a float-coefficient
# polynomial in a few sin/exp terms ran for over 20 minutes on a 40-node tree (the Gorsse hardness
# table), so it is tried only on small polynomials in few generators
FACTOR_MAX_GENERATORS = 3
FACTOR_MAX_DEGREE = 4


def _factor_is_cheap(expr: sympy.Expr) -> bool:
    if tree_size(expr) > 40:
        return False
    if any(p.exp.is_Integer and abs(int(p.exp)) > FACTOR_MAX_DEGREE for p in expr.atoms(sympy.Pow)):
        return False
    try:
        for part in sympy.fraction(sympy.together(expr)):
            if part.is_number:
                continue
            poly = sympy.Poly(part)
            if len(poly.gens) > FACTOR_MAX_GENERATORS or poly.total_degree() > FACTOR_MAX_DEGREE:
                return False
    except (sympy.PolynomialError, sympy.GeneratorsNeeded):
        return False
    return True


def _tidy(expr: sympy.Expr, data: _Data) -> sympy.Expr:
    """Cheap rewrites that shorten the tree (bounded: no open-ended simplify). Rewrites that
    hold only for positive values (√(a²) → a) are kept where the validation rows agree."""
    best = expr
    ref = data.val_mse(expr)
    floor = 1e-20 * float(data.y_val.var())
    try:
        cands = [
            sympy.factor_terms(expr),
            sympy.powsimp(expr),
            sympy.together(expr),
            sympy.powsimp(sympy.powdenest(expr, force=True), force=True),
            sympy.factor_terms(sympy.powdenest(sympy.together(expr), force=True)),
        ]
        if _factor_is_cheap(expr):
            cands.append(sympy.powdenest(sympy.factor(expr), force=True))
        for cand in cands:
            if tree_size(cand) < tree_size(best) and data.val_mse(cand) <= ref * (1 + 1e-6) + floor:
                best = cand
    except (TypeError, ValueError, RecursionError, AttributeError):  # pragma: no cover
        pass
    return best


# ---- generator 1: sparse term search over target transforms -----------------------------------


@dataclass(frozen=True)
class _Transform:
    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[sympy.Expr], sympy.Expr]


def _sign(y: torch.Tensor) -> int:
    """+1 / −1 when y keeps one sign except for values so close to 0 that they can be noise
    (|y| ≤ 5 % of max |y|); 0 when both signs are real."""
    big = y.abs() > 0.05 * float(y.abs().max())
    return 1 if bool((y[big] > 0).all()) else -1 if bool((y[big] < 0).all()) else 0


def _sign_rows(y: torch.Tensor, s: int) -> torch.Tensor:
    """Rows usable by a sign-dependent transform: clearly of the sign s (noise near 0 out)."""
    return s * y > 0.02 * float(y.abs().max())


def _transforms(y: torch.Tensor) -> list[_Transform]:
    s = _sign(y)
    out = [_Transform("y", lambda v: v, lambda e: e)]
    if s:
        ss = sympy.Integer(s)
        out += [
            _Transform("log|y|", lambda v: torch.log(s * v), lambda e: ss * sympy.exp(e)),
            _Transform("1/y", lambda v: 1 / v, lambda e: 1 / e),
            _Transform("y^2", lambda v: v**2, lambda e: ss * sympy.sqrt(e)),
            _Transform("1/y^2", lambda v: v**-2, lambda e: ss / sympy.sqrt(e)),
            _Transform("sqrt|y|", lambda v: torch.sqrt(s * v), lambda e: ss * e**2),
        ]
    elif bool((y.abs() > 1e-9 * y.abs().max()).all()):
        out.append(_Transform("1/y", lambda v: 1 / v, lambda e: 1 / e))
    if float(y.abs().max()) <= math.pi / 2:
        out.append(_Transform("sin y", torch.sin, sympy.asin))
    if float(y.max()) < 30:
        out.append(_Transform("exp y", torch.exp, sympy.log))
    return out


def _term_expr(
    sel: lib.Selection, n_explicit: int, builders: list[lib.Builder], syms: Sequence[sympy.Symbol]
) -> sympy.Expr | None:
    num: list[sympy.Expr] = []
    den: list[sympy.Expr] = []
    for c, coef in zip(sel.columns, sel.coef.tolist(), strict=True):
        if not math.isfinite(coef) or coef == 0:
            return None
        term = sympy.Float(coef) * builders[c](syms)
        (num if c < n_explicit else den).append(term)
    if sel.intercept != 0.0 and math.isfinite(sel.intercept):
        num.append(sympy.Float(sel.intercept))
    if not num:
        return None
    top = sympy.Add(*num)
    return top / (1 - sympy.Add(*den)) if den else top


def _term_search(
    data: _Data, pool: _Pool, clock: _Clock, max_terms: int, reserve: float
) -> list[Attempt]:
    x, y = data.x_tr, data.y_tr
    if x.shape[0] > MAX_SEARCH_ROWS:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
        x, y = x[idx[:MAX_SEARCH_ROWS]], y[idx[:MAX_SEARCH_ROWS]]
    t0 = time.perf_counter()
    terms = lib.build_library(x, deadline=lambda: clock.over(reserve))
    explicit = terms.matrix()
    builders = list(terms.builders)
    implicit = lib.implicit_monomials(x)
    imp_vals = torch.stack([lib.monomial_values(x, m) for m in implicit], 1)
    imp_builders = [lib.monomial_builder(m) for m in implicit]
    # denominators 1 − b·M tried one at a time: integer exponents, simplest first
    denominators = {
        imp_builders[k]
        for k in sorted(
            (k for k, m in enumerate(implicit) if all(e.denominator == 1 for _, e in m)),
            key=lambda k: (sum(abs(e) for _, e in implicit[k]), len(implicit[k])),
        )[:120]
    }
    attempts = [
        Attempt("terms", f"library of {len(terms)} terms, {len(implicit)} rational forms",
                time.perf_counter() - t0, 0, None)
    ]  # fmt: skip
    transforms = _transforms(y)
    for k, tr in enumerate(transforms):
        if clock.over(reserve):
            break
        clock.report(f"term search ({tr.name})", 0.05 + 0.5 * k / len(transforms))
        t1 = time.perf_counter()
        sign = _sign(y)
        rows = (
            _sign_rows(y, sign)
            if tr.name not in ("y", "sin y", "exp y") and not bool((sign * y > 0).all())
            else torch.ones_like(y, dtype=torch.bool)
        )
        t = tr.forward(y[rows])
        if not bool(torch.isfinite(t).all()):
            continue
        z = torch.cat([explicit[rows], t[:, None] * imp_vals[rows]], 1)
        ok = torch.isfinite(z).all(0)
        n_exp = explicit.shape[1]
        cols = torch.nonzero(ok)[:, 0]
        z = z[:, cols]
        n_exp_ok = int((cols < n_exp).sum())
        names = [builders[c] if c < n_exp else imp_builders[c - n_exp] for c in cols.tolist()]
        sels = lib.beam_select(
            z, t, max_terms,
            deadline=lambda: clock.over(reserve),
            implicit_start=n_exp_ok,
        )  # fmt: skip
        exact = min((sel.sse for sel in sels), default=math.inf) <= 1e-24 * float(t @ t)
        if tr.name in ("y", "y^2") and not exact and not clock.over(reserve):
            dens = [k for k in range(n_exp_ok, z.shape[1]) if names[k] in denominators]
            sels += lib.rational_select(z, t, dens, n_exp_ok, deadline=lambda: clock.over(reserve))
        best = math.inf
        for sel in sels:
            e = _term_expr(sel, n_exp_ok, names, data.syms)
            if e is None:
                continue
            try:
                ye = tr.inverse(e)
            except (TypeError, ValueError, ZeroDivisionError):  # pragma: no cover
                continue
            best = min(best, pool.propose(ye, f"terms: {tr.name}"))
        attempts.append(
            Attempt("terms", f"t = {tr.name}", time.perf_counter() - t1, len(sels),
                    data.r2(best) if math.isfinite(best) else None)
        )  # fmt: skip
        if _exact_found(pool):
            break  # exact already (or as exact as a part's table from a surrogate can be)
    return attempts


def _power_law(data: _Data, pool: _Pool) -> list[Attempt]:
    """log|y| = c + Σ p_i·log x_i over the positive columns (products and powers)."""
    t0 = time.perf_counter()
    x, y = data.x_tr, data.y_tr
    sign = _sign(y)
    cols = [i for i in range(x.shape[1]) if bool((x[:, i] > 0).all())]
    if not sign or not cols:
        return []
    rows = _sign_rows(y, sign)
    x, y = x[rows], y[rows]
    # weighted by |y|: log's noise is noise/|y|, so small values must not dominate
    w = (sign * y)[:, None]
    a = torch.cat([torch.log(x[:, cols]), torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    coef, _ = lib._lstsq(a * w, torch.log(sign * y) * w[:, 0])
    if not bool(torch.isfinite(coef).all()):
        return []
    expr = (
        sign
        * sympy.exp(sympy.Float(float(coef[-1])))
        * sympy.Mul(
            *[
                data.syms[i] ** sympy.Float(float(p))
                for i, p in zip(cols, coef[:-1].tolist(), strict=True)
            ]
        )
    )
    mse = pool.propose(expr, "power law")
    r2 = data.r2(mse) if math.isfinite(mse) else None
    return [Attempt("power law", "log|y| linear in log x (weighted by |y|)",
                    time.perf_counter() - t0, 1, r2)]  # fmt: skip


# ---- generator 2: KAN structure search --------------------------------------------------------


def _kan_search(
    data: _Data, pool: _Pool, clock: _Clock, names: list[str], seed: int, reserve: float
) -> tuple[list[Attempt], KAN | None, float | None, Standardizer, Standardizer]:
    d = data.x_tr.shape[1]
    xs = Standardizer.fit(data.x_tr)
    ys = Standardizer.fit(data.y_tr[:, None])
    xt = xs.transform(data.x_tr).float()
    yt = ys.transform(data.y_tr[:, None]).float()
    # a fifth of the training rows stops training where it starts to overfit (noisy tables
    # of a few hundred rows); the validation rows stay for the choice
    n_stop = xt.shape[0] // 5 if xt.shape[0] >= 50 else 0
    order = torch.randperm(xt.shape[0], generator=torch.Generator().manual_seed(seed))
    stop, inner = order[:n_stop], order[n_stop:]
    train = TrainData(xt[inner], yt[inner], xt[stop], yt[stop]) if n_stop else TrainData(xt, yt)
    attempts: list[Attempt] = []
    best_net: KAN | None = None
    best_r2: float | None = None
    # wide tables: the additive KAN only (its formula stays a short sum)
    widths = [[d, 1], [d, 1, 1], [d, 2, 1]] if d <= 10 else [[d, 1]]
    for k, width in enumerate(widths):
        if clock.over(reserve + 2.0):
            break
        clock.report(f"KAN {width}", 0.55 + 0.3 * k / len(widths))
        t1 = time.perf_counter()
        model = KAN(width, seed=seed)
        steps = 100 if clock.left() > 20 else 40
        config = FitConfig(
            steps=steps, optimizer="lbfgs", lr=1.0, seed=seed,
            early_stopping_patience=10 if n_stop else None,
        )  # fmt: skip
        # the callback stops training at the budget
        fit(model, train, config, callback=lambda _: not clock.over(reserve + 1.0))
        with torch.no_grad():
            pred = model(xs.transform(data.x_val).float()).double()[:, 0]
        pred = pred * ys.std.double() + ys.mean.double()
        mse = float(((pred - data.y_val) ** 2).mean())
        r2 = data.r2(mse)
        if math.isfinite(r2) and (best_r2 is None or r2 > best_r2):
            best_net, best_r2 = model, r2
        symbolic = copy.deepcopy(model)
        n = 0
        best = math.inf
        if clock.over(reserve + 1.0):
            break
        # the network's edges as terms, combined by least squares on y
        deadline = lambda: clock.over(reserve + 1.0)  # noqa: E731
        for expr in guided_formulas(model, data.x_tr, data.y_tr, xs, data.syms, 6, deadline):
            best = min(best, pool.propose(expr, f"kan {width} edges"))
            n += 1
        try:
            auto_symbolic(symbolic, xt, r2_threshold=0.0)
            res = formula(symbolic, data.x_tr.float(), data.y_tr[:, None].float(), names, ["y"],
                          x_scaler=xs, y_scaler=ys)  # fmt: skip
            for c in res.formulas[0].pareto:
                expr = c.expr.xreplace(dict(zip(res.inputs.symbols, data.syms, strict=True)))
                best = min(best, pool.propose(expr, f"kan {width}"))
                n += 1
        except KanCoreError:
            pass
        attempts.append(
            Attempt("kan", f"KAN {width}, network validation R² {r2:.4f}",
                    time.perf_counter() - t1, n,
                    data.r2(best) if math.isfinite(best) else None)
        )  # fmt: skip
    return attempts, best_net, best_r2, xs, ys


# ---- the front and the choice ----------------------------------------------------------------


def pareto_front(cands: Sequence[DiscoveredFormula]) -> list[DiscoveredFormula]:
    front: list[DiscoveredFormula] = []
    for c in sorted(cands, key=lambda c: (c.complexity, c.rmse)):
        if math.isfinite(c.rmse) and (not front or c.rmse < front[-1].rmse * (1 - 1e-9)):
            front.append(c)
    return front


def choose(
    front: Sequence[DiscoveredFormula], n_val: int, y_rms: float, noise: float | None
) -> DiscoveredFormula:
    """The simplest formula whose validation RMSE is within noise of the best one."""
    best = min(c.rmse for c in front)
    allowed = best * (1 + 2 / math.sqrt(n_val)) + 1e-9 * y_rms
    if noise is not None:
        allowed = max(allowed, noise * y_rms * (1 + 2 / math.sqrt(n_val)))
    return next(c for c in front if c.rmse <= allowed)


# ---- the entry point -------------------------------------------------------------------------


def discover(
    X: Any,
    y: Any,
    names: Sequence[str] | None = None,
    *,
    budget_s: float = 60,
    noise: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    max_terms: int = 5,
) -> DiscoveryResult:
    """Search for the simplest formula y = f(X) that the data support; see the module doc.

    X: (rows, columns) numbers (array, tensor or DataFrame — its column names are used when
    `names` is None); y: (rows,). `noise`: the relative noise level if known (noise std / RMS
    of y), used to tell "within noise" apart. Raises ConfigError for unusable input.
    """
    x, yt, names = _check_inputs(X, y, names, budget_s, noise)
    return _discover(x, yt, names, budget_s, noise, seed, progress, max_terms, depth=0)


def _discover(
    x: torch.Tensor,
    yt: torch.Tensor,
    names: list[str],
    budget_s: float,
    noise: float | None,
    seed: int,
    progress: Progress | None,
    max_terms: int,
    depth: int,
    enough: float = 0.0,
) -> DiscoveryResult:
    """`discover` on checked inputs; `depth` counts separability recursions, `enough` is the
    relative validation RMSE at which the search stops early (a part's table from a
    surrogate is only as exact as the surrogate)."""
    clock = _Clock(float(budget_s), progress)
    notes: list[str] = []
    symbols = make_symbols(names)
    n = x.shape[0]
    n_val = max(3, n // 4)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, tr = perm[:n_val], perm[n_val:]
    data = _Data(symbols.symbols, x[tr], yt[tr], x[val], yt[val])
    pool = _Pool(data, enough)
    tried: list[Attempt] = []
    reserve = min(0.25 * budget_s, 10.0)  # kept for constants and the front
    network: KAN | None = None
    network_r2: float | None = None
    xs, ys = Standardizer.fit(data.x_tr), Standardizer.fit(data.y_tr[:, None])
    mean_expr = sympy.Float(float(data.y_tr.mean()))
    pool.propose(mean_expr, "mean")
    cancelled = False
    try:
        clock.report("checking data", 0.02)
        tried += _power_law(data, pool)
        # with three or more columns the parts' searches are far smaller than the whole
        # one; with two the term library is complete enough to go first
        d = x.shape[1]
        split = depth < MAX_DEPTH and d >= 2
        level = _Level(data, pool, clock, names, seed, max_terms, depth, reserve)
        if split and d >= 3 and not _exact_found(pool):
            tried += _separable_search(level)
        if not _exact_found(pool):
            tried += _term_search(data, pool, clock, max_terms, reserve)
        if split and d == 2 and not _exact_found(pool):
            tried += _separable_search(level)
        if not _exact_found(pool):
            found = _kan_search(data, pool, clock, names, seed, reserve)
            tried += found[0]
            network, network_r2, xs, ys = found[1], found[2], found[3], found[4]
        clock.report("constants", 0.88)
        # a part's constants are refitted on the real rows once the parts are joined
        _refine(pool, clock, noise, snap=depth == 0)
    except DiscoveryCancelled:
        cancelled = True
        notes.append("Stopped early by the caller; the best formula so far is reported.")
    if clock.over():
        notes.append(f"The time budget of {budget_s:g} s ran out; the search stopped where it was.")
    if not pool.done:
        pool.add_final(mean_expr, "mean")
    front = pareto_front(list(pool.done.values()))
    y_rms = float(data.y_val.pow(2).mean().sqrt())
    chosen = choose(front, n_val, y_rms, noise)
    if not cancelled:  # also when the budget ran out: the search is over either way
        with contextlib.suppress(DiscoveryCancelled):  # nothing is left to stop
            clock.report("done", 1.0)
    return DiscoveryResult(
        chosen, front, symbols, network, xs, ys, network_r2, tried, notes, clock.elapsed(),
        len(tr), n_val, min(c.rmse for c in front) / max(y_rms, 1e-300),
    )  # fmt: skip


@dataclass
class _Level:
    """One level of the search (the whole table, or a part or reduced table of it)."""

    data: _Data
    pool: _Pool
    clock: _Clock
    names: list[str]
    seed: int
    max_terms: int
    depth: int
    reserve: float

    def sub(self, x: torch.Tensor, y: torch.Tensor, names: list[str], budget_s: float,
            enough: float = 0.0) -> DiscoveryResult:  # fmt: skip
        """The search one level down, on a table of its own."""
        return _discover(x, y, names, budget_s, None, self.seed, None, self.max_terms,
                         self.depth + 1, enough)  # fmt: skip

    def propose_refitted(self, exprs: Sequence[sympy.Expr], source: str) -> float:
        """Propose each; the three best get their constants refitted (and snapped) on this
        level's real rows. Returns the best validation MSE."""
        pool, data, clock = self.pool, self.data, self.clock
        ranked = sorted(exprs, key=lambda e: pool.propose(e, source))
        best = min((pool.propose(e, source) for e in ranked), default=math.inf)
        tolerance = 2 / math.sqrt(data.y_val.numel())
        for e in ranked[:3]:
            if not clock.over(self.reserve):
                best = min(best, pool.propose(_finalise(e, data, tolerance, clock), source))
        return best


def _separable_search(level: _Level) -> list[Attempt]:
    """Split f into a sum or product of parts of fewer columns (tested on a surrogate), find
    each part's formula on its own table (recursively), join them; or, first, reduce two
    columns that enter only through one combination to that one column."""
    data, clock, names, reserve = level.data, level.clock, level.names, level.reserve
    if clock.over(reserve + 4.0):
        return []
    clock.report("separability", 0.45)
    t0 = time.perf_counter()
    x = data.x_tr
    sur = sep.fit_surrogate(x, data.y_tr, data.x_val, data.y_val, level.seed,
                            deadline=lambda: clock.elapsed() > 0.15 * clock.budget_s)  # fmt: skip
    # a symmetry first: its smaller search runs on the real rows, a split's on surrogate tables
    symmetries = sep.find_symmetries(sur, x, level.seed)
    if symmetries:
        return _symmetry_search(level, symmetries[0], t0)
    splits = sep.find_splits(sur, x, level.seed)
    if not splits:
        detail = (
            f"no additive or multiplicative split, no symmetry (surrogate error "
            f"{sur.rel_error:.1e})"
        )
        return [Attempt("separability", detail, time.perf_counter() - t0, 0, None)]
    kind, groups = sep.partition(splits, x.shape[1])
    tables, _ = sep.part_tables(sur, x, groups)
    keep = 6 if len(groups) == 2 else 3  # formulas per part: the joins stay ≤ 3⁴ · …
    parts: list[list[sympy.Expr]] = []
    for k, (cols, (xp, yp)) in enumerate(zip(groups, tables, strict=True)):
        share = (clock.left() - reserve) / (len(groups) - k)
        if share < 1.0:
            return []
        # the part's table is as exact as the surrogate: stop searching at its error
        enough = min(0.2, 3 * sur.rel_error * float(data.y_tr.std() / yp.std().clamp_min(1e-300)))
        try:
            sub = level.sub(xp, yp, [names[c] for c in cols], share, enough)
        except ConfigError:  # a part that is constant on these rows
            return []
        to_parent = dict(zip(sub.inputs.symbols, [data.syms[c] for c in cols], strict=True))
        front = sorted(sub.front, key=lambda f: f.complexity)[:keep]
        parts.append([e.xreplace(to_parent) for e in dict.fromkeys(f.expr for f in front)])
    joined = [
        _join(data, combo, kind) for combo in itertools.islice(itertools.product(*parts), 200)
    ]
    best_mse = level.propose_refitted([e for e in joined if e is not None], f"separable ({kind})")
    named = " | ".join(", ".join(names[c] for c in g) for g in groups)
    word = "sum" if kind == "+" else "product"
    detail = f"{word} of parts: {named} (test residual {splits[0].residual:.1e})"
    r2 = data.r2(best_mse) if math.isfinite(best_mse) else None
    return [Attempt("separability", detail, time.perf_counter() - t0, len(joined), r2)]


_SYMMETRY_OPS: dict[str, Callable[[sympy.Expr, sympy.Expr], sympy.Expr]] = {
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "-": lambda a, b: a - b,
    "+": lambda a, b: a + b,
}


def _symmetry_search(level: _Level, sym: sep.Symmetry, t0: float) -> list[Attempt]:
    """Columns i and j enter only as i∘j: search again on the real rows with one column
    fewer (i∘j in their place), then put i∘j back into what is found."""
    data, names = level.data, level.names
    rest = [c for c in range(data.x_tr.shape[1]) if c not in (sym.i, sym.j)]
    xs = torch.cat([data.x_tr[:, rest], sym.values(data.x_tr)[:, None]], 1)
    joined = f"{names[sym.i]}{sym.kind}{names[sym.j]}"
    share = (level.clock.left() - level.reserve) * 0.7
    if share < 1.0:
        return []
    sub = level.sub(xs, data.y_tr, [*(names[c] for c in rest), joined], share)
    combined = _SYMMETRY_OPS[sym.kind](data.syms[sym.i], data.syms[sym.j])
    back = dict(zip(sub.inputs.symbols, [*(data.syms[c] for c in rest), combined], strict=True))
    found = [f.expr.xreplace(back) for f in sub.front]
    best_mse = level.propose_refitted(found, f"symmetry ({joined})")
    detail = f"f depends on {names[sym.i]} and {names[sym.j]} only through {joined}"
    r2 = data.r2(best_mse) if math.isfinite(best_mse) else None
    return [Attempt("symmetry", detail, time.perf_counter() - t0, len(found), r2)]


def _join(data: _Data, parts: Sequence[sympy.Expr], kind: str) -> sympy.Expr | None:
    """k·Πparts or Σparts + k with k fitted on the training rows (the parts' own constants
    came from surrogate tables)."""
    expr = sympy.Mul(*parts) if kind == "*" else sympy.Add(*parts)
    try:
        p = compile_expression(expr, data.syms)(data.x_tr, None)
    except (ExportError, RuntimeError, TypeError, ValueError, ZeroDivisionError):
        return None
    if p.shape != data.y_tr.shape or not bool(torch.isfinite(p).all()):
        return None
    if kind == "*":
        k = float(p @ data.y_tr) / max(float(p @ p), 1e-300)
        return sympy.Float(k) * expr
    return expr + sympy.Float(float((data.y_tr - p).mean()))


def _exact_found(pool: _Pool) -> bool:
    var = float(pool.data.y_val.var())
    enough = max(1e-20, pool.enough**2) * var
    return any(mse <= enough for _, mse, _ in pool.raw.values())


def _refine(pool: _Pool, clock: _Clock, noise: float | None, snap: bool = True) -> None:
    """Refit and snap the most promising raw candidates: the raw front and the most accurate
    (`snap` False: only score them)."""
    data = pool.data
    n_val = data.y_val.numel()
    tolerance = 2 / math.sqrt(n_val) if noise is None or noise > 0 else 1e-3
    raw = [(e, m, s) for e, m, s in pool.raw.values() if math.isfinite(m)]
    scored = [(tree_size(e), m, e, s) for e, m, s in raw]
    scored.sort(key=lambda r: (r[0], r[1]))
    front: list[tuple[int, float, sympy.Expr, str]] = []
    for r in scored:
        if not front or r[1] < front[-1][1] * (1 - 1e-9):
            front.append(r)
    accurate = sorted(scored, key=lambda r: r[1])[:6]
    todo: dict[str, tuple[sympy.Expr, str]] = {}
    for _, _, e, s in [*front, *accurate]:
        todo.setdefault(sympy.srepr(e), (e, s))
    items = list(todo.values())
    for k, (e, s) in enumerate(items):
        if clock.over(0.3) or not snap:
            pool.add_final(e, s)
            continue
        clock.report("constants", 0.88 + 0.1 * k / max(1, len(items)))
        pool.add_final(_finalise(e, data, tolerance, clock), s)
        pool.add_final(e, s)
