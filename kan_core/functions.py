"""The symbolic function library: name → (torch function, sympy function, complexity).

Edges are fixed to a function *by name* from this registry; no user string is ever parsed.
Every torch function is total on finite inputs where the maths allows it; candidates that
produce non-finite values on an edge's data are rejected by the fitter, never chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sympy
import torch

from kan_core.errors import KanCoreError


class UnknownFunctionError(KanCoreError, KeyError):
    """A symbolic function name that is not in the library."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Unknown symbolic function {name!r}. Available functions: {sorted(FUNCTIONS)}"
        )

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


@dataclass(frozen=True)
class SymbolicFunction:
    name: str
    torch_fn: Callable[[torch.Tensor], torch.Tensor]
    sympy_fn: Callable[[sympy.Expr], sympy.Expr]
    complexity: int


def _sgn(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x)


def _gaussian(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-(x**2))


def _safe_pow(p: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.pow(x, p)

    return fn


_ENTRIES: list[SymbolicFunction] = [
    SymbolicFunction("0", lambda x: torch.zeros_like(x), lambda x: sympy.Integer(0), 0),
    SymbolicFunction("x", lambda x: x, lambda x: x, 1),
    SymbolicFunction("x^2", lambda x: x**2, lambda x: x**2, 2),
    SymbolicFunction("x^3", lambda x: x**3, lambda x: x**3, 3),
    SymbolicFunction("x^4", lambda x: x**4, lambda x: x**4, 3),
    SymbolicFunction("1/x", lambda x: 1.0 / x, lambda x: 1 / x, 2),
    SymbolicFunction("1/x^2", lambda x: 1.0 / x**2, lambda x: 1 / x**2, 2),
    SymbolicFunction("x^5", lambda x: x**5, lambda x: x**5, 3),
    SymbolicFunction("1/x^3", lambda x: 1.0 / x**3, lambda x: 1 / x**3, 3),
    SymbolicFunction("1/x^4", lambda x: 1.0 / x**4, lambda x: 1 / x**4, 4),
    SymbolicFunction("sqrt", torch.sqrt, sympy.sqrt, 2),
    SymbolicFunction("x^1.5", _safe_pow(1.5), lambda x: x ** sympy.Rational(3, 2), 3),
    SymbolicFunction("1/sqrt", lambda x: 1.0 / torch.sqrt(x), lambda x: 1 / sympy.sqrt(x), 3),
    SymbolicFunction("exp", torch.exp, sympy.exp, 2),
    SymbolicFunction("log", torch.log, sympy.log, 2),
    SymbolicFunction("sin", torch.sin, sympy.sin, 2),
    SymbolicFunction("cos", torch.cos, sympy.cos, 2),
    SymbolicFunction("tan", torch.tan, sympy.tan, 3),
    SymbolicFunction("tanh", torch.tanh, sympy.tanh, 3),
    SymbolicFunction("sigmoid", torch.sigmoid, lambda x: 1 / (1 + sympy.exp(-x)), 3),
    SymbolicFunction("arctan", torch.arctan, sympy.atan, 3),
    SymbolicFunction("arcsin", torch.arcsin, sympy.asin, 4),
    SymbolicFunction("arccos", torch.arccos, sympy.acos, 4),
    SymbolicFunction("arctanh", torch.arctanh, sympy.atanh, 4),
    SymbolicFunction("abs", torch.abs, sympy.Abs, 3),
    SymbolicFunction("sgn", _sgn, sympy.sign, 3),
    SymbolicFunction("gaussian", _gaussian, lambda x: sympy.exp(-(x**2)), 3),
]

FUNCTIONS: dict[str, SymbolicFunction] = {f.name: f for f in _ENTRIES}
FUNCTION_NAMES: tuple[str, ...] = tuple(f.name for f in _ENTRIES)


def get_function(name: str) -> SymbolicFunction:
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise UnknownFunctionError(name) from None


def resolve_library(names: Iterable[str] | None) -> list[SymbolicFunction]:
    """The functions to try: all of them, or the named subset (unknown names raise)."""
    if names is None:
        return list(_ENTRIES)
    return [get_function(n) for n in names]
