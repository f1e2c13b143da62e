"""Separability tests on a surrogate, recursion on the parts, network-guided terms, and the
sparse search on noisy tables with a large offset."""

from __future__ import annotations

import pytest
import sympy
import torch

from kan_core import discover_library as lib
from kan_core.discover import discover
from kan_core.discover_guided import guided_formulas
from kan_core.discover_separable import find_splits, find_symmetries, fit_surrogate, partition
from kan_core.export import compile_expression
from kan_core.model import KAN
from kan_core.scaling import Standardizer
from kan_core.train import FitConfig, TrainData, fit


def _table(f, d: int, n: int = 500, lo: float = 1.0, hi: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, d, generator=g, dtype=torch.float64)
    return x, f(*x.T)


def _splits(f, d: int):
    x, y = _table(f, d)
    sur = fit_surrogate(x[:400], y[:400], x[400:], y[400:], seed=0, deadline=lambda: False)
    return find_splits(sur, x[:400], seed=0)


@pytest.mark.parametrize(
    ("f", "kind", "parts"),
    [
        # a product whose value changes sign (cos): no log needed
        (lambda a, b, c: a * torch.cos(b) / c**2, "*", [(0,), (1,), (2,)]),
        (lambda a, b, c: torch.sin(a) + b * c, "+", [(0,), (1, 2)]),
    ],
)
def test_additive_and_multiplicative_splits_are_detected(f, kind, parts) -> None:
    splits = _splits(f, 3)
    assert splits, "no split found"
    assert partition(splits, 3) == (kind, parts)


def test_no_split_for_a_function_that_does_not_separate() -> None:
    assert _splits(lambda a, b, c: (a + b) / (1 + a * b * c), 3) == []


def test_a_separable_law_is_found_through_its_parts() -> None:
    """A product of four one-column factors, one of them changing sign."""
    x, y = _table(lambda e, p, t, r: p * torch.sin(2 * t) / (e * r**3), 4, n=800)
    result = discover(x, y, ["e", "p", "t", "r"], budget_s=40)
    e, p, t, r = sympy.symbols("e p t r", real=True)
    found = result.expr.xreplace({s: {"e": e, "p": p, "t": t, "r": r}[s.name]
                                  for s in result.expr.free_symbols})  # fmt: skip
    assert sympy.simplify(found - p * sympy.sin(2 * t) / (e * r**3)) == 0, result.formula.text
    # p and e enter only as p/e (a symmetry), then the product splits into its factors
    assert [a.stage for a in result.tried if a.stage in ("symmetry", "separability")]


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (lambda a, b, c: a * b / (1 + a * b * c), ("*", 0, 1)),
        (lambda a, b, c: torch.exp(-((a - b) ** 2)) * c, ("-", 0, 1)),
        (lambda a, b, c: a * b + c * b**2, None),  # b enters with a and with c
    ],
)
def test_symmetries_are_detected(f, expected) -> None:
    x, y = _table(f, 3)
    sur = fit_surrogate(x[:400], y[:400], x[400:], y[400:], seed=0, deadline=lambda: False)
    found = [(s.kind, s.i, s.j) for s in find_symmetries(sur, x[:400], seed=0)]
    assert found[:1] == ([expected] if expected else [])


def test_network_edges_become_terms_of_an_additive_formula() -> None:
    """A sigmoid step is not in the term library; the trained network's edge brings it in
    (as tanh or as the logistic function — the same curve)."""
    x, y = _table(lambda a, b: 2 * torch.tanh(2 * a - 4) + b, 2, n=300)
    xs, ys = Standardizer.fit(x), Standardizer.fit(y[:, None])
    model = KAN([2, 1], seed=0)
    fit(model, TrainData(xs.transform(x).float(), ys.transform(y[:, None]).float()),
        FitConfig(steps=60, optimizer="lbfgs", lr=1.0))  # fmt: skip
    syms = sympy.symbols("a b", real=True)
    formulas = guided_formulas(model, x, y, xs, syms, 3, deadline=lambda: False)

    def rmse(e: sympy.Expr) -> float:
        return float((compile_expression(e, syms)(x, None) - y).pow(2).mean().sqrt())

    best = min(formulas, key=rmse)
    assert rmse(best) < 1e-3 * float(y.std()), best
    assert best.atoms(sympy.tanh) or best.atoms(sympy.exp), best
    assert len(best.args) <= 4  # k + w·step(a) + b (+ at most one small term)


def test_sparse_search_sees_explicit_terms_past_correlated_ratio_terms() -> None:
    """A noisy target with a large offset (as hardness tables have): every t·M column
    correlates with t almost perfectly and alone means nothing (t = b·t·M); the explicit
    column that carries the signal must still be selected (it was crowded out before)."""
    g = torch.Generator().manual_seed(0)
    x = 100 + torch.rand(200, 3, generator=g, dtype=torch.float64)
    t = 100 + 10 * x[:, 0] + 2 * torch.randn(200, generator=g, dtype=torch.float64)
    ms = [x[:, i] ** p for i in range(3) for p in (-2, -1, 1, 2)]
    ms += [x[:, 0] * x[:, 1], x[:, 1] * x[:, 2], x[:, 0] / x[:, 2], x[:, 0] * x[:, 2]]
    z = torch.cat([x, t[:, None] * torch.stack(ms, 1)], 1)
    sels = lib.beam_select(z, t, 2, implicit_start=3)
    assert (0,) in [s.columns for s in sels]
    assert all(len(s.columns) > 1 or s.columns[0] < 3 for s in sels)  # no lone t·M term
