"""Separability: split y = f(x) into parts of fewer variables, as AI Feynman does.

A smooth surrogate (a small tanh network trained on the training rows) stands in for f where
the table has no rows: with two rows r, s and a split of the columns into groups A | B,

    additive:        f(a_r, b_r) + f(a_s, b_s) − f(a_r, b_s) − f(a_s, b_r) = 0
    multiplicative:  f(a_r, b_r)·f(a_s, b_s) − f(a_r, b_s)·f(a_s, b_r) = 0

hold for every pair exactly when f = g(A) + h(B), resp. f = g(A)·h(B). The test's residual is
compared with the surrogate's own validation error, so a noisy table or a weak surrogate
finds nothing rather than a false split. A found split gives each part its own smaller table
— the surrogate evaluated with the other group held at an anchor row — on which the search
recurses (`kan_core.discover`); the parts are then joined (sum or product) and the joined
formula's constants are refitted on the real rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from kan_core.scaling import Standardizer

#: at most this many column groups are tested (all groups of 1 .. d/2 columns when fewer)
MAX_SPLITS = 64
#: pairs of rows per test
PAIRS = 512
#: no test when the surrogate's relative validation error is above this (noisy tables)
MAX_SURROGATE_ERROR = 0.05
#: an invariant move may change f by at most this fraction of what a plain move changes it
#: (true symmetries measured 0.01–0.09 on test laws, false ones 0.38 and more)
MAX_SYMMETRY_RESIDUAL = 0.15


@dataclass
class Surrogate:
    """A small network standing in for f on raw units; `rel_error` = validation RMSE (the
    worst 2 % of rows left out) / std y."""

    net: torch.nn.Module
    log_columns: torch.Tensor  # (d,) bool: positive columns, seen as log x
    xs: Standardizer
    ys: Standardizer
    rel_error: float

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.xs.transform(_logged(x, self.log_columns)).double()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.net(self.features(x))[:, 0]
        return out * self.ys.std.double().flatten()[0] + self.ys.mean.double().flatten()[0]


def _logged(x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    return torch.where(columns, x.clamp_min(1e-300).log(), x)


def fit_surrogate(
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    seed: int,
    deadline: Callable[[], bool],
    width: int = 32,
    steps: int = 800,
) -> Surrogate:
    """A tanh network [d, width, width, 1] fitted with L-BFGS (float64) on standardised data;
    positive columns enter as log x (powers and ratios, common in laws, become smooth)."""
    gen = torch.Generator().manual_seed(seed)
    d = x_tr.shape[1]
    log_columns = (x_tr > 0).all(0)
    xs, ys = Standardizer.fit(_logged(x_tr, log_columns)), Standardizer.fit(y_tr[:, None])
    layers = [torch.nn.Linear(d, width), torch.nn.Tanh(), torch.nn.Linear(width, width)]
    net = torch.nn.Sequential(*layers, torch.nn.Tanh(), torch.nn.Linear(width, 1)).double()
    with torch.no_grad():
        for p in net.parameters():  # variance 1/fan-in, from the seed (no global reseeding)
            fan_in = p.shape[1] if p.ndim == 2 else 1
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / math.sqrt(fan_in))
    sur = Surrogate(net, log_columns, xs, ys, math.inf)
    xt, yt = sur.features(x_tr), ys.transform(y_tr[:, None]).double()
    opt = torch.optim.LBFGS(
        net.parameters(), lr=1.0, max_iter=20, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        return loss

    for _ in range(steps // 20):
        if deadline():
            break
        opt.step(closure)
    # the RMS error without the worst 2 % of rows: one row in a corner of the data (a network
    # extrapolating) must not hide that the surrogate is good everywhere else
    sq = (sur(x_val) - y_val).pow(2).sort().values
    err = sq[: max(1, math.ceil(0.98 * sq.numel()))].mean().sqrt()
    sur.rel_error = float(err / y_val.std().clamp_min(1e-300))
    return sur


@dataclass(frozen=True)
class Split:
    kind: Literal["+", "*"]
    group: tuple[int, ...]  # A; the other columns are B
    residual: float  # the test's residual / the spread of f (or log|f|)


def _pair_points(x: torch.Tensor, group: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """(4, PAIRS, d): points (a_r, b_r), (a_s, b_s), (a_r, b_s), (a_s, b_r) from row pairs."""
    r = torch.randint(0, x.shape[0], (PAIRS,), generator=gen)
    s = torch.randint(0, x.shape[0], (PAIRS,), generator=gen)
    mask = torch.zeros(x.shape[1], dtype=torch.bool)
    mask[list(group)] = True
    rs = torch.where(mask, x[r], x[s])  # A from r, B from s
    sr = torch.where(mask, x[s], x[r])
    return torch.stack([x[r], x[s], rs, sr])


def find_splits(sur: Surrogate, x: torch.Tensor, seed: int) -> list[Split]:
    """Splits that pass the additive or multiplicative test, best (lowest residual) first.

    A split passes when its residual is within a few times the surrogate's own error."""
    d = x.shape[1]
    if d < 2:
        return []
    gen = torch.Generator().manual_seed(seed)
    groups: list[tuple[int, ...]] = []
    for size in range(1, d // 2 + 1):
        for g in itertools.combinations(range(d), size):
            if size * 2 == d and 0 not in g:
                continue  # A | B and B | A are one split
            groups.append(g)
    groups = groups[:MAX_SPLITS]
    if sur.rel_error > MAX_SURROGATE_ERROR:
        return []  # the surrogate cannot tell a split from its own error
    allowed = 2 * sur.rel_error + 1e-3
    found: list[Split] = []
    for g in groups:
        v = sur(_pair_points(x, g, gen).reshape(-1, d)).reshape(4, PAIRS)
        spread = (v[0] - v[0].mean()).pow(2).mean().sqrt().clamp_min(1e-300)
        additive = (v[0] + v[1] - v[2] - v[3]).pow(2).mean().sqrt() / (2 * spread)
        # f_rr·f_ss − f_rs·f_sr, in units of the spread of f (no log: f may change sign)
        rms = v[0].pow(2).mean().sqrt()
        product = (v[0] * v[1] - v[2] * v[3]).pow(2).mean().sqrt() / (2 * rms * spread)
        if float(additive) <= allowed:
            found.append(Split("+", g, float(additive)))
        if float(product) <= allowed:
            found.append(Split("*", g, float(product)))
    found.sort(key=lambda s: (len(s.group), s.residual))  # one column split off first
    return found


def partition(splits: list[Split], d: int) -> tuple[Literal["+", "*"], list[tuple[int, ...]]]:
    """The finest partition the passing splits give, with their kind: every column that splits
    off alone (f = g₁(x₁) ∘ g₂(x₂) ∘ h(rest) when each splits off from the rest) is a part,
    the rest one more; else the best split's two groups."""
    kind = splits[0].kind
    singles = sorted(s.group[0] for s in splits if s.kind == kind and len(s.group) == 1)
    if not singles:
        rest = tuple(c for c in range(d) if c not in splits[0].group)
        return kind, [splits[0].group, rest]
    rest = tuple(c for c in range(d) if c not in singles)
    return kind, [(c,) for c in singles] + ([rest] if rest else [])


def part_tables(
    sur: Surrogate, x: torch.Tensor, groups: list[tuple[int, ...]]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
    """([(x_G, f_G)] per group, f(anchor)): a group's table is the surrogate on the rows x
    with every other column held at the anchor (the column medians)."""
    anchor = x.median(0).values
    tables = []
    for g in groups:
        mask = torch.zeros(x.shape[1], dtype=torch.bool)
        mask[list(g)] = True
        tables.append((x[:, mask], sur(torch.where(mask, x, anchor))))
    return tables, float(sur(anchor[None, :])[0])


# ---- symmetries: two columns that enter only through one combination -------------------------


@dataclass(frozen=True)
class Symmetry:
    """f depends on columns i and j only through i·j, i/j, i − j or i + j (`kind`)."""

    kind: Literal["*", "/", "-", "+"]
    i: int
    j: int
    residual: float  # change of f under the invariant move / change under a plain move

    def values(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, self.i], x[:, self.j]
        return {"*": a * b, "/": a / b, "-": a - b, "+": a + b}[self.kind]


def _moves(kind: str, a: torch.Tensor, b: torch.Tensor, step: torch.Tensor):
    """The move that keeps the combination: (a', b')."""
    if kind == "*":
        return a * (1 + step), b / (1 + step)
    if kind == "/":
        return a * (1 + step), b * (1 + step)
    if kind == "-":
        return a + step, b + step
    return a + step, b - step


def find_symmetries(sur: Surrogate, x: torch.Tensor, seed: int) -> list[Symmetry]:
    """Column pairs whose invariant moves leave the surrogate unchanged (within its error),
    best first. A move changes a column by 10 % (·, /) or by 10 % of the smaller spread (−, +);
    the surrogate's errors at such near points are alike, so they mostly cancel in the change."""
    d = x.shape[1]
    if d < 2 or sur.rel_error > MAX_SURROGATE_ERROR:
        return []
    gen = torch.Generator().manual_seed(seed)
    rows = x[torch.randint(0, x.shape[0], (min(PAIRS, x.shape[0]),), generator=gen)]
    f0 = sur(rows)
    f_spread = float(sur(x).std())
    positive = (x > 0).all(0)
    spread = x.std(0)
    found: list[Symmetry] = []
    for i, j in itertools.combinations(range(d), 2):
        kinds: list[Literal["*", "/", "-", "+"]] = ["-", "+"]
        if bool(positive[i]) and bool(positive[j]):
            kinds = ["*", "/", *kinds]
        for kind in kinds:
            step = torch.tensor(0.1 if kind in "*/" else 0.1 * float(min(spread[i], spread[j])))
            a, b = _moves(kind, rows[:, i], rows[:, j], step)
            moved, only_i, only_j = rows.clone(), rows.clone(), rows.clone()
            moved[:, i], moved[:, j] = a, b
            only_i[:, i], only_j[:, j] = a, b
            change = (sur(moved) - f0).pow(2).mean().sqrt()
            ref = max(float((sur(only_i) - f0).pow(2).mean().sqrt()),
                      float((sur(only_j) - f0).pow(2).mean().sqrt()))  # fmt: skip
            if ref < 1e-3 * f_spread:
                continue  # f hardly depends on these columns here
            residual = float(change) / ref
            if residual <= MAX_SYMMETRY_RESIDUAL:
                found.append(Symmetry(kind, i, j, residual))
    found.sort(key=lambda s: s.residual)
    return found
