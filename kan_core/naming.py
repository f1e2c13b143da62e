"""Column names → safe, unique, readable sympy symbols (with the mapping back).

A column name is user data. It never reaches a parser: each name becomes an ASCII identifier
([A-Za-z][A-Za-z0-9_]*) that is not a Python keyword or builtin, not a name sympy or NumPy give a
meaning to (E, I, S, N, O, Q, pi, oo, lambda, beta, gamma, …) and unique after the rewrite.
Exports print these identifiers only (LaTeX escapes them, Python uses them as parameter names),
so no name can change a formula's meaning or inject code. `SymbolMap` keeps the originals.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import sympy

# Names that mean something to sympy (constants, singletons, functions), to NumPy code or to
# LaTeX rendering of symbol names (Greek letters print as \lambda etc.); these get a suffix.
_SYMPY_RESERVED = {
    "E", "I", "S", "N", "O", "Q", "C", "pi", "oo", "nan", "zoo", "exp", "log", "ln", "sin",
    "cos", "tan", "sqrt", "abs", "sign", "np", "numpy", "math", "sympy", "torch", "inf",
}  # fmt: skip
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi",
    "omega", "varepsilon", "vartheta", "varphi", "varrho", "varsigma", "digamma", "lamda",
}  # fmt: skip
_MAX_LEN = 40
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def is_safe_identifier(text: str) -> bool:
    """True for identifiers this module produces (ASCII, no keyword, no reserved name)."""
    return bool(_IDENT.fullmatch(text)) and not _reserved(text)


def _reserved(name: str) -> bool:
    low = name.lower()
    return (
        keyword.iskeyword(name)
        or keyword.issoftkeyword(name)
        or name in _SYMPY_RESERVED
        or low in _GREEK
        or name.startswith("_")
    )


def safe_identifier(name: str) -> str:
    """A readable ASCII identifier for one column name (not yet made unique)."""
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    text = re.sub(r"_+", "_", text)[:_MAX_LEN].strip("_")
    if not text:
        text = "x"
    if text[0].isdigit():
        text = "x_" + text
    if _reserved(text):
        text = text + "_"
    return text


@dataclass(frozen=True)
class SymbolMap:
    """Original column names ↔ sympy symbols, in column order."""

    names: tuple[str, ...]
    symbols: tuple[sympy.Symbol, ...]

    def symbol(self, name: str) -> sympy.Symbol:
        return self.symbols[self.names.index(name)]

    def original(self, symbol: sympy.Symbol | str) -> str:
        key = symbol.name if isinstance(symbol, sympy.Symbol) else symbol
        return self.names[[s.name for s in self.symbols].index(key)]

    def as_dict(self) -> dict[str, str]:
        """{symbol name: original column name}."""
        return {s.name: n for s, n in zip(self.symbols, self.names, strict=True)}


def make_symbols(names: Iterable[str], taken: Iterable[str] = ()) -> SymbolMap:
    """Unique real symbols for `names` (order kept); `taken` identifiers are avoided too."""
    names = tuple(str(n) for n in names)
    used = set(taken)
    idents = []
    for n in names:
        base = safe_identifier(n)
        ident, k = base, 2
        while ident in used:
            ident = f"{base}_{k}"
            k += 1
        used.add(ident)
        idents.append(ident)
    return SymbolMap(names, tuple(sympy.Symbol(i, real=True) for i in idents))


def latex_name(identifier: str) -> str:
    """LaTeX for a safe identifier: upright text with underscores escaped (no sub/superscripts)."""
    if not _IDENT.fullmatch(identifier):
        raise ValueError(f"not a safe identifier: {identifier!r}")
    if len(identifier) == 1:
        return identifier
    return r"\mathrm{" + identifier.replace("_", r"\_") + "}"
