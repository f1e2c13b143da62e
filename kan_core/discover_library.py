"""Term libraries and sparse selection for formula discovery (`kan_core.discover`).

A *term* is a column of values with a recipe for its sympy expression (built only for the
terms a search selects). Three families, all generated from the data's shape and signs alone:

* monomials Π x_i^p_i — integer exponents, and halves where a column is positive;
* unary terms u(c·a) — u ∈ {sin, cos, exp, exp(−·), log}, a = x_i, a monomial of up to three
  columns, x_i − x_j or x_i + x_j, c a small rational or a multiple of π; sin² and cos²;
* products of a small monomial and a unary term.

`implicit` terms are t·M (t the transformed target, M a monomial): a selection that uses
them reads t = Σ a_k F_k + Σ b_k t M_k, i.e. the rational form t = Σ a_k F_k / (1 − Σ b_k M_k).

`beam_select` is orthogonal matching pursuit widened to a beam: each state adds, one at a
time, the terms most correlated with its residual and keeps the best few subsets (least
squares on the train rows) per size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import sympy
import torch

Builder = Callable[[Sequence[sympy.Symbol]], sympy.Expr]

_SCALES: tuple[tuple[float, sympy.Expr], ...] = (
    (1.0, sympy.Integer(1)),
    (2.0, sympy.Integer(2)),
    (0.5, sympy.Rational(1, 2)),
    (math.pi, sympy.pi),
    (2 * math.pi, 2 * sympy.pi),
    (1 / math.pi, 1 / sympy.pi),
    (1 / (2 * math.pi), 1 / (2 * sympy.pi)),
)


@dataclass
class Terms:
    """Columns (rows, k) float64 with one sympy builder and a complexity estimate per column."""

    values: list[torch.Tensor] = field(default_factory=list)
    builders: list[Builder] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    keys: set[bytes] = field(default_factory=set)

    def add(self, v: torch.Tensor, builder: Builder, size: int) -> bool:
        if not bool(torch.isfinite(v).all()):
            return False
        scale = float(v.abs().max())
        if scale == 0.0 or scale > 1e12 or float(v.std()) <= 1e-12 * scale:
            return False
        # a term equal to one already present up to a factor is not added twice
        key = torch.round(v[:16] / v[:16].abs().max() * 1e6).to(torch.int64).numpy().tobytes()
        if key in self.keys:
            return False
        self.keys.add(key)
        self.values.append(v)
        self.builders.append(builder)
        self.sizes.append(size)
        return True

    def __len__(self) -> int:
        return len(self.values)

    def matrix(self) -> torch.Tensor:
        return torch.stack(self.values, 1) if self.values else torch.empty(0, 0)


Monomial = tuple[tuple[int, Fraction], ...]  # ((column, exponent), ...)


def _exponents(positive: bool, nonzero: bool, max_int: int) -> list[Fraction]:
    out = [Fraction(p) for k in range(1, max_int + 1) for p in (k, -k)]
    if not nonzero:
        out = [e for e in out if e > 0]
    if positive:
        out += [Fraction(1, 2), Fraction(-1, 2), Fraction(3, 2), Fraction(-3, 2)]
    return out


def monomials(
    x: torch.Tensor, max_vars: int, max_int: int, max_degree: float, limit: int
) -> list[Monomial]:
    """Exponent patterns over up to `max_vars` columns, simplest first, at most `limit`."""
    d = x.shape[1]
    positive = [bool((x[:, i] > 0).all()) for i in range(d)]
    nonzero = [bool((x[:, i].abs() > 1e-12).all()) for i in range(d)]
    per_var = [_exponents(positive[i], nonzero[i], max_int) for i in range(d)]
    found: list[Monomial] = []
    for k in range(1, min(max_vars, d) + 1):
        for cols in itertools.combinations(range(d), k):
            for exps in itertools.product(*(per_var[i] for i in cols)):
                if sum(abs(e) for e in exps) <= max_degree:
                    found.append(tuple(zip(cols, exps, strict=True)))
    found.sort(key=lambda m: (len(m), sum(abs(e) for _, e in m), sum(e.denominator for _, e in m)))
    return found[:limit]


def monomial_values(x: torch.Tensor, m: Monomial) -> torch.Tensor:
    out = torch.ones(x.shape[0], dtype=x.dtype)
    for i, e in m:
        out = out * (x[:, i] ** int(e) if e.denominator == 1 else x[:, i] ** float(e))
    return out


def monomial_builder(m: Monomial) -> Builder:
    def build(s: Sequence[sympy.Symbol]) -> sympy.Expr:
        return sympy.Mul(*[s[i] ** sympy.Rational(e.numerator, e.denominator) for i, e in m])

    return build


def monomial_size(m: Monomial) -> int:
    return sum(1 if e == 1 else 3 for _, e in m) + max(0, len(m) - 1)


def _column(i: int) -> Builder:
    return lambda s: s[i]


def _difference(i: int, j: int) -> Builder:
    return lambda s: s[i] - s[j]


def _total(i: int, j: int) -> Builder:
    return lambda s: s[i] + s[j]


def _log_of(build: Builder) -> Builder:
    return lambda s: sympy.log(build(s))


def _unary_args(
    x: torch.Tensor, with_monomials: bool
) -> list[tuple[torch.Tensor, Builder, int, bool]]:
    """(values, builder, size, positive) of the arguments unary functions are applied to."""
    d = x.shape[1]
    args: list[tuple[torch.Tensor, Builder, int, bool]] = []
    for i in range(d):
        args.append((x[:, i], _column(i), 1, bool((x[:, i] > 0).all())))
    for i, j in itertools.combinations(range(d), 2):
        diff = x[:, i] - x[:, j]
        args.append((diff, _difference(i, j), 3, bool((diff > 0).all())))
        tot = x[:, i] + x[:, j]
        args.append((tot, _total(i, j), 3, bool((tot > 0).all())))
    if with_monomials:
        for m in monomials(x, max_vars=3, max_int=1, max_degree=3, limit=400):
            if len(m) < 2:
                continue
            v = monomial_values(x, m)
            args.append((v, monomial_builder(m), monomial_size(m), bool((v > 0).all())))
    return args


def unary_terms(x: torch.Tensor, terms: Terms, with_monomials: bool, limit: int) -> list[int]:
    """Adds u(c·a) terms; returns the indices of the scale-1 single-column/difference ones
    (the ones products are made of)."""
    base: list[int] = []
    for k, (a, build, size, positive) in enumerate(_unary_args(x, with_monomials)):
        simple = k < x.shape[1] * x.shape[1]  # single columns, sums and differences
        for c, cs in _SCALES:
            if len(terms) >= limit:
                return base
            ca = c * a
            for name, fn, sfn in (
                ("sin", torch.sin, sympy.sin),
                ("cos", torch.cos, sympy.cos),
                ("exp", torch.exp, sympy.exp),
                ("expm", lambda v: torch.exp(-v), lambda e: sympy.exp(-e)),
            ):
                if name.startswith("exp") and float(ca.abs().max()) > 40:
                    continue

                def b(s: Sequence[sympy.Symbol], sfn=sfn, build=build, cs=cs) -> sympy.Expr:
                    return sfn(cs * build(s))

                if terms.add(fn(ca), b, size + 2) and c == 1.0 and simple:
                    base.append(len(terms) - 1)
                if name in ("sin", "cos") and c in (1.0, 0.5):

                    def b2(s: Sequence[sympy.Symbol], sfn=sfn, build=build, cs=cs) -> sympy.Expr:
                        return sfn(cs * build(s)) ** 2

                    if terms.add(fn(ca) ** 2, b2, size + 4) and c == 1.0 and simple:
                        base.append(len(terms) - 1)
        if positive and terms.add(torch.log(a), _log_of(build), size + 2) and simple:
            base.append(len(terms) - 1)
    return base


def product_terms(
    x: torch.Tensor, terms: Terms, unary: list[int], small: list[Monomial], limit: int
) -> None:
    for m in small:
        mv, mb, ms = monomial_values(x, m), monomial_builder(m), monomial_size(m)
        for u in unary:
            if len(terms) >= limit:
                return
            ub = terms.builders[u]

            def b(s: Sequence[sympy.Symbol], mb=mb, ub=ub) -> sympy.Expr:
                return mb(s) * ub(s)

            terms.add(mv * terms.values[u], b, ms + terms.sizes[u] + 1)


def build_library(x: torch.Tensor, max_terms: int = 16000) -> Terms:
    """The explicit terms (monomials, unary, products) for columns x (rows, d)."""
    d = x.shape[1]
    terms = Terms()
    ones = torch.ones(x.shape[0], dtype=x.dtype)
    terms.values.append(ones)
    terms.builders.append(lambda s: sympy.Integer(1))
    terms.sizes.append(1)
    small = d <= 4
    mono = monomials(
        x, max_vars=3 if small else 2 if d <= 8 else 1, max_int=4 if small else 2,
        max_degree=8 if small else 4, limit=max_terms // 4,
    )  # fmt: skip
    for m in mono:
        terms.add(monomial_values(x, m), monomial_builder(m), monomial_size(m))
    unary = unary_terms(x, terms, with_monomials=d <= 6, limit=len(terms) + max_terms // 5)
    factors = [
        m
        for m in monomials(x, max_vars=1, max_int=2, max_degree=2, limit=200)
        if all(e.denominator == 1 or abs(e) == Fraction(1, 2) for _, e in m)
    ]
    if small:
        factors += [
            m for m in monomials(x, max_vars=3, max_int=1, max_degree=3, limit=200) if len(m) > 1
        ]
        factors += [
            m
            for m in monomials(x, max_vars=2, max_int=1, max_degree=1, limit=200)
            if len(m) == 2 and all(abs(e) == Fraction(1, 2) for _, e in m)
        ]
    product_terms(x, terms, unary, factors, limit=max_terms)
    return terms


def implicit_monomials(x: torch.Tensor) -> list[Monomial]:
    d = x.shape[1]
    return monomials(x, max_vars=3 if d <= 4 else 1, max_int=2, max_degree=5, limit=400)


@dataclass(frozen=True)
class Selection:
    columns: tuple[int, ...]
    coef: torch.Tensor  # (k,) float64
    intercept: float  # 0.0 when fitted without one
    sse: float


def _lstsq(a: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, float]:
    scale = a.abs().amax(0).clamp_min(1e-300)
    sol = torch.linalg.lstsq(a / scale, t[:, None], driver="gelsd").solution[:, 0]
    coef = sol / scale
    r = a @ coef - t
    sse = float(r @ r)
    return coef, sse if math.isfinite(sse) else math.inf


def fit_subset(z: torch.Tensor, t: torch.Tensor, cols: tuple[int, ...]) -> list[Selection]:
    """Least squares on the chosen columns, with and without an intercept."""
    a = z[:, list(cols)]
    out = []
    coef, sse = _lstsq(a, t)
    out.append(Selection(cols, coef, 0.0, sse))
    ones = torch.ones(a.shape[0], 1, dtype=a.dtype)
    coef1, sse1 = _lstsq(torch.cat([a, ones], 1), t)
    out.append(Selection(cols, coef1[:-1], float(coef1[-1]), sse1))
    return out


def _degenerate(z: torch.Tensor, t: torch.Tensor, cols: tuple[int, ...], start: int) -> bool:
    imp = [k for k, c in enumerate(cols) if c >= start]
    if not imp:
        return False
    rows = min(z.shape[0], 256)
    a = torch.cat([z[:rows, list(cols)], torch.ones(rows, 1, dtype=z.dtype)], 1)
    coef, _ = _lstsq(a, t[:rows])
    numerator = t[:rows] - a[:, imp] @ coef[imp]
    return float(numerator.norm()) < 0.3 * float(t[:rows].norm())


def beam_select(
    z: torch.Tensor,
    t: torch.Tensor,
    max_terms: int,
    beam: int = 8,
    expand: int = 12,
    deadline: Callable[[], bool] = lambda: False,
    implicit_start: int | None = None,
    start: tuple[int, ...] = (),
) -> list[Selection]:
    """Sparse subsets of columns of z (rows, p) fitting t (rows,), best first per size.

    Forward selection by exact error reduction (orthogonal least squares) with a free
    intercept, widened to a beam: every state tries its `expand` best additions and the
    `beam` best subsets of each size go on. Each subset found is returned fitted with and
    without an intercept.

    Columns from `implicit_start` on are t·M terms (at most two per subset): a subset whose
    fit makes the numerator t − Σ b·t·M vanish (the denominator 1 − Σ b·M ≈ 0 — any t fits
    that) is dropped."""
    n_imp_start = z.shape[1] if implicit_start is None else implicit_start
    rows = min(z.shape[0], 256)  # scoring rows (float32); subsets are fitted on all rows
    zc = z[:rows] - z[:rows].mean(0)
    norms = zc.pow(2).sum(0)
    usable = norms > 1e-16 * z[:rows].pow(2).sum(0)  # not constant on these rows
    zc = (zc / norms.clamp_min(1e-300).sqrt()).float()  # unit columns
    norms = torch.ones_like(norms, dtype=torch.float32)
    tc = (t[:rows] - t[:rows].mean()).double()
    tc = (tc / tc.norm().clamp_min(1e-300)).float()
    states: list[tuple[float, tuple[int, ...]]] = [(float(tc @ tc), start)]
    found: list[Selection] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(max_terms - len(start)):
        if deadline():
            break
        nxt: list[tuple[float, tuple[int, ...]]] = []
        for _, cols in states:
            if cols:
                q, _ = torch.linalg.qr(zc[:, list(cols)])
                r = tc - q @ (q.T @ tc)
                den = norms - (q.T @ zc).pow(2).sum(0)  # |column projected off the state|²
            else:
                r, den = tc, norms
            gain = (zc.T @ r).pow(2) / den.clamp_min(1e-30)
            gain[~usable | (den <= 1e-4)] = -1.0
            if cols:
                gain[list(cols)] = -1.0
            base = float(r @ r)
            for c in torch.topk(gain, min(expand, gain.numel())).indices.tolist():
                new = tuple(sorted((*cols, c)))
                if new in seen or gain[c] < 0:
                    continue
                seen.add(new)
                if sum(k >= n_imp_start for k in new) > 2 or _degenerate(z, t, new, n_imp_start):
                    continue
                nxt.append((max(0.0, base - float(gain[c])), new))
        if not nxt:
            break
        nxt.sort(key=lambda s: s[0])
        states = nxt[:beam]
        for _, cols in nxt[: max(2, beam // 2)]:
            found.extend(fit_subset(z, t, cols))
        if found and min(f.sse for f in found) <= 1e-24 * float(t @ t):
            break
    return found
