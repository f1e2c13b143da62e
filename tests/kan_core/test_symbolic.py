import math
import time

import pytest
import sympy
import torch

from kan_core.errors import ConfigError
from kan_core.export import compile_expression, evaluate
from kan_core.functions import SymbolicFunction, UnknownFunctionError, get_function
from kan_core.model import KAN
from kan_core.scaling import Standardizer
from kan_core.symbolic import (
    FormulaIncompleteError,
    SymbolicFitError,
    auto_symbolic,
    fit_edge_candidates,
    fix,
    formula,
    suggest,
    unfix,
)
from kan_core.train import FitConfig, TrainData, fit


def _grid(n=256, lo=-1.0, hi=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _edge_value(name, p, x):
    a, b, c, d = p
    return c * get_function(name).torch_fn(a * x.double() + b) + d


# ---- pure fitter ---------------------------------------------------------------------------

KNOWN = [
    ("sin", lambda x: torch.sin(math.pi * x)),
    ("x^2", lambda x: 3 * (x - 0.2) ** 2 + 1),
    ("exp", lambda x: 2 * torch.exp(1.5 * x) - 1),
    ("x", lambda x: -2 * x + 0.5),
    ("1/x", lambda x: 1 / (x + 2)),
    ("tanh", lambda x: torch.tanh(3 * x)),
    ("log", lambda x: torch.log(x + 1.5)),
    ("x^3", lambda x: 0.5 * x**3),
    ("sqrt", lambda x: torch.sqrt(x + 1.2)),
    ("gaussian", lambda x: torch.exp(-((2 * x) ** 2))),
]


def test_fitter_recovers_each_function_on_every_edge_at_once():
    x = torch.stack([_grid(seed=k) for k in range(len(KNOWN))])  # (E, n)
    y = torch.stack([f(x[e]) for e, (_, f) in enumerate(KNOWN)])
    fits = fit_edge_candidates(x, y)
    for e, (name, _) in enumerate(KNOWN):
        best = fits.ranked(e)[0]
        assert best.name == name, (name, [(c.name, c.r2) for c in fits.ranked(e)[:4]])
        assert best.r2 > 1 - 1e-8
        # the parameters are in the edge's own units: c·f(a·x+b)+d reproduces y
        pred = _edge_value(best.name, best.params, x[e])
        assert torch.allclose(pred, y[e].double(), atol=1e-4 * (1 + y[e].abs().max()))


def test_readable_parameters():
    x = _grid()
    fits = fit_edge_candidates(
        torch.stack([x, x, x]), torch.stack([x**2, torch.log(x + 1.5), torch.exp(x)])
    )
    sq, lg, ex = (fits.ranked(e)[0] for e in range(3))
    assert (sq.name, round(sq.a, 6), round(sq.b, 6), round(sq.c, 6)) == ("x^2", 1.0, 0.0, 1.0)
    assert (lg.name, round(lg.a, 6), round(lg.b, 6)) == ("log", 1.0, 1.5)
    assert (ex.name, round(ex.b, 6), round(ex.c, 4)) == ("exp", 0.0, 1.0)


def test_vectorised_fit_equals_one_edge_at_a_time():
    xs = torch.stack([_grid(seed=s) for s in range(3)])
    ys = torch.stack([torch.sin(2 * xs[0]), xs[1] ** 2, torch.exp(xs[2])])
    together = fit_edge_candidates(xs, ys, ["sin", "x^2", "exp", "tanh"])
    for e in range(3):
        alone = fit_edge_candidates(xs[e : e + 1], ys[e : e + 1], ["sin", "x^2", "exp", "tanh"])
        assert torch.allclose(together.r2[e], alone.r2[0], atol=1e-9, equal_nan=True)


def test_non_finite_candidates_are_skipped_never_chosen():
    nan_fn = SymbolicFunction("nan", lambda x: torch.full_like(x, math.nan), lambda x: x, 0)
    x = _grid()
    fits = fit_edge_candidates(x[None], (x**2)[None], [nan_fn, get_function("x^2")])
    assert math.isnan(float(fits.r2[0, 0]))
    assert [c.name for c in fits.ranked(0)] == ["x^2"]
    only_nan = fit_edge_candidates(x[None], (x**2)[None], [nan_fn])
    assert only_nan.ranked(0) == [] and only_nan.best() == [None]


def test_every_ranked_candidate_is_finite_on_data_containing_zero():
    x = torch.linspace(-1, 1, 201)  # contains 0 exactly: 1/x, log, sqrt must shift or go
    y = torch.sin(3 * x)
    fits = fit_edge_candidates(x[None], y[None])
    ranked = fits.ranked(0)
    assert ranked
    for c in ranked:
        assert torch.isfinite(_edge_value(c.name, c.params, x)).all(), c


def test_constant_edge_is_zero_function():
    x = _grid()
    best = fit_edge_candidates(x[None], torch.full_like(x, 2.5)[None]).ranked(0)[0]
    assert best.name == "0" and best.d == pytest.approx(2.5) and best.c == 0.0


def test_library_restriction_and_unknown_names():
    x = _grid()
    fits = fit_edge_candidates(x[None], torch.sin(x)[None], ["x", "x^2"])
    assert fits.names == ("x", "x^2")
    with pytest.raises(UnknownFunctionError, match="Available functions"):
        fit_edge_candidates(x[None], x[None], ["x", "import os"])
    with pytest.raises(ConfigError):
        fit_edge_candidates(x[None], x[None], [])
    with pytest.raises(ConfigError):
        fit_edge_candidates(x[None], x[None, :10], ["x"])


@pytest.mark.slow
def test_all_edges_of_a_4_8_1_kan_fit_quickly_with_the_full_library():
    model = KAN([4, 8, 1], seed=0)
    x = torch.rand(512, 4) * 2 - 1
    fit_edge_candidates(torch.rand(2, 64), torch.rand(2, 64))  # warm-up
    t0 = time.perf_counter()
    report = auto_symbolic(model, x, r2_threshold=-1.0)
    elapsed = time.perf_counter() - t0
    assert len(report.fixed) == 40
    assert elapsed < 10.0  # ~0.5 s on one idle core (see benchmarks/bench_symbolic.py)


# ---- model level -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_sq():
    """A [2, 1] KAN trained on x² + y² (a sum of univariate functions)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(600, 2, generator=g) * 2 - 1
    y = (x[:, 0] ** 2 + x[:, 1] ** 2)[:, None]
    model = KAN([2, 1], seed=0)
    fit(model, TrainData(x, y), FitConfig(steps=40, optimizer="lbfgs", lr=1.0))
    return model, x, y


def test_suggest_ranks_the_true_function_first(trained_sq):
    model, x, _ = trained_sq
    ranked = suggest(model, x, 0, 0, 0, top=5)
    assert len(ranked) == 5 and ranked[0].name == "x^2" and ranked[0].r2 > 0.9999
    assert [c.score for c in ranked] == sorted(c.score for c in ranked) or ranked[0].r2 > 0.9999
    assert [c.name for c in suggest(model, x, 0, 0, 0, library=["sin", "x"])][0] in {"sin", "x"}


def test_fix_sets_the_edge_and_unfix_restores_the_spline():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 2, generator=g) * 2 - 1
    model = KAN([2, 3, 1], seed=1)
    with torch.no_grad():
        _, before = model.forward_with_activations(x)
    result = fix(model, x, 0, 1, 2, "sin")
    layer = model.layers[0]
    assert layer.sym_names[2][1] == "sin" and float(layer.sym_mask[2, 1]) == 1.0
    stored = layer.sym_affine[2, 1].detach().double()
    assert torch.allclose(stored, torch.tensor(result.params, dtype=torch.float64), rtol=1e-6)
    with torch.no_grad():
        _, after = model.forward_with_activations(x)
    pre = before[0].inputs[:, 1]
    expect = _edge_value("sin", result.params, pre).float()
    assert torch.allclose(after[0].edge_values[:, 2, 1], expect, atol=1e-5)
    assert layer.sym_affine.requires_grad  # fixed edges stay trainable
    unfix(model, 0, 1, 2)
    with torch.no_grad():
        _, again = model.forward_with_activations(x)
    assert layer.sym_names[2][1] == "" and float(layer.sym_mask[2, 1]) == 0.0
    assert torch.allclose(again[0].edge_values, before[0].edge_values)


def test_fix_validates_edge_and_name():
    model = KAN([2, 2, 1], seed=0)
    x = torch.rand(50, 2)
    with pytest.raises(ConfigError, match="does not exist"):
        fix(model, x, 0, 5, 0, "sin")
    with pytest.raises(ConfigError, match="layer 7"):
        suggest(model, x, 7, 0, 0)
    with pytest.raises(UnknownFunctionError):
        fix(model, x, 0, 0, 0, "__import__('os')")
    with pytest.raises(ConfigError, match="shape"):
        suggest(model, torch.rand(10, 3), 0, 0, 0)


def test_fix_rejects_a_function_that_is_non_finite_everywhere(monkeypatch):
    from kan_core import functions

    bad = SymbolicFunction("nanfn", lambda x: torch.log(-(x**2) - 1), sympy.log, 2)
    monkeypatch.setitem(functions.FUNCTIONS, "nanfn", bad)
    model = KAN([1, 1], seed=0)
    with pytest.raises(SymbolicFitError, match="non-finite"):
        fix(model, torch.rand(50, 1), 0, 0, 0, "nanfn")
    assert model.layers[0].sym_names[0][0] == ""


def test_auto_symbolic_never_fixes_below_threshold():
    model = KAN([3, 4, 1], seed=3)  # untrained: random splines, many fit no function well
    x = torch.rand(400, 3) * 2 - 1
    threshold = 0.99999
    report = auto_symbolic(model, x, r2_threshold=threshold)
    assert report.numeric, "expected some random splines to stay numeric"
    for e in report.numeric:
        assert model.layers[e.layer].sym_names[e.j][e.i] == ""
        assert e.best_r2 is None or e.best_r2 < threshold
    for e in report.fixed:
        assert e.fit.r2 >= threshold
        assert model.layers[e.layer].sym_names[e.j][e.i] == e.fit.name
    assert len(report.fixed) + len(report.numeric) == 3 * 4 + 4
    with pytest.raises(FormulaIncompleteError, match="still numeric"):
        formula(model, x, torch.zeros(400, 1))


def test_auto_symbolic_skips_pruned_edges_and_validates():
    model = KAN([2, 2, 1], seed=0)
    with torch.no_grad():
        model.layers[1].mask[0, 1] = 0.0  # hidden node 1 reaches no output
    report = auto_symbolic(model, torch.rand(100, 2), r2_threshold=-1.0)
    assert report.inactive == 1 + 2
    assert {(e.layer, e.j) for e in report.fixed if e.layer == 0} == {(0, 0)}
    with pytest.raises(ConfigError):
        auto_symbolic(model, torch.rand(10, 2), r2_threshold=math.nan)


def test_auto_symbolic_stops_between_batches_when_its_time_is_spent():
    lib = ["x", "x^2", "sin"]
    x = torch.rand(120, 3) * 2 - 1
    late = KAN([3, 2, 1], seed=5)
    report = auto_symbolic(late, x, r2_threshold=0.0, library=lib, time_budget_s=0.0)
    assert not report.fixed and not report.numeric  # no batch started: nothing half done
    assert sorted(report.out_of_time) == sorted(
        [(0, i, j) for i in range(3) for j in range(2)] + [(1, i, 0) for i in range(2)]
    )
    assert all(bool((layer.sym_mask == 0).all()) for layer in late.layers)
    # one edge per batch fixes exactly what one batch per layer fixes
    whole, single = KAN([3, 2, 1], seed=5), KAN([3, 2, 1], seed=5)
    a = auto_symbolic(whole, x, r2_threshold=0.9, library=lib, time_budget_s=600.0)
    b = auto_symbolic(single, x, r2_threshold=0.9, library=lib, edges_per_batch=1)
    assert not a.out_of_time and not b.out_of_time
    assert [(e.layer, e.i, e.j, e.fit.name) for e in a.fixed] == [
        (e.layer, e.i, e.j, e.fit.name) for e in b.fixed
    ]
    assert len(a.fixed) + len(a.numeric) == 8
    with pytest.raises(ConfigError, match="time_budget_s"):
        auto_symbolic(late, x, time_budget_s=-1.0)


def test_formula_composition_is_exact_in_original_units():
    """Before rounding/refit the composed formula equals the symbolic network (no training)."""
    g = torch.Generator().manual_seed(2)
    raw_x = torch.stack(
        [torch.rand(300, generator=g) * 10 + 5, torch.rand(300, generator=g) - 3], 1
    )
    raw_y = (raw_x[:, :1] ** 2) * 0.1 + 7
    xs, ys = Standardizer.fit(raw_x), Standardizer.fit(raw_y)
    model = KAN([2, 3, 1], seed=4)
    auto_symbolic(
        model, xs.transform(raw_x), r2_threshold=-1.0, library=["x", "sin", "tanh", "x^2"]
    )
    result = formula(model, raw_x, raw_y, ["T (K)", "lambda"], ["E"], x_scaler=xs, y_scaler=ys)
    f = result.formulas[0]
    with torch.no_grad():
        net = ys.inverse_transform(model(xs.transform(raw_x))).double()[:, 0]
    exact = evaluate(f.exact_expr, result.inputs.symbols, raw_x.double())
    scale = 1 + float(net.abs().max())
    assert float((exact - net).abs().max()) < 1e-5 * scale
    assert f.exact_max_abs_diff < 1e-5 * scale
    assert [s.name for s in result.inputs.symbols] == ["T_K", "lambda_"]
    assert result.outputs.symbols[0].name == "E_" and f.output == "E"
    assert f.pareto and all(c.complexity > 0 for c in f.pareto)


# ---- recovery from data ----------------------------------------------------------------------

X, Y = sympy.symbols("x y", real=True)


def _poly_coeffs(expr):
    return sympy.Poly(sympy.expand(expr), X, Y).as_dict()


CASES = {
    "exp_sin": (
        [2, 1, 1],
        lambda x: torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2),
        lambda e: e.has(sympy.exp) and e.has(sympy.sin) and e.has(sympy.pi),
    ),
    "product": (
        [2, 2, 1],
        lambda x: x[:, 0] * x[:, 1],
        lambda e: e.is_polynomial(X, Y) and _close(_poly_coeffs(e), {(1, 1): 1.0}),
    ),
    "sin_cos": (
        [2, 1],
        lambda x: torch.sin(x[:, 0]) + torch.cos(x[:, 1]),
        lambda e: e.has(sympy.sin) and e.has(sympy.cos),
    ),
    "squares": (
        [2, 1],
        lambda x: x[:, 0] ** 2 + x[:, 1] ** 2,
        lambda e: e.is_polynomial(X, Y) and _close(_poly_coeffs(e), {(2, 0): 1.0, (0, 2): 1.0}),
    ),
}


def _close(coeffs, expected, tol=1e-3):
    keys = set(coeffs) | set(expected)
    return all(abs(float(coeffs.get(k, 0)) - expected.get(k, 0.0)) < tol for k in keys)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_recovers_classic_formulas_from_data(case):
    width, f, structure = CASES[case]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1000, 2, generator=g) * 2 - 1
    y = f(x)[:, None]
    x_test = torch.rand(1000, 2, generator=g) * 2 - 1
    y_test = f(x_test).double()
    # LBFGS on these tiny nets sometimes lands in a poor minimum, and which symbolic form wins
    # on a near-linear edge (x versus sin(0.17·x)) depends on the exact trajectory, so on float
    # rounding. Keep the best of three restarts, as a user would. Known weakness: after the
    # fused engine's trajectories, x·y comes out as 34·sin(0.172x)·sin(0.172y) (seeds 0-3);
    # this test is about the symbolic stage, so it pins the PyTorch training path.
    fits = []
    for seed in range(3):
        candidate = KAN(width, seed=seed)
        cfg = FitConfig(steps=100, optimizer="lbfgs", lr=1.0, fused=False)
        fits.append((fit(candidate, TrainData(x, y), cfg).train_loss, seed, candidate))
    model = min(fits, key=lambda t: t[:2])[2]
    report = auto_symbolic(model, x)
    assert report.numeric == []
    result = formula(model, x, y, ["x", "y"], ["f"])
    out = result.formulas[0]
    # composed formula == network in symbolic mode (float tolerance), before any refit
    with torch.no_grad():
        net = model(x).double()[:, 0]
    exact = evaluate(out.exact_expr, result.inputs.symbols, x.double())
    assert float((exact - net).abs().max()) < 1e-4 * (1 + float(net.abs().max()))
    # the exported formula generalises and has the right structure
    pred = compile_expression(out.expr, result.inputs.symbols)(x_test.double())
    r2 = 1 - float(((pred - y_test) ** 2).sum() / ((y_test - y_test.mean()) ** 2).sum())
    assert r2 > 0.999, (case, out.expr)
    assert structure(out.expr.subs({result.inputs.symbols[0]: X, result.inputs.symbols[1]: Y})), (
        out.expr
    )


def test_fixed_edges_are_retrained_by_fit():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(400, 2, generator=g) * 2 - 1
    y = (2 * torch.sin(1.5 * x[:, 0]) + x[:, 1] ** 2)[:, None]
    model = KAN([2, 1], seed=0)
    model.layers[0].set_symbolic(0, 0, "sin", 1.0, 0.0, 1.0, 0.0)  # wrong amplitude, frequency
    model.layers[0].set_symbolic(1, 0, "x^2", 1.0, 0.0, 1.0, 0.0)
    before = float(((model(x) - y) ** 2).mean())
    fit(model, TrainData(x, y), FitConfig(steps=30, optimizer="lbfgs", lr=1.0, update_grid_every=0))
    after = float(((model(x) - y) ** 2).mean())
    a, _, c, _ = model.layers[0].sym_affine[0, 0].tolist()
    assert after < 1e-6 < before
    assert abs(a * c - 3.0) < 1e-2 and abs(abs(a) - 1.5) < 1e-2
