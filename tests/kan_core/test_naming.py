import keyword

import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from kan_core.naming import is_safe_identifier, latex_name, make_symbols, safe_identifier

HOSTILE = [
    "E", "I", "S", "N", "pi", "lambda", "x y", "1st", "=cmd|' /C calc'!A0", "x); import os #",
    "", "   ", "__import__", "\\input{/etc/passwd}", "a\nb", "oo", "zoo", "nan", "Q", "O",
    "Température (°C)", "x", "X", "x", "np", "numpy", "class", "match", "_X", "$x^2$",
]  # fmt: skip


def test_hostile_names_become_safe_unique_readable_symbols():
    m = make_symbols(HOSTILE)
    names = [s.name for s in m.symbols]
    assert len(set(names)) == len(names)
    for n in names:
        assert n.isidentifier() and n.isascii() and is_safe_identifier(n)
        assert not keyword.iskeyword(n) and not keyword.issoftkeyword(n)
    by_original = dict(zip(HOSTILE[:10], names[:10], strict=True))
    assert by_original == {
        "E": "E_", "I": "I_", "S": "S_", "N": "N_", "pi": "pi_", "lambda": "lambda_",
        "x y": "x_y", "1st": "x_1st", "=cmd|' /C calc'!A0": "cmd_C_calc_A0",
        "x); import os #": "x_import_os",
    }  # fmt: skip
    assert names[HOSTILE.index("Température (°C)")] == "Temperature_C"
    assert names[HOSTILE.index("np")] == "np_" and names[HOSTILE.index("class")] == "class_"


def test_mapping_back_to_the_original_names():
    m = make_symbols(HOSTILE)
    for original, symbol in zip(HOSTILE, m.symbols, strict=True):
        if HOSTILE.count(original) == 1:
            assert m.original(symbol) == original
            assert m.symbol(original) == symbol
    assert list(m.as_dict().values()) == HOSTILE


def test_symbols_are_plain_symbols_not_sympy_constants():
    m = make_symbols(["E", "I", "pi", "oo"])
    for s in m.symbols:
        assert isinstance(s, sympy.Symbol) and s.is_real
        assert s not in (sympy.E, sympy.I, sympy.pi, sympy.oo)
    expr = m.symbols[0] + m.symbols[2]
    assert expr.free_symbols == {m.symbols[0], m.symbols[2]}


def test_taken_names_are_avoided():
    m = make_symbols(["y", "x"], taken=["y"])
    assert [s.name for s in m.symbols] == ["y_2", "x"]


def test_latex_names_escape_everything():
    assert latex_name("x") == "x"
    assert latex_name("x_1st") == r"\mathrm{x\_1st}"
    for bad in ["\\input", "x y", "{", "1x", ""]:
        try:
            latex_name(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=12))
def test_any_names_give_unique_safe_identifiers(names):
    m = make_symbols(names)
    idents = [s.name for s in m.symbols]
    assert len(set(idents)) == len(idents)
    assert all(is_safe_identifier(i) and len(i) <= 48 for i in idents)
    assert all(is_safe_identifier(safe_identifier(n)) for n in names)
