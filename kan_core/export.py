"""Formula exports (LaTeX, sympy srepr, standalone NumPy source) and a safe torch evaluator.

Expressions are built by `kan_core.symbolic` from library functions and symbols made by
`kan_core.naming`; nothing here parses a string. Printers only emit identifiers that pass
`naming.is_safe_identifier`, numbers and a fixed set of functions; anything else raises.
Original column names appear in the Python source only as `repr()` string literals.

A *partial* formula (`symbolic.formula(..., allow_numeric=True)`) holds placeholders
φ_{l,i,j}(·) (`edge_placeholder`) for edges that are still splines. It is for display:
`to_latex` and `to_text` print it; the evaluator, srepr and Python exports refuse it and name
the edges to fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sympy
import torch
from sympy.core.function import AppliedUndef, UndefinedFunction
from sympy.printing.latex import LatexPrinter
from sympy.printing.numpy import NumPyPrinter

from kan_core.errors import KanCoreError
from kan_core.naming import SymbolMap, is_safe_identifier, latex_name


class ExportError(KanCoreError, ValueError):
    """An expression holds something the exporters do not print (unknown function or name)."""


_TORCH_FUNCS: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {
    sympy.exp: torch.exp,
    sympy.log: torch.log,
    sympy.sin: torch.sin,
    sympy.cos: torch.cos,
    sympy.tan: torch.tan,
    sympy.tanh: torch.tanh,
    sympy.sinh: torch.sinh,
    sympy.cosh: torch.cosh,
    sympy.atan: torch.arctan,
    sympy.asin: torch.arcsin,
    sympy.acos: torch.arccos,
    sympy.atanh: torch.arctanh,
    sympy.Abs: torch.abs,
    sympy.sign: torch.sign,
    # sympy rewrites e.g. tan(x + pi/2) as -cot(x) once a phase is snapped to pi/2
    sympy.cot: lambda v: 1.0 / torch.tan(v),
    sympy.sec: lambda v: 1.0 / torch.cos(v),
    sympy.csc: lambda v: 1.0 / torch.sin(v),
}


def _as_expr(e: object) -> sympy.Expr:
    """A sympy expression as is, a Python number as a sympy number; never parses text."""
    if isinstance(e, sympy.Basic):
        return e  # type: ignore[return-value]
    if isinstance(e, bool) or not isinstance(e, int | float):
        raise ExportError(f"expected a sympy expression or a number, got {type(e).__name__}")
    return sympy.Integer(e) if isinstance(e, int) else sympy.Float(e)


# ---- placeholders of numeric edges (partial formulas, display only) -------------------------

_PLACEHOLDER = re.compile(r"phi_(\d+)_(\d+)_(\d+)")


def edge_placeholder(layer: int, i: int, j: int) -> UndefinedFunction:
    """The undefined function φ_{layer,i,j} that stands for the numeric (spline) edge
    (layer, i → j) in a partial formula; LaTeX prints it as ``\\varphi_{layer,i,j}``."""
    if min(layer, i, j) < 0:
        raise ExportError(f"edge indices must be ≥ 0, got ({layer}, {i}, {j})")
    return UndefinedFunction(f"phi_{layer}_{i}_{j}")


def placeholder_edge(f: sympy.Basic) -> tuple[int, int, int] | None:
    """(layer, i, j) when `f` is an applied `edge_placeholder`, else None."""
    if isinstance(f, AppliedUndef) and len(f.args) == 1:
        m = _PLACEHOLDER.fullmatch(type(f).__name__)
        if m is not None:
            return int(m[1]), int(m[2]), int(m[3])
    return None


def placeholder_edges(expr: sympy.Basic) -> list[tuple[int, int, int]]:
    """The numeric edges (layer, i, j) whose placeholders appear in `expr`, sorted."""
    found = {placeholder_edge(f) for f in expr.atoms(AppliedUndef)}
    return sorted(e for e in found if e is not None)


def _check_expression(expr: sympy.Expr, allow_placeholders: bool = False) -> None:
    for s in expr.free_symbols:
        if not isinstance(s, sympy.Symbol) or not is_safe_identifier(s.name):
            raise ExportError(
                f"symbol {str(s)!r} was not made by kan_core.naming; use make_symbols"
            )
    edges = []
    for f in expr.atoms(sympy.Function):
        edge = placeholder_edge(f)
        if edge is not None:
            edges.append(edge)
        elif type(f) not in _TORCH_FUNCS:
            raise ExportError(f"function {type(f).__name__} is not supported by the exporters")
    if edges and not allow_placeholders:
        shown = ", ".join(f"(layer {l}, {i}→{j})" for l, i, j in sorted(edges)[:10])
        more = f" and {len(edges) - 10} more" if len(edges) > 10 else ""
        raise ExportError(
            f"this is a partial formula: {len(edges)} edge(s) are still splines, shown as "
            f"placeholders φ: {shown}{more}. It can be displayed but not evaluated or exported; "
            "fix those edges (or run auto-symbolic) first."
        )


# ---- torch evaluation with refittable constants -------------------------------------------


@dataclass
class CompiledExpression:
    """`fn(X (n, k), constants (p,)) -> (n,)`; `constants` are the expression's Float atoms."""

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    constants: list[sympy.Float]

    def __call__(self, x: torch.Tensor, constants: torch.Tensor | None = None) -> torch.Tensor:
        if constants is None:
            constants = torch.tensor([float(c) for c in self.constants], dtype=x.dtype)
        out = self.fn(x, constants)
        return out.expand(x.shape[0]) if out.dim() == 0 else out


def compile_expression(expr: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> CompiledExpression:
    """Walk the sympy tree once into nested torch closures (no code generation, no eval).

    Column k of X feeds symbols[k]; every Float atom becomes an entry of the constants vector.
    """
    expr = _as_expr(expr)
    _check_expression(expr)
    index = {s: k for k, s in enumerate(symbols)}
    consts: dict[sympy.Float, int] = {}

    def build(e: sympy.Basic) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if isinstance(e, sympy.Symbol):
            if e not in index:
                raise ExportError(f"symbol {e.name} is not an input of this formula")
            k = index[e]
            return lambda x, p: x[:, k]
        if isinstance(e, sympy.Float):
            k = consts.setdefault(e, len(consts))
            return lambda x, p: p[k]
        if e.is_number:
            v = float(e)
            return lambda x, p: torch.tensor(v, dtype=x.dtype)
        parts = [build(a) for a in e.args]
        if isinstance(e, sympy.Add):

            def add(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
                out = parts[0](x, p)
                for f in parts[1:]:
                    out = out + f(x, p)
                return out

            return add
        if isinstance(e, sympy.Mul):

            def mul(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
                out = parts[0](x, p)
                for f in parts[1:]:
                    out = out * f(x, p)
                return out

            return mul
        if isinstance(e, sympy.Pow):
            base, ex = parts
            if e.exp == sympy.Rational(1, 2):
                return lambda x, p: torch.sqrt(base(x, p))
            if e.exp.is_Integer:
                n = int(e.exp)
                return lambda x, p: base(x, p) ** n
            return lambda x, p: torch.pow(base(x, p), ex(x, p))
        fn = _TORCH_FUNCS.get(type(e))
        if fn is not None and len(parts) == 1:
            (arg,) = parts
            return lambda x, p: fn(arg(x, p))
        raise ExportError(f"cannot evaluate {type(e).__name__}")

    root = build(expr)
    ordered = sorted(consts, key=consts.__getitem__)
    return CompiledExpression(root, ordered)


def evaluate(expr: sympy.Expr, symbols: Sequence[sympy.Symbol], x: torch.Tensor) -> torch.Tensor:
    """Values of `expr` on the rows of x (n, k) (float64 recommended)."""
    return compile_expression(expr, symbols)(x)


# ---- printers --------------------------------------------------------------------------------


class _LatexWithPlaceholders(LatexPrinter):
    """sympy's LaTeX, with numeric-edge placeholders printed as φ_{l,i,j}(…)."""

    def _print_Function(self, expr: Any, exp: str | None = None) -> str:
        edge = placeholder_edge(expr)
        if edge is None:
            return str(super()._print_Function(expr, exp))
        layer, i, j = edge
        name = rf"\varphi_{{{layer},{i},{j}}}"
        if exp is not None:
            name = f"{name}^{{{exp}}}"
        return rf"{name}\left({self._print(expr.args[0])}\right)"


def to_latex(expr: sympy.Expr, output_name: str | None = None) -> str:
    """LaTeX of a formula; symbol names are escaped (`naming.latex_name`), never interpreted.

    `output_name` (a safe identifier, e.g. from `make_symbols`) adds a left-hand side.
    Placeholders of numeric edges (a partial formula) print as φ_{l,i,j}(…).
    """
    expr = _as_expr(expr)
    _check_expression(expr, allow_placeholders=True)
    names = {s: latex_name(s.name) for s in expr.free_symbols}
    body = _LatexWithPlaceholders({"symbol_names": names}).doprint(expr)
    if output_name is None:
        return body
    return f"{latex_name(output_name)} = {body}"


def to_text(expr: sympy.Expr) -> str:
    """Plain text for display, floats without trailing zeros (`2.5*exp(x)`); placeholders of
    numeric edges print as ``phi_l_i_j(…)``."""
    expr = _as_expr(expr)
    _check_expression(expr, allow_placeholders=True)
    return sympy.sstr(expr, full_prec=False)


def to_sympy_srepr(expr: sympy.Expr) -> str:
    """sympy's exact tree representation (`sympy.srepr`)."""
    expr = _as_expr(expr)
    _check_expression(expr)
    return sympy.srepr(expr)


class _Printer(NumPyPrinter):
    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        if not is_safe_identifier(expr.name):
            raise ExportError(f"unsafe symbol name {expr.name!r}")
        return expr.name


def to_python_source(
    exprs: Mapping[str, sympy.Expr] | Sequence[sympy.Expr],
    inputs: SymbolMap,
    function_name: str = "predict",
) -> str:
    """A standalone module with `predict(X) -> (n, n_outputs)` using NumPy only.

    `exprs` maps output column names (any text) to expressions over `inputs.symbols`;
    X has the input columns in `inputs.names` order.
    """
    if not is_safe_identifier(function_name):
        raise ExportError(f"function name {function_name!r} is not a safe identifier")
    items = (
        list(exprs.items())
        if isinstance(exprs, Mapping)
        else [(f"y{k}", e) for k, e in enumerate(exprs)]
    )
    printer = _Printer({"fully_qualified_modules": True, "standard": "python3"})
    lines = [
        '"""Formula exported by kanscope (NumPy only)."""',
        "",
        "import numpy",
        "",
        f"INPUT_COLUMNS = {list(inputs.names)!r}",
        f"OUTPUT_COLUMNS = {[str(name) for name, _ in items]!r}",
        "",
        "",
        f"def {function_name}(X):",
        '    """X: array (n, len(INPUT_COLUMNS)) → array (n, len(OUTPUT_COLUMNS))."""',
        "    _data = numpy.asarray(X, dtype=float)",
        "    if _data.ndim != 2 or _data.shape[1] != len(INPUT_COLUMNS):",
        "        raise ValueError('X must have shape (n, %d)' % len(INPUT_COLUMNS))",
    ]
    for k, s in enumerate(inputs.symbols):
        lines.append(f"    {printer.doprint(s)} = _data[:, {k}]")
    outs = []
    for k, (_, e) in enumerate(items):
        e = _as_expr(e)
        _check_expression(e)
        unknown = e.free_symbols - set(inputs.symbols)
        if unknown:
            raise ExportError(f"symbols {sorted(s.name for s in unknown)} are not inputs")
        lines.append(f"    _out{k} = numpy.zeros(_data.shape[0]) + ({printer.doprint(e)})")
        outs.append(f"_out{k}")
    lines.append(f"    return numpy.stack([{', '.join(outs)}], axis=1)")
    return "\n".join(lines) + "\n"
