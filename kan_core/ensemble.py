"""KAN ensembles: N members trained side by side in one `fit` call, predictions with an
interval, per-edge bands and formula stability.

Vectorised training: N members of width [d, h…, o] are laid side by side as one block-diagonal
KAN [N·d, N·h…, N·o] whose cross-member edges are masked (mask 0: no value, no gradient, so
they never change). Member m reads its own copy of the inputs (columns m·d…) and writes its own
outputs (m·o…), so one `kan_core.fit` trains every member on whichever engine applies (native,
fused-cpu, numba, torch). The loss is the mean of the members' MSEs; Adam's step does not see
that 1/N scale, so each member follows (up to rounding) the path its own `fit` would. A
bootstrap resample is simply other rows in a member's column block. Shared by all members: the
step count, the mini-batch positions, early stopping (on the members' mean validation loss).
The masked blocks are still computed (N² blocks per layer instead of N): that pays while the
per-step overhead saved dominates, so `members_per_fit` (default: as many as keep rows ×
edges of the wide KAN within `WORK_BUDGET`) splits larger ensembles into several such fits.

Regression only. `lamb` > 0 is scaled by 1/N, so each member's L1 term keeps its weight
against its own MSE. The entropy term is taken over all members' edges at once: H_joint =
H(members' shares) + Σ share_m·H_m, so `lamb_entropy` is scaled by N (with equal shares each
member's own entropy then keeps its weight; the shares' term is left over). Approximate:
after 100 steps at λ = 1e-2 vectorised and sequential members differed by 0.008 on average
(0.015 without the N).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from kan_core.errors import ConfigError
from kan_core.io import ModelFileError, model_from_bytes, model_to_bytes
from kan_core.model import KAN
from kan_core.symbolic import DEFAULT_COMPLEXITY_WEIGHT, fit_edge_candidates
from kan_core.train import (
    EnsembleCheckpoint,
    FitCheckpoint,
    FitConfig,
    FitProgress,
    FitResult,
    TrainData,
    fit,
)

BOOTSTRAP = ("none", "rows", "groups")
# Rows × edges per step of one block-diagonal KAN when `members_per_fit` is None. Measured
# (2-core machine under load, one thread, 8 members, fold 0 of benchmarks/bench_ensemble.py),
# seconds for 1 / 2 / 4 / 8 members per fit: MPEA [38, 4, 1], 319 rows, λ = 1e-3: 8.1 / 4.7 /
# 6.8 / 21.7, λ = 0: 3.2 / 2.5 / 2.0 / 1.8; Gorsse [10, 4, 1], 153 rows, λ = 1e-3: 3.4 / 1.8 /
# 1.6 / 2.0, λ = 0: 2.4 / 1.3 / 0.9 / 0.7. The regularised step (λ > 0) builds every edge's
# values, the masked blocks' too, so it pays for the c² blocks far sooner than the kernels.
WORK_BUDGET = {"regularised": 200_000, "plain": 3_000_000}


@dataclass
class EnsembleConfig:
    members: int = 8
    # "rows": each member trains on n rows drawn with replacement; "groups": on the rows of
    # G groups drawn with replacement (G = number of groups), cut or topped up to n rows
    bootstrap: Literal["none", "rows", "groups"] = "none"
    seed: int = 0  # member m is KAN(seed=seed + m); resamples come from Generator(seed)
    # members side by side in one `fit` (the last block may be smaller); 1: a `fit` per member;
    # None: as many as keep the block-diagonal KAN within WORK_BUDGET (rows × edges)
    members_per_fit: int | None = None
    fit: FitConfig = field(default_factory=FitConfig)

    def validate(self) -> None:
        if not (isinstance(self.members, int) and self.members >= 1):
            raise ConfigError(f"members must be an integer ≥ 1, got {self.members!r}")
        per_fit = self.members_per_fit
        if per_fit is not None and not (isinstance(per_fit, int) and per_fit >= 1):
            raise ConfigError(f"members_per_fit must be an integer ≥ 1 or None, got {per_fit!r}")
        if self.bootstrap not in BOOTSTRAP:
            raise ConfigError(f"Unknown bootstrap {self.bootstrap!r}. Available: {list(BOOTSTRAP)}")
        if self.fit.task != "regression":
            raise ConfigError("ensembles support regression only (task='regression')")
        self.fit.validate()


# ---- resampling ----------------------------------------------------------------------------


def resample_rows(
    n: int, config: EnsembleConfig, groups: Sequence[Any] | None = None
) -> list[torch.Tensor]:
    """Per member, n training-row indices (`config.bootstrap`; all rows in order for "none")."""
    g = torch.Generator().manual_seed(config.seed)
    if config.bootstrap == "none":
        return [torch.arange(n) for _ in range(config.members)]
    if config.bootstrap == "rows":
        return [torch.randint(n, (n,), generator=g) for _ in range(config.members)]
    if groups is None or len(groups) != n:
        raise ConfigError("bootstrap='groups' needs one group label per training row (groups=)")
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    label = torch.as_tensor(inverse.reshape(-1))
    rows_of = [torch.nonzero(label == k).flatten() for k in range(int(label.max()) + 1)]
    out = []
    for _ in range(config.members):
        drawn = torch.randint(len(rows_of), (len(rows_of),), generator=g)
        rows = torch.cat([rows_of[int(k)] for k in drawn])
        rows = rows[torch.randperm(len(rows), generator=g)]
        if len(rows) < n:  # top up with repeats of the drawn rows
            rows = torch.cat([rows, rows[torch.randint(len(rows), (n - len(rows),), generator=g)]])
        out.append(rows[:n])
    return out


# ---- members side by side ------------------------------------------------------------------


def _part(key: str) -> tuple[int, str]:
    """(layer, what) of a KAN state-dict key: "edge" (out, in, …), "out" (out,), "in" (in, …)."""
    _, layer, name = key.split(".", 2)  # "layers.{l}.{name}"
    if name.startswith("basis."):
        return int(layer), "in"
    return int(layer), "out" if name == "bias" else "edge"


def _block(t: torch.Tensor, what: str, m: int, n_out: int, n_in: int) -> torch.Tensor:
    """Member m's slice of a block-diagonal layer tensor (a view)."""
    rows, cols = slice(m * n_out, (m + 1) * n_out), slice(m * n_in, (m + 1) * n_in)
    return t[rows] if what == "out" else t[cols] if what == "in" else t[rows, cols]


def _new_kan(width: Sequence[int], seed: int, options: Mapping[str, Any]) -> KAN:
    return KAN(width, seed=seed, **options)


def _check_plain(member: KAN) -> None:
    if any(layer.has_symbolic for layer in member.layers):
        raise ConfigError("ensemble members must be numeric KANs (no symbolic edges)")


@torch.no_grad()
def stack_members(members: Sequence[KAN], options: Mapping[str, Any] | None = None) -> KAN:
    """One block-diagonal KAN computing every member side by side: input columns
    [m·d, (m+1)·d) and outputs [m·o, (m+1)·o) are member m's; cross-member edges masked."""
    for member in members:
        _check_plain(member)
    width, n = members[0].width, len(members)
    wide = _new_kan([w * n for w in width], members[0].seed, options or {})
    state = wide.state_dict()
    states = [member.state_dict() for member in members]
    for key, value in state.items():
        layer, what = _part(key)
        if key.endswith(".mask"):
            value.zero_()
        for m, member_state in enumerate(states):
            _block(value, what, m, width[layer + 1], width[layer]).copy_(member_state[key])
    wide.load_state_dict(state)  # knots' uniformity is re-detected on load
    return wide


@torch.no_grad()
def unstack_members(
    wide: KAN, n: int, seeds: Sequence[int], options: Mapping[str, Any] | None = None
) -> list[KAN]:
    """The n member KANs of a `stack_members` model, as ordinary (independent) KANs."""
    width = [w // n for w in wide.width]
    state = wide.state_dict()
    members = []
    for m in range(n):
        member = _new_kan(width, seeds[m], options or {})
        part = {}
        for key, value in state.items():
            layer, what = _part(key)
            part[key] = _block(value, what, m, width[layer + 1], width[layer]).clone()
        member.load_state_dict(part)
        members.append(member)
    return members


@torch.no_grad()
def align_hidden_units(members: Sequence[KAN], x: torch.Tensor) -> list[KAN]:
    """Copies of the members with hidden nodes reordered to match member 0's (greedy matching on
    |correlation| of the nodes' values on x). The functions are unchanged; edges at the same
    position then describe comparable nodes (for bands and formula stability)."""
    reference = _hidden_values(members[0], x)
    out = [members[0]]
    for member in members[1:]:
        member = copy.deepcopy(member)
        for layer, ref in enumerate(reference):
            mine = _hidden_values(member, x)[layer]
            _permute_node(member, layer, _greedy_match(ref, mine))
        out.append(member)
    return out


def _hidden_values(model: KAN, x: torch.Tensor) -> list[torch.Tensor]:
    _, traces = model.forward_with_activations(x)
    return [t.outputs for t in traces[:-1]]  # (rows, hidden) per hidden layer


def _greedy_match(ref: torch.Tensor, mine: torch.Tensor) -> torch.Tensor:
    """perm with mine[:, perm[j]] ≈ ref[:, j]: pairs taken by decreasing |correlation|."""
    a = (ref - ref.mean(0)) / ref.std(0).clamp_min(1e-12)
    b = (mine - mine.mean(0)) / mine.std(0).clamp_min(1e-12)
    corr = (a.T @ b).abs() / max(ref.shape[0] - 1, 1)  # (ref node, my node)
    perm = torch.full((ref.shape[1],), -1, dtype=torch.long)
    for _ in range(ref.shape[1]):
        j, k = divmod(int(corr.argmax()), corr.shape[1])
        perm[j] = k
        corr[j, :], corr[:, k] = -1.0, -1.0
    return perm


def _permute_node(model: KAN, layer: int, perm: torch.Tensor) -> None:
    """Reorder the outputs of `layer` (and so the inputs of layer + 1) by perm."""
    state = model.state_dict()
    for key, value in state.items():
        l, what = _part(key)
        if (l == layer and what != "in") or (l == layer + 1 and what == "in"):
            value.copy_(value[perm])  # rows: this layer's outputs, the next one's input grids
        elif l == layer + 1 and what == "edge":
            value.copy_(value[:, perm])  # (out, in, …): the next layer's input columns
    model.load_state_dict(state)


# ---- training ------------------------------------------------------------------------------


def members_per_fit(width: Sequence[int], config: EnsembleConfig, rows: int) -> int:
    """How many members `fit_ensemble` trains side by side per `fit` call (blocks made even):
    as many as keep rows × edges of the block-diagonal KAN within `WORK_BUDGET`."""
    if config.members_per_fit is not None:
        return min(config.members_per_fit, config.members)
    if config.fit.batch_size is not None:
        rows = min(rows, config.fit.batch_size)
    edges = sum(a * b for a, b in zip(width[:-1], width[1:], strict=False))
    budget = WORK_BUDGET["regularised" if config.fit.lamb > 0 else "plain"]
    per_fit = max(1, min(config.members, math.isqrt(budget // max(rows * edges, 1))))
    blocks = -(-config.members // per_fit)
    return -(-config.members // blocks)


def fit_ensemble(
    width: Sequence[int],
    data: TrainData,
    config: EnsembleConfig | None = None,
    *,
    groups: Sequence[Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
    callback: Callable[[FitProgress], bool | None] | None = None,
    resume: EnsembleCheckpoint | None = None,
    on_checkpoint: Callable[[EnsembleCheckpoint], None] | None = None,
) -> KANEnsemble:
    """Train `config.members` KANs of `width` (member m: `KAN(width, seed=config.seed + m,
    **model_options)`), each on its resample of the training rows, `members_per_fit` at a time
    side by side; validation rows (early stopping per block) are shared. `callback` sees each
    block's fit in turn. Hidden nodes are aligned to member 0's on the training inputs.

    Checkpoints: with `on_checkpoint`, every `config.fit.checkpoint_every` steps of a block's
    `fit` it gets an `EnsembleCheckpoint` (every finished block and the one in progress);
    `resume=` continues from one (given the same arguments) as if never stopped: bit-exact on
    the CPU, like `fit`'s own resume. A resumed fit calls `callback` only for the steps after
    the checkpoint (`EnsembleCheckpoint.steps_before_current` says how many earlier blocks ran)."""
    cfg = config or EnsembleConfig()
    cfg.validate()
    options = dict(model_options or {})
    if "seed" in options:
        raise ConfigError("member seeds come from EnsembleConfig.seed, not model_options")
    n_members, n = cfg.members, data.x_train.shape[0]
    y = data.y_train.reshape(n, -1)
    y_val = None if data.y_val is None else data.y_val.reshape(data.y_val.shape[0], -1)
    rows = resample_rows(n, cfg, groups)
    per_fit = members_per_fit(width, cfg, n)
    states: list[dict[str, torch.Tensor]] = []  # finished blocks' wide KANs
    summaries: list[dict[str, Any]] = []
    if resume is not None:
        _check_resume(resume, cfg, per_fit)
        states, summaries = list(resume.finished_states), list(resume.finished_results)
    resumed_block = len(states)  # the block the checkpoint's `fit` was in
    members: list[KAN] = []
    results: list[FitResult] = []
    for b, first in enumerate(range(0, n_members, per_fit)):
        block = range(first, min(first + per_fit, n_members))
        seeds = [cfg.seed + m for m in block]
        wide = stack_members([_new_kan(width, s, options) for s in seeds], options)
        if b < len(states):  # finished before the checkpoint
            wide.load_state_dict(states[b])
            fields = {k: v for k, v in summaries[b].items() if k != "steps"}
            results.append(FitResult(**fields))
        else:
            wide_data = TrainData(
                torch.cat([data.x_train[rows[m]] for m in block], dim=1),
                torch.cat([y[rows[m]] for m in block], dim=1),
                None if data.x_val is None else data.x_val.repeat(1, len(block)),
                None if y_val is None else y_val.repeat(1, len(block)),
            )
            fit_cfg = dataclasses.replace(  # see the module docstring
                cfg.fit,
                lamb=cfg.fit.lamb / len(block),
                lamb_entropy=cfg.fit.lamb_entropy * len(block),
            )
            current = resume.current if resume is not None and b == resumed_block else None
            save = _block_checkpoints(on_checkpoint, n_members, per_fit, states, summaries)
            result = fit(wide, wide_data, fit_cfg, callback, resume=current, on_checkpoint=save)
            results.append(result)
            states.append(
                {k: v.detach().to("cpu", copy=True) for k, v in wide.state_dict().items()}
            )
            summaries.append(_summary(result, current))
        members += unstack_members(wide, len(block), seeds, options)
    for member in members:
        member.eval()
    return KANEnsemble(align_hidden_units(members, data.x_train), results)


def _block_checkpoints(
    on_checkpoint: Callable[[EnsembleCheckpoint], None] | None,
    members: int,
    per_fit: int,
    states: list[dict[str, torch.Tensor]],
    summaries: list[dict[str, Any]],
) -> Callable[[FitCheckpoint], None] | None:
    """The `on_checkpoint` of a block's `fit`: its checkpoint with the blocks finished so far."""
    if on_checkpoint is None:
        return None
    done = (list(states), list(summaries))
    return lambda c: on_checkpoint(EnsembleCheckpoint(members, per_fit, *done, current=c))


def _summary(result: FitResult, resumed: FitCheckpoint | None) -> dict[str, Any]:
    """A finished block's `FitResult` without its history, and its last step."""
    steps = result.history[-1].step if result.history else (resumed.step if resumed else 0)
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    return {k: v for k, v in values.items() if k != "history"} | {"steps": steps}


def _check_resume(resume: EnsembleCheckpoint, cfg: EnsembleConfig, per_fit: int) -> None:
    blocks = -(-cfg.members // per_fit)
    if (resume.members, resume.members_per_fit) != (cfg.members, per_fit) or not (
        len(resume.finished_states) == len(resume.finished_results) < blocks
    ):
        raise ConfigError(
            f"the checkpoint is of an ensemble of {resume.members} members, "
            f"{resume.members_per_fit} per fit, {len(resume.finished_states)} blocks finished; "
            f"this one has {cfg.members} members, {per_fit} per fit ({blocks} blocks)"
        )


# ---- predictions with an interval ----------------------------------------------------------


def normal_quantile(level: float) -> float:
    """z with P(|Z| ≤ z) = level for a standard normal Z."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    return float(torch.special.ndtri(torch.tensor((1.0 + level) / 2.0, dtype=torch.float64)))


@dataclass
class EnsemblePrediction:
    mean: torch.Tensor  # (rows, out) the members' mean
    std: torch.Tensor  # (rows, out) predictive std: √(member variance + noise²) · scale
    lower: torch.Tensor  # (rows, out) mean − z·std
    upper: torch.Tensor  # (rows, out) mean + z·std
    members: torch.Tensor  # (members, rows, out)
    level: float


@dataclass
class KANEnsemble:
    members: list[KAN]
    results: list[FitResult]  # one per `fit` call (block of members side by side)
    noise_std: torch.Tensor | None = None  # (out,) residual noise, added in quadrature
    scale: float = 1.0  # multiplies the interval's half-width (conformal, from `calibrate`)

    @torch.no_grad()
    def member_predictions(self, x: torch.Tensor) -> torch.Tensor:
        """(members, rows, out)."""
        p = next(self.members[0].parameters())
        x = x.to(device=p.device, dtype=p.dtype)
        return torch.stack([member(x) for member in self.members])

    def predict(self, x: torch.Tensor, level: float = 0.9) -> EnsemblePrediction:
        preds = self.member_predictions(x)
        z = normal_quantile(level)
        mean, std = preds.mean(0), self._std(preds)
        return EnsemblePrediction(mean, std, mean - z * std, mean + z * std, preds, level)

    def _std(self, preds: torch.Tensor) -> torch.Tensor:
        var = preds.var(0) if preds.shape[0] > 1 else torch.zeros_like(preds[0])
        if self.noise_std is not None:
            var = var + self.noise_std.to(var).square()
        return var.sqrt() * self.scale

    def calibrate(
        self, x: torch.Tensor, y: torch.Tensor, level: float = 0.9, conformal: bool = True
    ) -> KANEnsemble:
        """A copy whose intervals are fitted to held-out rows (rows no member trained on; for
        grouped data, other groups). noise² = max(0, mean residual² − mean member variance)
        per output: the error the members' spread does not explain. Then, with `conformal`,
        `scale` = the ⌈(n+1)·level⌉-th smallest |residual| / (z·std) (split conformal), so that
        a share `level` of these rows lies inside; new rows exchangeable with them are covered
        with probability ≥ level."""
        preds = self.member_predictions(x)
        y = y.to(preds).reshape(preds.shape[1:])
        mean = preds.mean(0)
        member_var = preds.var(0) if preds.shape[0] > 1 else torch.zeros_like(mean)
        noise = ((y - mean).square().mean(0) - member_var.mean(0)).clamp_min(0.0).sqrt()
        out = dataclasses.replace(self, noise_std=noise, scale=1.0)
        if conformal:
            z = normal_quantile(level)
            scores = ((y - mean).abs() / (z * out._std(preds)).clamp_min(1e-12)).flatten()
            k = min(math.ceil((scores.numel() + 1) * level), scores.numel())
            out.scale = float(scores.sort().values[k - 1])
        return out


# ---- files ---------------------------------------------------------------------------------

ENSEMBLE_KEY = "kan_core.ensemble"


def ensemble_to_bytes(ensemble: KANEnsemble, metadata: Mapping[str, Any] | None = None) -> bytes:
    """One kanscope model file (`io.model_to_bytes`) holding the members side by side as their
    block-diagonal KAN; seeds, noise term and scale ride in the metadata."""
    info = {
        "members": len(ensemble.members),
        "seeds": [m.seed for m in ensemble.members],
        "noise_std": None if ensemble.noise_std is None else ensemble.noise_std.tolist(),
        "scale": ensemble.scale,
    }
    wide = stack_members(ensemble.members, _build_options(ensemble.members[0].config()))
    return model_to_bytes(wide, {**(metadata or {}), ENSEMBLE_KEY: info})


def _build_options(c: Mapping[str, Any]) -> dict[str, Any]:
    """The `KAN` arguments (other than width and seed) of a model with `KAN.config()` c."""
    keys = ("grid", "k", "basis", "noise_scale")
    return {**{key: c[key] for key in keys}, "grid_range": tuple(c["grid_range"])}


def ensemble_from_bytes(data: bytes) -> tuple[KANEnsemble, dict[str, Any]]:
    """(ensemble, the caller's metadata) from `ensemble_to_bytes`; ModelFileError otherwise."""
    wide, metadata = model_from_bytes(data)
    info = metadata.pop(ENSEMBLE_KEY, None)
    if not isinstance(wide, KAN) or not isinstance(info, dict):
        raise ModelFileError("not a kanscope ensemble file (no ensemble metadata)")
    options = _build_options(wide.config())
    members = unstack_members(wide, int(info["members"]), info["seeds"], options)
    for member in members:
        member.eval()
    noise = None if info["noise_std"] is None else torch.tensor(info["noise_std"])
    return KANEnsemble(members, [], noise, float(info["scale"])), metadata


# ---- per-edge bands and formula stability ---------------------------------------------------


@dataclass
class EdgeBands:
    """One layer's edges across members on a common input grid (edge i→j: [..., j, i])."""

    layer: int
    x: torch.Tensor  # (points, in) the grid of each input node (the members' joint range)
    values: torch.Tensor  # (members, points, out, in) φ_ij(x[:, i]) per member
    mean: torch.Tensor  # (points, out, in)
    lower: torch.Tensor  # (points, out, in) member quantile (1 − level)/2
    upper: torch.Tensor  # (points, out, in) member quantile (1 + level)/2


@torch.no_grad()
def edge_bands(
    ensemble: KANEnsemble, x: torch.Tensor, points: int = 64, level: float = 0.9
) -> list[EdgeBands]:
    """Every edge's φ for every member, on a grid over the range of the inputs that x gives
    that edge. Edges are compared by position (hidden nodes aligned by `fit_ensemble`); a
    hidden node may still differ between members by a scale and shift that the next layer
    absorbs, which widens bands of edges into hidden nodes without changing predictions."""
    normal_quantile(level)  # checks level
    traces = [m.forward_with_activations(x.to(next(m.parameters())))[1] for m in ensemble.members]
    out = []
    for layer in range(len(ensemble.members[0].layers)):
        inputs = torch.stack([t[layer].inputs for t in traces])  # (members, rows, in)
        lo, hi = inputs.amin((0, 1)), inputs.amax((0, 1))
        hi = torch.where(hi > lo, hi, lo + 1e-3)
        frac = torch.linspace(0, 1, points, dtype=lo.dtype)[:, None]
        grid = lo + (hi - lo) * frac  # (points, in)
        values = torch.stack([m.layers[layer].edge_values(grid) for m in ensemble.members])
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=values.dtype)
        lower, upper = torch.quantile(values, q, dim=0)
        out.append(EdgeBands(layer, grid, values, values.mean(0), lower, upper))
    return out


@dataclass
class EdgeStability:
    """How many members give edge (layer, i→j) the same best symbolic candidate."""

    layer: int
    i: int
    j: int
    best: list[str | None]  # per member (None: no valid candidate)
    r2: list[float | None]  # per member, R² of its best candidate on its own edge
    top: str | None  # the most common best candidate
    agree: int  # members whose best is `top`

    @property
    def share(self) -> float:
        return self.agree / len(self.best)


@torch.no_grad()
def formula_stability(
    ensemble: KANEnsemble,
    x: torch.Tensor,
    library: Sequence[str] | None = None,
    complexity_weight: float = DEFAULT_COMPLEXITY_WEIGHT,
    max_points: int = 512,
) -> list[EdgeStability]:
    """Per edge, each member's best candidate (`symbolic.fit_edge_candidates`, fitted on that
    member's own activations, all members' edges of a layer in one call) and their agreement.
    A candidate c·f(a·x + b) + d absorbs a hidden node's scale and shift, so the form is
    comparable across members where the values are not. The ranking is `symbolic`'s (with
    the full library, a weak edge's best is often "0": pass a library without it to ask which
    shape the members see)."""
    x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:max_points]]
    traces = [m.forward_with_activations(x.to(next(m.parameters())))[1] for m in ensemble.members]
    out = []
    for layer in range(len(ensemble.members[0].layers)):
        pre = torch.stack([t[layer].inputs for t in traces])  # (members, rows, in)
        post = torch.stack([t[layer].edge_values for t in traces])  # (members, rows, out, in)
        n_members, rows, n_out, n_in = post.shape
        xs = pre[:, :, None, :].expand(-1, -1, n_out, -1)  # (members, rows, out, in)
        xs, ys = (t.permute(0, 2, 3, 1).reshape(-1, rows) for t in (xs, post))  # (m·out·in, rows)
        best = fit_edge_candidates(xs, ys, library).best(complexity_weight)
        for j in range(n_out):
            for i in range(n_in):
                fits = [best[(m * n_out + j) * n_in + i] for m in range(n_members)]
                names = [None if c is None else c.name for c in fits]
                r2 = [None if c is None else c.r2 for c in fits]
                top, agree = Counter(names).most_common(1)[0]
                out.append(EdgeStability(layer, i, j, names, r2, top, agree))
    return out


def interval_coverage(prediction: EnsemblePrediction, y: torch.Tensor) -> tuple[float, float]:
    """(share of y inside [lower, upper], mean interval width) over rows and outputs."""
    y = y.to(prediction.mean).reshape(prediction.mean.shape)
    inside = (y >= prediction.lower) & (y <= prediction.upper)
    return float(inside.double().mean()), float((prediction.upper - prediction.lower).mean())
