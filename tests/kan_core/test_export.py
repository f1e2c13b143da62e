import ast
import math

import numpy as np
import pytest
import sympy
import torch

from kan_core.export import (
    ExportError,
    compile_expression,
    evaluate,
    to_latex,
    to_python_source,
    to_sympy_srepr,
    to_text,
)
from kan_core.model import KAN
from kan_core.naming import make_symbols
from kan_core.symbolic import auto_symbolic, formula

HOSTILE = ["E", "lambda", "x); import os #", "=cmd|' /C calc'!A0", "\\input{/etc/passwd}", "pi"]


def _expr(symbols):
    e, lam, x, cmd, inp, pi_ = symbols
    return (
        sympy.Float(2.5) * sympy.exp(sympy.sin(sympy.pi * e) + lam**2 / 4)
        + sympy.sqrt(sympy.Abs(x)) * sympy.tanh(cmd)
        - pi_ / 3
        + sympy.sign(e) * sympy.atan(inp)
        + sympy.log(1 + x**2) * sympy.cos(lam) ** 3
        + sympy.tan(e + sympy.pi / 2)  # sympy writes -cot(e)
    )


def _data(n=64, seed=0):
    return np.random.default_rng(seed).uniform(-2, 2, size=(n, len(HOSTILE)))


def test_compiled_expression_matches_sympy_numerics():
    m = make_symbols(HOSTILE)
    expr = _expr(m.symbols)
    x = _data(8)
    got = evaluate(expr, m.symbols, torch.tensor(x)).numpy()
    for row, value in zip(x, got, strict=True):
        exact = float(expr.evalf(subs=dict(zip(m.symbols, row.tolist(), strict=True))))
        assert value == pytest.approx(exact, rel=1e-12, abs=1e-12)


def test_compiled_constants_are_refittable():
    (x,) = make_symbols(["x"]).symbols
    c = compile_expression(sympy.Float(2.0) * x + sympy.Float(0.5), [x])
    assert sorted(float(v) for v in c.constants) == [0.5, 2.0]
    p = torch.tensor([float(v) for v in c.constants], dtype=torch.float64, requires_grad=True)
    out = c(torch.ones(3, 1, dtype=torch.float64), p)
    out.sum().backward()
    assert p.grad is not None and torch.all(p.grad == 3.0)


def test_python_source_is_standalone_safe_and_reproduces_predictions():
    m = make_symbols(HOSTILE)
    expr = _expr(m.symbols)
    src = to_python_source({"y); import os": expr, "second": m.symbols[0] * 2}, m)
    tree = ast.parse(src)
    kinds = [type(n).__name__ for n in tree.body]
    assert kinds == ["Expr", "Import", "Assign", "Assign", "FunctionDef"]
    assert [a.name for a in tree.body[1].names] == ["numpy"]
    assert ast.literal_eval(tree.body[2].value) == HOSTILE  # names only as string literals
    assert ast.literal_eval(tree.body[3].value) == ["y); import os", "second"]
    calls = {
        ast.unparse(n.func) for n in ast.walk(tree.body[4]) if isinstance(n, ast.Call)
    }  # only numpy functions (plus len/ValueError/abs for the checks)
    assert all(c.startswith("numpy.") or c in {"len", "ValueError", "abs"} for c in calls), calls
    namespace: dict = {}
    exec(compile(src, "<exported>", "exec"), namespace)  # our own generated code, by design
    x = _data()
    got = namespace["predict"](x)
    assert got.shape == (len(x), 2)
    want = evaluate(expr, m.symbols, torch.tensor(x)).numpy()
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[:, 1], 2 * x[:, 0])
    with pytest.raises(ValueError, match="shape"):
        namespace["predict"](x[:, :2])


def test_constant_formula_broadcasts():
    m = make_symbols(["a"])
    ns: dict = {}
    exec(to_python_source([sympy.Float(1.5)], m), ns)
    assert ns["predict"](np.zeros((4, 1))).tolist() == [[1.5]] * 4


def test_latex_cannot_be_injected_and_keeps_meaning():
    m = make_symbols(HOSTILE)
    tex = to_latex(_expr(m.symbols), output_name=make_symbols(["y"]).symbols[0].name)
    assert tex.startswith("y = ")
    assert "\\input" not in tex and "import os" not in tex and "calc'" not in tex
    assert r"\mathrm{E\_}" in tex and r"\mathrm{lambda\_}" in tex and r"\mathrm{pi\_}" in tex
    assert r"\lambda" not in tex  # the column 'lambda' is not rendered as a Greek letter
    assert tex.count("{") == tex.count("}")


def test_srepr_is_exact_and_keeps_symbols_distinct_from_constants():
    m = make_symbols(["E", "pi"])
    e, p = m.symbols
    text = to_sympy_srepr(e * sympy.E + p * sympy.pi)
    assert text == "Add(Mul(E, Symbol('E_', real=True)), Mul(pi, Symbol('pi_', real=True)))"


def test_exporters_reject_unsafe_input():
    bad = sympy.Symbol("x); import os #")
    with pytest.raises(ExportError, match="naming"):
        to_latex(bad + 1)
    with pytest.raises(ExportError):
        to_python_source([bad], make_symbols(["x"]))
    with pytest.raises(ExportError, match="not an input"):
        evaluate(sympy.Symbol("q", real=True), make_symbols(["x"]).symbols, torch.zeros(2, 1))
    with pytest.raises(ExportError, match="not supported"):
        to_sympy_srepr(sympy.gamma(make_symbols(["x"]).symbols[0]))
    with pytest.raises(ExportError, match="expected a sympy expression"):
        to_latex("2**2**2**20")  # strings are never parsed
    with pytest.raises(ExportError):
        to_python_source([sympy.Integer(1)], make_symbols(["x"]), function_name="f(); import os")


def test_exported_formula_reproduces_formula_predictions():
    """End to end: a symbolic KAN → formula → Python source → same numbers as the formula."""
    torch.manual_seed(0)
    model = KAN([2, 2, 1], seed=5)
    x = torch.rand(200, 2) * 2 - 1
    auto_symbolic(model, x, r2_threshold=-1.0, library=["x", "sin", "x^2", "exp"])
    with torch.no_grad():
        y = model(x)
    result = formula(model, x, y, ["x); import os", "E"], ["out"])
    out = result.formulas[0]
    assert math.isfinite(out.r2) and out.r2 > 0.99
    ns: dict = {}
    exec(to_python_source(result.exprs(), result.inputs), ns)
    got = ns["predict"](x.double().numpy())[:, 0]
    want = evaluate(out.expr, result.inputs.symbols, x.double()).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert to_latex(out.expr, result.outputs.symbols[0].name).startswith(r"\mathrm{out} = ")


def test_rounded_constants_print_short_and_evaluate_exactly():
    (x,) = make_symbols(["x"]).symbols
    expr = sympy.Float(0.7604) * sympy.sin(sympy.Float(2.5) * x)
    assert to_text(expr) == "0.7604*sin(2.5*x)"
    assert to_latex(expr) == r"0.7604 \sin{\left(2.5 x \right)}"
    got = evaluate(expr, [x], torch.tensor([[1.0]], dtype=torch.float64))
    assert float(got) == 0.7604 * math.sin(2.5)
