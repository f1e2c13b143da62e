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

import numpy as np
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
    deadline: Callable[[], bool] = lambda: False  # the library stops growing when True

    def full(self, limit: int) -> bool:
        return len(self.values) >= limit or self.deadline()

    def add(self, v: torch.Tensor, builder: Builder, size: int) -> bool:
        if not bool(torch.isfinite(v).all()):
            return False
        scale = float(v.abs().max())
        if scale == 0.0 or scale > 1e12 or float(v.std()) <= 1e-12 * scale:
            return False
        # a term equal to one already present up to a factor is not added twice
        head = v[:16].numpy()
        peak = float(np.abs(head).max()) or 1.0  # the first rows may all be 0
        key = np.round(head / peak * 1e6).astype(np.int64).tobytes()
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


def comparable_pairs(x: torch.Tensor, ratio: float = 10.0) -> list[tuple[int, int]]:
    """Column pairs whose sum or difference can mean something: magnitudes within `ratio` of
    each other (quantities of one kind — two lengths, two angles — have similar scales; a
    sum of an electronegativity and a valence-electron count does not)."""
    scale = x.abs().amax(0).clamp_min(1e-300)
    return [
        (i, j)
        for i, j in itertools.combinations(range(x.shape[1]), 2)
        if 1 / ratio <= float(scale[i] / scale[j]) <= ratio
    ]


def _unary_args(
    x: torch.Tensor, with_monomials: bool
) -> list[tuple[torch.Tensor, Builder, int, bool, bool]]:
    """(values, builder, size, positive, simple) of the arguments unary functions are applied
    to; `simple` ones (columns, sums, differences, two-column products and ratios) also go
    into products with monomials."""
    d = x.shape[1]
    args: list[tuple[torch.Tensor, Builder, int, bool, bool]] = []
    for i in range(d):
        args.append((x[:, i], _column(i), 1, bool((x[:, i] > 0).all()), True))
    for i, j in comparable_pairs(x):
        diff = x[:, i] - x[:, j]
        args.append((diff, _difference(i, j), 3, bool((diff > 0).all()), True))
        tot = x[:, i] + x[:, j]
        args.append((tot, _total(i, j), 3, bool((tot > 0).all()), True))
    if with_monomials:
        for m in monomials(x, max_vars=4, max_int=1, max_degree=4, limit=20_000):
            if len(m) < 2 or any(e.denominator != 1 for _, e in m):
                continue
            v = monomial_values(x, m)
            size = monomial_size(m)
            simple = len(m) == 2 and all(e.denominator == 1 for _, e in m)
            args.append((v, monomial_builder(m), size, bool((v > 0).all()), simple))
    return args


def combination_terms(x: torch.Tensor, terms: Terms, limit: int) -> None:
    """x_i ± x_j, (x_i ± x_j)², and those squares times x_k^±1, x_k^±2."""
    scales = [
        m for m in monomials(x, max_vars=1, max_int=2, max_degree=2, limit=100)
        if all(e.denominator == 1 for _, e in m)
    ]  # fmt: skip
    for i, j in comparable_pairs(x):
        for v, build in ((x[:, i] - x[:, j], _difference(i, j)), (x[:, i] + x[:, j], _total(i, j))):
            terms.add(v, build, 3)
            sq = _power_of(build, 2)
            terms.add(v**2, sq, 5)
            for m in scales:
                if terms.full(limit):
                    return
                terms.add(v**2 * monomial_values(x, m), _times(sq, monomial_builder(m)), 8)


def _power_of(build: Builder, n: int) -> Builder:
    return lambda s: build(s) ** n


def _times(a: Builder, b: Builder) -> Builder:
    return lambda s: a(s) * b(s)


def unary_terms(x: torch.Tensor, terms: Terms, with_monomials: bool, limit: int) -> list[int]:
    """Adds u(c·a) terms; returns the indices of the scale-1 single-column/difference ones
    (the ones products are made of)."""
    base: list[int] = []
    for a, build, size, positive, simple in _unary_args(x, with_monomials):
        for c, cs in _SCALES:
            if terms.full(limit):
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
                if name in ("sin", "cos"):

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
    """monomial × unary term where the two share no column (a separable product), simplest
    first."""
    dummy = [sympy.Symbol(f"c{i}") for i in range(x.shape[1])]
    used = {u: {int(v.name[1:]) for v in terms.builders[u](dummy).free_symbols} for u in unary}
    pairs = sorted(
        (monomial_size(m) + terms.sizes[u], k, u)
        for k, m in enumerate(small)
        for u in unary
        if not used[u] & {i for i, _ in m}
    )
    values = {k: monomial_values(x, m) for k, m in enumerate(small)}
    for size, k, u in pairs:
        if terms.full(limit):
            return
        build = _times(monomial_builder(small[k]), terms.builders[u])
        terms.add(values[k] * terms.values[u], build, size + 1)


def build_library(
    x: torch.Tensor, max_terms: int = 28000, deadline: Callable[[], bool] = lambda: False
) -> Terms:
    """The explicit terms (monomials, unary, products) for columns x (rows, d)."""
    d = x.shape[1]
    terms = Terms(deadline=deadline)
    ones = torch.ones(x.shape[0], dtype=x.dtype)
    terms.values.append(ones)
    terms.builders.append(lambda s: sympy.Integer(1))
    terms.sizes.append(1)
    small = d <= 4
    mono = monomials(
        x, max_vars=3 if small else 2 if d <= 8 else 1, max_int=4 if small else 2,
        max_degree=8 if small else 4, limit=max_terms // 7,
    )  # fmt: skip
    for m in mono:
        terms.add(monomial_values(x, m), monomial_builder(m), monomial_size(m))
    combination_terms(x, terms, limit=len(terms) + max_terms // 10)
    unary = unary_terms(x, terms, with_monomials=d <= 6, limit=len(terms) + max_terms // 4)
    factors = [
        m
        for m in monomials(x, max_vars=1, max_int=2, max_degree=2, limit=200)
        if all(e.denominator == 1 or abs(e) == Fraction(1, 2) for _, e in m)
    ]
    if small:
        factors += [
            m
            for m in monomials(x, max_vars=3, max_int=1, max_degree=3, limit=5000)
            if len(m) > 1 and all(e.denominator == 1 for _, e in m)
        ]
        factors += [
            m
            for m in monomials(x, max_vars=2, max_int=1, max_degree=1, limit=200)
            if len(m) == 2 and all(abs(e) == Fraction(1, 2) for _, e in m)
        ]
    product_terms(x, terms, unary, factors, limit=max_terms)
    return terms


def implicit_monomials(x: torch.Tensor) -> list[Monomial]:
    """Monomials M of the implicit terms t·M (integer exponents up to ±2)."""
    d = x.shape[1]
    found = monomials(x, max_vars=3 if d <= 4 else 1, max_int=2, max_degree=5, limit=100_000)
    return [m for m in found if all(e.denominator == 1 for _, e in m)][:400]


@dataclass(frozen=True)
class Selection:
    columns: tuple[int, ...]
    coef: torch.Tensor  # (k,) float64
    intercept: float  # 0.0 when fitted without one
    sse: float


def _lstsq(a: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, float]:
    scale = a.abs().amax(0).clamp_min(1e-300)
    sol = torch.linalg.lstsq(a / scale, t[:, None], driver="gelsy").solution[:, 0]
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


def _scoring_matrix(z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(unit centred columns, unit centred target, usable columns) on the first 256 rows in
    float32: the scoring space; chosen subsets are refitted on all rows in float64."""
    rows = min(z.shape[0], 256)
    zc = z[:rows] - z[:rows].mean(0)
    norms = zc.pow(2).sum(0)
    usable = norms > 1e-16 * z[:rows].pow(2).sum(0)  # not constant on these rows
    zc = (zc / norms.clamp_min(1e-300).sqrt()).float()
    tc = (t[:rows] - t[:rows].mean()).double()
    return zc, (tc / tc.norm().clamp_min(1e-300)).float(), usable


def _pair_r2(c_head: torch.Tensor, c_all: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Exact R² of two-term least squares from correlations: c_head (h,) and c_all (p,) with
    the target, rho (h, p) between the terms; −1 where the pair is (nearly) collinear."""
    ci = c_head[:, None]
    den = 1 - rho.pow(2)
    r2 = ci.pow(2) + (c_all[None, :] - rho * ci).pow(2) / den.clamp_min(1e-30)
    r2[den <= 1e-4] = -1.0
    return r2


def _best_pairs(
    zc: torch.Tensor,
    c: torch.Tensor,
    usable: torch.Tensor,
    implicit_start: int,
    n: int,
    admit: Callable[[tuple[int, ...]], bool],
    first: int = 200,
) -> list[tuple[float, tuple[int, ...]]]:
    """The n best pairs (unexplained fraction, (i, j)): i among the `first` best single
    explicit columns, j any column — exact two-term least squares from correlations, so a
    pair whose terms only work together is found too."""
    g = c.pow(2)
    g[~usable] = -1.0
    g[implicit_start:] = -1.0
    heads = [k for k in torch.topk(g, min(first, g.numel())).indices.tolist() if g[k] >= 0]
    if not heads:
        return []
    rho = zc[:, heads].T @ zc  # (heads, p) column correlations
    r2 = _pair_r2(c[heads], c, rho)
    r2[:, ~usable] = -1.0
    out: list[tuple[float, tuple[int, ...]]] = []
    # explicit partners and t·M partners ranked apart: on noisy data t·M columns correlate
    # with t and their (degenerate) pairs would crowd out every explicit pair
    for part, quota in ((slice(0, implicit_start), n), (slice(implicit_start, None), n // 2)):
        scores = torch.full_like(r2, -1.0)
        scores[:, part] = r2[:, part]
        flat_scores = scores.flatten()
        taken = 0
        for flat in torch.topk(flat_scores, min(8 * quota, flat_scores.numel())).indices.tolist():
            i, j = heads[flat // r2.shape[1]], flat % r2.shape[1]
            if flat_scores[flat] < 0 or i == j:
                continue
            pair = (min(i, j), max(i, j))
            if admit(pair):
                out.append((1.0 - float(flat_scores[flat]), pair))
                taken += 1
            if taken >= quota:
                break
    out.sort(key=lambda s: s[0])
    return out


def _top_apart(score: torch.Tensor, split: int, n_head: int, n_tail: int) -> list[int]:
    """The n_head best indices below `split` and the n_tail best from `split` on."""
    head = torch.topk(score[:split], min(n_head, split)).indices.tolist()
    tail = score[split:]
    return head + [split + k for k in torch.topk(tail, min(n_tail, tail.numel())).indices.tolist()]


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
    zc, tc, usable = _scoring_matrix(z, t)
    norms = torch.ones(zc.shape[1], dtype=torch.float32)
    c = zc.T @ tc  # correlations with the target
    found: list[Selection] = []
    seen: set[tuple[int, ...]] = set()

    def admit(cols: tuple[int, ...]) -> bool:
        if cols in seen:
            return False
        seen.add(cols)
        return sum(k >= n_imp_start for k in cols) <= 2 and not _degenerate(z, t, cols, n_imp_start)

    def keep(level: list[tuple[float, tuple[int, ...]]]) -> list[tuple[float, tuple[int, ...]]]:
        level.sort(key=lambda s: s[0])
        for _, cols in level[: max(2, beam // 2)]:
            found.extend(fit_subset(z, t, cols))
        return level[:beam]

    gain1 = c.pow(2)
    gain1[~usable] = -1.0
    gain1[n_imp_start:] = -1.0  # a t·M term alone is degenerate (t = b·t·M)
    if start:
        states = [(1.0, start)]
    else:
        singles: list[tuple[float, tuple[int, ...]]] = [
            (1.0 - float(gain1[k]), (k,))
            for k in torch.topk(gain1, min(expand, gain1.numel())).indices.tolist()
            if gain1[k] >= 0 and admit((k,))
        ]
        states = keep(singles)
        if max_terms >= 2 and not deadline():
            states = keep(_best_pairs(zc, c, usable, n_imp_start, 4 * beam, admit)) or states
    while states and len(states[0][1]) < max_terms:
        if deadline() or (found and min(f.sse for f in found) <= 1e-24 * float(t @ t)):
            break
        nxt: list[tuple[float, tuple[int, ...]]] = []
        for _, cols in states:
            q, _ = torch.linalg.qr(zc[:, list(cols)])
            r = tc - q @ (q.T @ tc)
            den = norms - (q.T @ zc).pow(2).sum(0)  # |column projected off the state|²
            gain = (zc.T @ r).pow(2) / den.clamp_min(1e-30)
            gain[~usable | (den <= 1e-4)] = -1.0
            gain[list(cols)] = -1.0
            base = float(r @ r)
            # explicit and t·M additions ranked apart (t·M columns can crowd out the rest)
            picks = _top_apart(gain, n_imp_start, expand, expand // 3)
            for k in picks:
                new = tuple(sorted((*cols, k)))
                if gain[k] >= 0 and admit(new):
                    nxt.append((max(0.0, base - float(gain[k])), new))
        if not nxt:
            break
        states = keep(nxt)
    return found


def rational_select(
    z: torch.Tensor,
    t: torch.Tensor,
    denominators: Sequence[int],
    implicit_start: int,
    deadline: Callable[[], bool] = lambda: False,
    heads: int = 40,
    partners: int = 3000,
) -> list[Selection]:
    """t = P / (1 − b·M) with P of one or two explicit terms, for each implicit column t·M in
    `denominators`: the column is held in the fit (projected out, in closed form) and the best
    explicit pairs are searched exactly on what is left (heads × the `partners` columns most
    correlated with the rest). Finds laws such as (u + v)/(1 + u·v/c²), whose terms fit only
    together."""
    zc, tc, usable = _scoring_matrix(z, t)
    usable[implicit_start:] = False  # the numerator is explicit
    c0 = zc.T @ tc
    scored: list[tuple[float, tuple[int, ...]]] = []
    for m in denominators:
        if deadline():
            break
        u = zc[:, m]
        um = u @ zc  # (p,) each column's part along u
        ut = float(u @ tc)
        rest2 = 1.0 - ut**2  # |t projected off u|²
        if rest2 < 1e-10:
            continue
        left = (1.0 - um.pow(2)).clamp_min(0.0)  # |column projected off u|²
        ok = usable & (left > 1e-4)
        c = (c0 - um * ut) / (left.sqrt() * math.sqrt(rest2)).clamp_min(1e-30)
        c[~ok] = 0.0
        pool = torch.topk(c.abs(), min(partners, c.numel())).indices
        head = pool[: min(heads, pool.numel())]
        # correlations of heads and partners once u is projected off
        rho = (zc[:, head].T @ zc[:, pool] - um[head][:, None] * um[pool][None, :]) / (
            left[head].sqrt()[:, None] * left[pool].sqrt()[None, :]
        ).clamp_min(1e-30)
        r2 = _pair_r2(c[head], c[pool], rho)
        r2[:, ~ok[pool]] = -1.0
        for flat in torch.topk(r2.flatten(), min(6, r2.numel())).indices.tolist():
            i, j = int(head[flat // r2.shape[1]]), int(pool[flat % r2.shape[1]])
            if i != j and r2.flatten()[flat] >= 0:
                scored.append((float(1 - r2.flatten()[flat]) * rest2, tuple(sorted((i, j, m)))))
    scored.sort(key=lambda s: s[0])
    found: list[Selection] = []
    seen: set[tuple[int, ...]] = set()
    for _, cols in scored:
        if len(seen) >= 12:
            break
        if cols in seen:
            continue
        seen.add(cols)
        if not _degenerate(z, t, cols, implicit_start):
            found.extend(fit_subset(z, t, cols))
    return found
