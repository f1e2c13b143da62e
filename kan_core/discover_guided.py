"""Network-guided terms: a trained KAN proposes one-variable functions, least squares combines.

A KAN's first-layer edges are one-variable functions of the inputs. Each edge's best library
fits (by R² alone: c·f(a·x + b) + d) become columns f(a·x + b) in the inputs' own units; a
sparse least-squares search (`discover_library.beam_select`) then picks which of them, and
with which weights, explain y end to end — an edge is judged by what it adds to the whole fit,
not by its isolated R². This finds additive laws y ≈ k + Σ w_i·f_i(x_i) that the term library
does not hold (a tanh or a shifted power of one column), and gives a noisy table a formula as
accurate as its additive network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy
import torch

from kan_core import discover_library as lib
from kan_core.functions import resolve_library
from kan_core.model import KAN
from kan_core.scaling import Standardizer
from kan_core.symbolic import fit_edge_candidates

#: candidates kept per edge (by R²) and the weakest R² an edge's candidate may have
PER_EDGE = 3
MIN_EDGE_R2 = 0.5


def edge_terms(
    model: KAN, x: torch.Tensor, xs: Standardizer
) -> tuple[torch.Tensor, list[lib.Builder]]:
    """Columns f(a·x_i + b) of the model's first-layer edges on rows x (raw units), with
    their sympy builders; plus the inputs themselves (a linear term is always on offer)."""
    xt = xs.transform(x).to(next(model.parameters()).dtype)
    with torch.no_grad():
        _, traces = model.forward_with_activations(xt)
    pre, post = traces[0].inputs, traces[0].edge_values  # (rows, in), (rows, out, in)
    n_out, n_in = post.shape[1], post.shape[2]
    funcs = [f for f in resolve_library(None) if f.name not in ("0", "x")]
    fits = fit_edge_candidates(
        pre.T.repeat(n_out, 1), post.permute(1, 2, 0).reshape(n_out * n_in, -1), funcs
    )
    mean, std = xs.mean.double().flatten(), xs.std.double().flatten()
    xd = x.double()
    terms = lib.Terms()
    for i in range(n_in):
        terms.add(xd[:, i], _linear(i), 1)
    for e in range(n_out * n_in):
        i = e % n_in
        ranked = sorted(fits.ranked(e, complexity_weight=0.0), key=lambda c: -c.r2)
        for c in ranked[:PER_EDGE]:
            if not c.r2 >= MIN_EDGE_R2:
                continue
            f = next(g for g in funcs if g.name == c.name)
            # a·(x − μ)/σ + b in the input's own units
            slope, shift = c.a / float(std[i]), c.b - c.a * float(mean[i]) / float(std[i])
            values = f.torch_fn(slope * xd[:, i] + shift)
            terms.add(values, _edge(f.sympy_fn, i, slope, shift), 2 + f.complexity)
    return terms.matrix(), list(terms.builders)


def _linear(i: int) -> lib.Builder:
    return lambda s: s[i]


def _edge(
    fn: Callable[[sympy.Expr], sympy.Expr], i: int, slope: float, shift: float
) -> lib.Builder:
    return lambda s: fn(sympy.Float(slope) * s[i] + sympy.Float(shift))


def guided_formulas(
    model: KAN,
    x: torch.Tensor,
    y: torch.Tensor,
    xs: Standardizer,
    syms: Sequence[sympy.Symbol],
    max_terms: int,
    deadline: Callable[[], bool],
) -> list[sympy.Expr]:
    """Formulas k + Σ w·f(a·x_i + b) from the model's edges fitted to y (rows x, raw units)."""
    z, builders = edge_terms(model, x, xs)
    ok = torch.isfinite(z).all(0)
    cols = torch.nonzero(ok)[:, 0].tolist()
    if not cols:
        return []
    z = z[:, cols]
    builders = [builders[c] for c in cols]
    out: list[sympy.Expr] = []
    for sel in lib.beam_select(z, y.double(), min(max_terms, z.shape[1]), deadline=deadline):
        parts = [
            sympy.Float(float(w)) * builders[c](syms)
            for c, w in zip(sel.columns, sel.coef, strict=True)
        ]
        if sel.intercept:
            parts.append(sympy.Float(sel.intercept))
        out.append(sympy.Add(*parts))
    return out
