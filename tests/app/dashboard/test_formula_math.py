"""Formulas on the run and compare pages: typeset when short, LaTeX source when too long."""

from __future__ import annotations

from dash import dcc, html

from app.dashboard.components import FORMULA_TYPESET_MAX_CHARS, formula_math


def _walk(component):
    yield component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            yield from _walk(child)


def test_a_short_formula_is_typeset_by_mathjax():
    block = formula_math(r"0.5 x^{2} + \sin{\left(y \right)}")
    assert isinstance(block, dcc.Markdown)
    assert block.mathjax is True
    assert block.children == "$$\n0.5 x^{2} + \\sin{\\left(y \\right)}\n$$"


def test_a_formula_too_long_to_typeset_is_shown_as_folded_latex_source():
    # a [10, 16, 16, 1] KAN's partial formula is ~150 000 characters: MathJax would make as
    # many DOM nodes, and every click on the page would pay for them
    latex = " + ".join(rf"\varphi_{{0,{i},0}}(x_{{{i}}})" for i in range(2000))
    assert len(latex) > FORMULA_TYPESET_MAX_CHARS
    block = formula_math(latex)
    parts = list(_walk(block))
    assert not any(isinstance(p, dcc.Markdown) for p in parts)  # nothing for MathJax
    details = next(p for p in parts if isinstance(p, html.Details))
    assert not getattr(details, "open", False)  # folded: costs the page nothing until opened
    source = next(p for p in parts if isinstance(p, html.Pre))
    assert source.children == latex
    note = next(p for p in parts if "formula-too-long" in str(getattr(p, "className", "")))
    assert f"{len(latex):,} characters" in note.children
