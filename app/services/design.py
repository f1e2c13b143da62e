"""Inverse design of alloys as a run kind: propose compositions that maximise, minimise or hit a
target value of a trained run's prediction, with hea-bench's descriptors in the loop.

``POST /runs/{id}/design`` (:func:`start_design_payload`) checks the request against the trained
run ``id`` (the *source*: a KAN or MLP regression on a dataset with a composition) and creates a
child run of kind ``design`` holding a snapshot of what the search needs, so the trainer reads
nothing but its own run: the design options in ``config["design"]`` (elements, bounds, k,
direction, budget, how each model input is computed) and, as the run's ``init_weights``, a
safetensors bundle (:func:`bundle_to_bytes`) with the source model file, the optional second
(constraint) run's model file and the training alloys' compositions. The run then goes through
the executor like any other (claim, heartbeat, progress rows, cancellation, reaper).

The trainer (:func:`train_design`) maps compositions to model inputs (:class:`FeatureMap`:
``x_<El>`` fractions, the seven hea-bench descriptors of :mod:`app.services.alloys`, every other
input held at a fixed value), predicts in the dataset's units and searches with
:func:`kan_core.design.optimise` (the descriptors are plain Python, not differentiable in torch,
hence differential evolution). Its result — ranked candidates with prediction, distance to the
nearest training alloy and descriptors, plus the training alloys for the plot — is stored in the
run's ``summary["design"]``; :func:`design_view` reads it back and :func:`candidates_csv`
exports it.

Trust region: ``max_distance`` (default :data:`kan_core.design.DEFAULT_MAX_DISTANCE`, null =
off) keeps every candidate within that composition distance of a training alloy
(:class:`kan_core.design.TrustRegion`, a penalty differential evolution follows back towards the
data), since far from the data the model's numbers are extrapolation.

Input guard: ``input_margin`` (default :data:`kan_core.design.DEFAULT_INPUT_MARGIN`, null = off)
keeps every model input that follows from the composition (fractions, descriptors; of the
objective and of the constraint model) within its training rows' range widened by that fraction
of the range each side (:class:`kan_core.design.InputRange`): a composition near a training alloy
can still have a descriptor far outside it (Ω = Tm·ΔSmix/|ΔHmix| explodes where ΔHmix ≈ 0), where
an ensemble's members disagree by 10⁴ HV and UCB / EI would rank it first. Beyond it is a
violation Σ excess / range, added to the objective's (the search's penalty leads back, the
ranking leaves such compositions out). Inputs held fixed are not guarded (the search cannot move
them), nor inputs constant over the training rows (no range to widen: most often an element no
training alloy contains, which the ``unseen_elements`` note already calls extrapolation); those
stay flagged in ``outside_training_range``. The descriptors are computed once per evaluated
composition and shared by every model of the design.

Ensembles: on an ensemble KAN run (``model_options.ensemble_members``) the objective is the
members' mean with the run's calibrated interval (:class:`EnsembleView`), so every candidate
carries ``std`` / ``lower`` / ``upper`` at the run's level. ``acquisition: "ucb"`` (ensembles
only) ranks by the interval's optimistic end — the upper bound when maximising, the lower when
minimising (``DesignGoal`` with κ = the level's normal quantile) — to propose where the model
may be better than its mean says, for an active-learning loop; ``"ei"`` (ensembles only) by the
expected improvement over the best training alloy's measured value (for ``target``: the one
closest to it) under N(mean, std²), std the calibrated one; ``"mean"`` ranks by the mean. Every
ensemble candidate carries its ``expected_improvement`` whatever the ranking. A single KAN or
MLP gives no spread: those fields stay null. Symbolic edits change the run's model, not its
members: on an edited ensemble run the result's ``interval_of`` is ``"trained members"`` (else
``"current model"``; null without an ensemble) and a note says the edits are not in the ranking.
"""

from __future__ import annotations

import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from app.services.errors import InvalidInputError
from app.services.model_contract import ModelSpec, TrainingJob, TrainOutcome
from app.services.numbers import finite_or_none
from kan_core.design import (
    CompositionSpace,
    DesignGoal,
    Evaluation,
    InfeasibleConstraintError,
    InputRange,
    TrustRegion,
    expected_improvement,
    nearest_reference,
    optimise,
    rank_candidates,
)
from kan_core.train import FitProgress

MODEL = "design"
#: metric steps of a design run: the fraction of the evaluation budget spent, in thousandths
PROGRESS_STEPS = 1000
BUDGET_MIN, BUDGET_MAX, BUDGET_DEFAULT = 20, 20_000, 1000
CANDIDATES_MAX = 100
#: model kinds whose stored model a design can evaluate on new compositions
DESIGNABLE_KINDS = ("kan", "mlp")
#: training alloys shown in the plot (a spread sample beyond this)
MAX_TRAINING_POINTS = 2000
BUNDLE_FORMAT = "kanscope-design-bundle-1"

# ── inputs: composition → model features ────────────────────────────────────────────────────


def _alloys() -> Any:
    from app.services import alloys

    return alloys


def designable_elements() -> frozenset[str]:
    """Elements hea-bench has every descriptor for (its elemental and Miedema pair tables)."""
    _alloys()._hea_bench()
    from hea_bench.descriptors.backend import scorable_elements

    return frozenset(scorable_elements())


def feature_roles(features: list[str]) -> dict[str, dict[str, Any]]:
    """How each model input follows from a composition: ``{"role": "fraction", "element": El,
    "scale": 1}`` for ``x_El`` (or a plain element-named column), ``{"role": "descriptor"}`` for
    the hea-bench descriptors, ``{"role": "fixed"}`` for anything else."""
    alloys = _alloys()
    roles: dict[str, dict[str, Any]] = {}
    for name in features:
        bare = name[2:] if name.lower().startswith("x_") else name
        symbol = alloys.element_symbol(bare) if len(bare) <= 2 else None
        if symbol is not None:
            roles[name] = {"role": "fraction", "element": symbol, "scale": 1.0}
        elif name in alloys.DESCRIPTORS:
            roles[name] = {"role": "descriptor"}
        else:
            roles[name] = {"role": "fixed"}
    return roles


def composition_formula(composition: dict[str, float], decimals: int = 3) -> str:
    """``Al0.2 Co0.3 …`` with fractions rounded to ``decimals`` (absent elements left out)."""
    return " ".join(
        f"{el}{round(v, decimals):g}" for el, v in composition.items() if round(v, decimals) > 0
    )


@dataclass
class Descriptors:
    """hea-bench's descriptors of a batch of compositions (``values[name]`` (n,)) and the rows
    where they cannot be computed (``bad`` (n,), e.g. Ω with ΔHmix = 0; values 0 there)."""

    values: dict[str, np.ndarray]
    bad: np.ndarray


def composition_descriptors(elements: list[str], x: np.ndarray) -> Descriptors:
    """The descriptors of each row of ``x`` (n, d) over ``elements``: one hea-bench call per
    row in Python, the costly part of an evaluation, so a design computes them once per batch
    and hands them to every :class:`FeatureMap`."""
    alloys = _alloys()
    x = np.atleast_2d(x)
    values = {name: np.zeros(len(x)) for name in alloys.DESCRIPTORS}
    bad = np.zeros(len(x), dtype=bool)
    for i, row in enumerate(x):
        composition = {el: float(v) for el, v in zip(elements, row, strict=True) if v > 0}
        try:
            one = alloys.descriptors_for(composition)
        except ValueError:
            bad[i] = True
            continue
        for name, v in one.items():
            values[name][i] = v
    return Descriptors(values, bad)


@dataclass
class FeatureMap:
    """Compositions over ``elements`` (n, d) → model inputs (n, f) in the dataset's units, and
    a mask of rows whose descriptors cannot be computed (e.g. Ω with ΔHmix = 0)."""

    elements: list[str]
    features: list[str]
    roles: dict[str, dict[str, Any]]

    @property
    def needs_descriptors(self) -> bool:
        return any(self.roles[f]["role"] == "descriptor" for f in self.features)

    def __call__(
        self, x: np.ndarray, descriptors: Descriptors | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(inputs (n, f), bad rows (n,)); ``descriptors`` of the same rows when already
        computed (:func:`composition_descriptors`), else computed here if an input needs
        them."""
        x = np.atleast_2d(x)
        out = np.zeros((len(x), len(self.features)))
        bad = np.zeros(len(x), dtype=bool)
        descriptor_columns = [
            (j, f) for j, f in enumerate(self.features) if self.roles[f]["role"] == "descriptor"
        ]
        position = {el: n for n, el in enumerate(self.elements)}
        for j, f in enumerate(self.features):
            role = self.roles[f]
            if role["role"] == "fraction":
                n = position.get(role["element"])
                out[:, j] = 0.0 if n is None else x[:, n] * float(role.get("scale", 1.0))
            elif role["role"] == "fixed":
                out[:, j] = float(role["value"])
        if descriptor_columns:
            if descriptors is None:
                descriptors = composition_descriptors(self.elements, x)
            bad = descriptors.bad.copy()
            for j, f in descriptor_columns:
                out[:, j] = descriptors.values[f]
        return out, bad


@dataclass
class ModelView:
    """A stored KAN / MLP with its scalers, predicting in the target's units."""

    model: Any
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    features: FeatureMap

    def predict(
        self, x: np.ndarray, descriptors: Descriptors | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(prediction (n,), bad rows (n,)) for compositions ``x`` (n, d)."""
        feats, bad = self.features(x, descriptors)
        return self.predict_inputs(feats), bad

    def predict_inputs(self, feats: np.ndarray) -> np.ndarray:
        """The prediction (n,) for model inputs ``feats`` (n, f) in the dataset's units."""
        z = (feats - self.x_mean) / self.x_std
        with torch.no_grad():
            out = self.model(torch.as_tensor(z, dtype=torch.float32)).to(torch.float64).numpy()
        return out[:, 0] * self.y_std + self.y_mean


def _model_view(blob: bytes, spec: dict[str, Any], elements: list[str]) -> ModelView:
    from kan_core.io import model_from_bytes

    model, _ = model_from_bytes(blob, device="cpu")
    model.eval()
    return ModelView(
        model,
        np.asarray(spec["x_mean"], dtype=np.float64),
        np.asarray(spec["x_std"], dtype=np.float64),
        float(spec["y_mean"]),
        float(spec["y_std"]),
        FeatureMap(elements, list(spec["features"]), spec["roles"]),
    )


@dataclass
class EnsembleView:
    """A stored KAN ensemble (``kan_core.ensemble``) with the run's scalers: the members' mean
    and the calibrated interval at ``level``, in the target's units."""

    ensemble: Any
    level: float
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    features: FeatureMap

    def predict_interval(
        self, x: np.ndarray, descriptors: Descriptors | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, std, bad rows); the interval is mean ± z(level)·std."""
        feats, bad = self.features(x, descriptors)
        mean, std = self.interval_inputs(feats)
        return mean, std, bad

    def interval_inputs(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) (n,) for model inputs ``feats`` (n, f) in the dataset's units."""
        z = (feats - self.x_mean) / self.x_std
        p = self.ensemble.predict(torch.as_tensor(z, dtype=torch.float32), self.level)
        mean = p.mean.to(torch.float64).numpy()[:, 0] * self.y_std + self.y_mean
        std = p.std.to(torch.float64).numpy()[:, 0] * self.y_std
        return mean, std

    @property
    def z(self) -> float:
        from kan_core.ensemble import normal_quantile

        return normal_quantile(self.level)


def _ensemble_view(blob: bytes, spec: dict[str, Any], elements: list[str]) -> EnsembleView:
    from kan_core.ensemble import ensemble_from_bytes

    ensemble, meta = ensemble_from_bytes(blob)
    return EnsembleView(
        ensemble,
        float(meta.get("level", 0.9)),
        np.asarray(spec["x_mean"], dtype=np.float64),
        np.asarray(spec["x_std"], dtype=np.float64),
        float(spec["y_mean"]),
        float(spec["y_std"]),
        FeatureMap(elements, list(spec["features"]), spec["roles"]),
    )


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """``ModelSpec.check_config``: a design run is made by ``POST /runs/{id}/design`` only."""
    if not isinstance(config.get("design"), dict):
        raise InvalidInputError(
            "A design run is started for a trained run with POST /api/runs/{run_id}/design "
            "(elements, bounds, direction, budget), not with POST /api/runs."
        )
    return config


# ── the snapshot ────────────────────────────────────────────────────────────────────────────


def bundle_to_bytes(
    models: dict[str, bytes | None],
    train_x: np.ndarray,
    train_y: np.ndarray,
    train_labels: list[str],
) -> bytes:
    """Model files and training alloys as one safetensors file: uint8 tensors hold the model
    files, the training alloys' formulas ride in the header metadata (JSON). Never pickle."""
    from safetensors.torch import save

    tensors = {
        name: torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        for name, blob in models.items()
        if blob is not None
    }
    tensors["train_x"] = torch.as_tensor(np.ascontiguousarray(train_x, dtype=np.float64))
    tensors["train_y"] = torch.as_tensor(np.ascontiguousarray(train_y, dtype=np.float64))
    metadata = {"format": BUNDLE_FORMAT, "train_labels": json.dumps(list(train_labels))}
    return save(tensors, metadata=metadata)


def bundle_from_bytes(blob: bytes) -> dict[str, Any]:
    """What :func:`bundle_to_bytes` stored; ``InvalidInputError`` if it is not such a file."""
    from safetensors.torch import load

    try:
        (n,) = struct.unpack("<Q", blob[:8])
        meta = json.loads(blob[8 : 8 + n]).get("__metadata__") or {}
        if meta.get("format") != BUNDLE_FORMAT:
            raise ValueError("format tag missing")
        tensors = load(blob)
    except (ValueError, struct.error) as exc:
        raise InvalidInputError(
            f"The design snapshot is unreadable ({exc}); start it again."
        ) from None
    out: dict[str, Any] = {
        "train_x": tensors["train_x"].numpy(),
        "train_y": tensors["train_y"].numpy(),
        "train_labels": list(json.loads(meta.get("train_labels", "[]"))),
    }
    for name in ("objective_model", "objective_ensemble", "constraint_model"):
        out[name] = bytes(tensors[name].numpy().tobytes()) if name in tensors else None
    return out


# ── the trainer ─────────────────────────────────────────────────────────────────────────────


@dataclass
class DesignProblem:
    """The objective of one design: the source model on compositions over ``elements``, with
    the constraint model's bounds and the input guards (``objective_range`` /
    ``constraint_range``: each model's inputs within their widened training range) as a
    violation. ``beyond`` keeps, per evaluation, which guarded inputs were beyond their range
    (for the result's notes)."""

    objective: ModelView
    constraint: ModelView | None
    constraint_lower: float | None
    constraint_upper: float | None
    ensemble: EnsembleView | None = None
    objective_range: InputRange | None = None
    constraint_range: InputRange | None = None
    beyond: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)

    def evaluate(self, x: np.ndarray) -> Evaluation:
        x = np.atleast_2d(x)
        maps = [self.objective.features] + ([self.constraint.features] if self.constraint else [])
        shared = (
            composition_descriptors(self.objective.features.elements, x)
            if any(m.needs_descriptors for m in maps)
            else None
        )
        feats, bad = self.objective.features(x, shared)
        std = None
        if self.ensemble is not None:
            values, std = self.ensemble.interval_inputs(feats)
        else:
            values = self.objective.predict_inputs(feats)
        violation = bad.astype(np.float64)
        beyond: dict[str, np.ndarray] = {}
        violation += self._guard(self.objective_range, feats, maps[0].features, bad, beyond)
        if self.constraint is not None:
            other_feats, other_bad = self.constraint.features(x, shared)
            other = self.constraint.predict_inputs(other_feats)
            scale = max(self.constraint.y_std, 1e-12)
            if self.constraint_lower is not None:
                violation += np.maximum(self.constraint_lower - other, 0) / scale
            if self.constraint_upper is not None:
                violation += np.maximum(other - self.constraint_upper, 0) / scale
            violation += other_bad
            violation += self._guard(
                self.constraint_range, other_feats, maps[1].features, other_bad, beyond
            )
        self.beyond.append((len(x), beyond))
        return Evaluation(values=values, std=std, violation=violation)

    @staticmethod
    def _guard(
        guard: InputRange | None,
        feats: np.ndarray,
        names: list[str],
        bad: np.ndarray,
        beyond: dict[str, np.ndarray],
    ) -> np.ndarray:
        """(n,) the guard's violation (0 on rows already bad: their inputs mean nothing);
        records each guarded input's rows beyond its range in ``beyond``."""
        if guard is None:
            return np.zeros(len(feats))
        excess = np.where(bad[:, None], 0.0, guard.excess(feats))  # (n, f)
        for j in np.flatnonzero((excess > 0).any(axis=0)):
            hit = excess[:, j] > 0
            beyond[names[j]] = beyond[names[j]] | hit if names[j] in beyond else hit
        return excess.sum(axis=1)

    def beyond_counts(self, n_evaluations: int) -> tuple[int, dict[str, int]]:
        """(evaluations with a guarded input beyond its range, per input how many), over the
        first ``n_evaluations`` evaluations (the search's budget; a last batch may run over)."""
        hits: dict[str, list[np.ndarray]] = {}
        any_hit: list[np.ndarray] = []
        names = sorted({name for _, batch in self.beyond for name in batch})
        for n, batch in self.beyond:
            for name in names:
                hits.setdefault(name, []).append(batch.get(name, np.zeros(n, dtype=bool)))
            any_hit.append(np.any([*batch.values(), np.zeros(n, dtype=bool)], axis=0))
        if not any_hit:
            return 0, {}
        counts = {
            name: int(np.concatenate(parts)[:n_evaluations].sum()) for name, parts in hits.items()
        }
        return int(np.concatenate(any_hit)[:n_evaluations].sum()), counts

    def constraint_values(self, x: np.ndarray) -> np.ndarray | None:
        return None if self.constraint is None else self.constraint.predict(x)[0]


def input_range_from(spec: dict[str, Any], margin: float | None) -> InputRange | None:
    """The input guard of one model (its snapshot ``spec``): the inputs that follow from the
    composition, within their training range widened by ``margin`` of it each side. None when
    ``margin`` is off or the snapshot has no training ranges (a design started before they
    were kept)."""
    if margin is None or spec.get("x_min") is None or spec.get("x_max") is None:
        return None
    guarded = [spec["roles"][f]["role"] != "fixed" for f in spec["features"]]
    return InputRange.build(spec["x_min"], spec["x_max"], float(margin), guarded)


def unguarded_inputs(spec: dict[str, Any], elements: list[str]) -> list[str]:
    """Inputs that vary with the composition but that the guard leaves free: constant over the
    training rows (e.g. the fraction of an element no training alloy contains)."""
    lo, hi = spec.get("x_min"), spec.get("x_max")
    if lo is None or hi is None:
        return []
    out = []
    for f, a, b in zip(spec["features"], lo, hi, strict=True):
        role = spec["roles"][f]
        varies = role["role"] == "descriptor" or (
            role["role"] == "fraction" and role["element"] in elements
        )
        if varies and a is not None and a == b:
            out.append(f)
    return out


def problem_from(design: dict[str, Any], bundle: dict[str, Any]) -> DesignProblem:
    elements = list(design["elements"])
    constraint = design.get("constraint")
    ensemble = bundle.get("objective_ensemble")
    margin = design.get("input_margin")
    return DesignProblem(
        _model_view(bundle["objective_model"], design["objective"], elements),
        _model_view(bundle["constraint_model"], constraint, elements) if constraint else None,
        None if not constraint else constraint.get("lower"),
        None if not constraint else constraint.get("upper"),
        None if ensemble is None else _ensemble_view(ensemble, design["objective"], elements),
        input_range_from(design["objective"], margin),
        input_range_from(constraint, margin) if constraint else None,
    )


def space_from(design: dict[str, Any]) -> CompositionSpace:
    bounds = {el: (lo, hi) for el, (lo, hi) in design["bounds"].items()}
    return CompositionSpace.build(
        design["elements"], bounds, design["min_elements"], design["presence"]
    )


def trust_from(design: dict[str, Any], bundle: dict[str, Any]) -> TrustRegion | None:
    """The trust region around the training alloys (None when ``max_distance`` is off)."""
    if design.get("max_distance") is None:
        return None
    return TrustRegion.build(
        design["elements"], bundle["train_x"], design["train_elements"], design["max_distance"]
    )


def goal_from(
    design: dict[str, Any], ensemble: EnsembleView | None, train_y: np.ndarray
) -> DesignGoal:
    """Direction and acquisition; UCB's κ is the ensemble level's normal quantile, so the
    score is the calibrated interval's optimistic end; EI's incumbent is the best training
    alloy's measured value (:func:`best_training_value`)."""
    acquisition = design.get("acquisition", "mean")
    if acquisition in ("ucb", "ei") and ensemble is None:
        raise InfeasibleConstraintError(
            "acquisition",
            f"{acquisition!r} needs an ensemble run (model_options ensemble_members).",
        )
    kappa = ensemble.z if ensemble is not None else 1.0
    plain = DesignGoal(design["direction"], design.get("target"))
    incumbent = best_training_value(train_y, plain)
    return DesignGoal(design["direction"], design.get("target"), acquisition, kappa, incumbent)


def _embed(x: np.ndarray, elements: list[str], into: list[str]) -> np.ndarray:
    """Compositions over ``elements`` as columns of the ``into`` element list (plus any element
    of ``elements`` that ``into`` lacks, appended)."""
    columns = list(into) + [e for e in elements if e not in into]
    out = np.zeros((len(x), len(columns)))
    for n, el in enumerate(elements):
        out[:, columns.index(el)] = x[:, n]
    return out


def inputs_outside_training(
    view: ModelView, spec: dict[str, Any], x: np.ndarray
) -> list[list[str]]:
    """Per composition of ``x``, the model inputs whose value lies outside the training rows'
    range (``spec["x_min"]`` / ``x_max``; a snapshot without them flags nothing). A composition
    near a training alloy can still have a descriptor far outside it (Ω = Tm·ΔSmix/|ΔHmix|
    grows without bound as ΔHmix → 0)."""
    lo, hi = spec.get("x_min"), spec.get("x_max")
    if lo is None or hi is None:
        return [[] for _ in range(len(x))]
    feats, _ = view.features(x)
    low = np.array([-np.inf if v is None else v for v in lo], dtype=np.float64)
    high = np.array([np.inf if v is None else v for v in hi], dtype=np.float64)
    finite = np.isfinite(low) & np.isfinite(high)
    slack = 1e-9 * (1.0 + np.where(finite, np.maximum(np.abs(low), np.abs(high)), 0.0))
    out = (feats < low - slack) | (feats > high + slack)  # (n, f)
    return [[view.features.features[j] for j in np.flatnonzero(row)] for row in out]


def training_points(train_x: np.ndarray, train_y: np.ndarray) -> dict[str, list[float | None]]:
    """Each training alloy's measured value and its distance to the nearest *other* training
    composition (repeats of one alloy, e.g. other processing, are not "other"): how densely the
    data cover composition space, drawn beside the candidates' distances."""
    n = len(train_x)
    if n > MAX_TRAINING_POINTS:
        keep = np.linspace(0, n - 1, MAX_TRAINING_POINTS).round().astype(int)
        train_x, train_y = train_x[keep], train_y[keep]
    unique, inverse = np.unique(np.round(train_x, 6), axis=0, return_inverse=True)
    dist = np.full(len(unique), np.nan)
    for i in range(len(unique)):
        d = 0.5 * np.abs(unique - unique[i]).sum(axis=1)
        d[i] = np.inf
        dist[i] = d.min() if len(unique) > 1 else np.nan
    return {
        "distance": [finite_or_none(round(float(v), 5)) for v in dist[inverse.reshape(-1)]],
        "value": [finite_or_none(round(float(v), 6)) for v in train_y],
    }


def best_training_value(train_y: np.ndarray, goal: DesignGoal) -> float | None:
    """The measured value of the training alloy that is best under ``goal`` (what a candidate
    has to beat)."""
    if len(train_y) == 0:
        return None
    measured = DesignGoal(goal.direction, goal.target)  # measured values have no spread
    return finite_or_none(float(train_y[int(np.argmin(measured.score(train_y)))]))


class _Progress:
    """Evaluations done → metric rows (step = thousandths of the budget, strictly increasing);
    False from the reporter (cancelled or claim lost) stops the search."""

    def __init__(self, job: TrainingJob) -> None:
        self.report, self.step, self.cancelled = job.report, 0, False
        self.start = time.perf_counter()

    def __call__(self, done: int, budget: int) -> bool:
        step = round(PROGRESS_STEPS * done / max(budget, 1))
        if step <= self.step:
            return not self.cancelled
        self.step = step
        elapsed = time.perf_counter() - self.start
        if self.report(FitProgress(step, PROGRESS_STEPS, math.nan, None, None, elapsed)) is False:
            self.cancelled = True
        return not self.cancelled


def run_design(
    design: dict[str, Any],
    bundle: dict[str, Any],
    progress: Any = None,
) -> dict[str, Any]:
    """The search and its ranked result (the part of the trainer that needs no run)."""
    alloys = _alloys()
    space = space_from(design)
    problem = problem_from(design, bundle)
    goal = goal_from(design, problem.ensemble, bundle["train_y"])
    trust = trust_from(design, bundle)
    started = time.perf_counter()
    trace = optimise(
        space,
        problem.evaluate,
        goal,
        int(design["budget"]),
        method=design.get("method", "de"),
        seed=int(design.get("seed", 0)),
        progress=progress,
        trust=trust,
    )
    seconds = time.perf_counter() - started
    elements = list(design["elements"])
    train_elements = list(design["train_elements"])
    reference = _embed(bundle["train_x"], train_elements, train_elements)
    ranked = rank_candidates(trace, int(design["n_candidates"]))
    labels = list(bundle.get("train_labels") or [])
    candidates = []
    outside: list[list[str]] = []  # per candidate, its inputs outside the training range
    if ranked:
        xs = np.array([c.fractions for c in ranked])
        embedded = _embed(xs, elements, train_elements)
        pad = embedded.shape[1] - reference.shape[1]
        ref = np.pad(reference, ((0, 0), (0, pad))) if pad else reference
        dist, index = nearest_reference(embedded, ref)
        other = problem.constraint_values(xs)
        outside = inputs_outside_training(problem.objective, design["objective"], xs)
        for k, c in enumerate(ranked):
            composition = {el: float(v) for el, v in zip(elements, c.fractions, strict=True)}
            try:
                descriptors = alloys.descriptors_for(
                    {e: v for e, v in composition.items() if v > 0}
                )
            except ValueError:
                descriptors = {}
            nearest = int(index[k])
            std = c.std if problem.ensemble is not None else None
            half = None if std is None else problem.ensemble.z * std  # type: ignore[union-attr]
            gain = (
                None
                if std is None or goal.incumbent is None
                else float(
                    expected_improvement(
                        np.array([c.value]),
                        np.array([std]),
                        goal.incumbent,
                        goal.direction,
                        goal.target,
                    )[0]
                )
            )
            candidates.append(
                {
                    "rank": k + 1,
                    "composition": {el: round(v, 6) for el, v in composition.items()},
                    "formula": composition_formula(composition),
                    "predicted": finite_or_none(c.value),
                    "std": finite_or_none(std),
                    "lower": None if half is None else finite_or_none(c.value - half),
                    "upper": None if half is None else finite_or_none(c.value + half),
                    "expected_improvement": finite_or_none(gain),
                    "constraint_predicted": None
                    if other is None
                    else finite_or_none(float(other[k])),
                    "nearest_distance": finite_or_none(float(dist[k])),
                    "nearest_training": labels[nearest] if 0 <= nearest < len(labels) else None,
                    "nearest_training_value": finite_or_none(float(bundle["train_y"][nearest]))
                    if nearest >= 0
                    else None,
                    "descriptors": {k2: finite_or_none(v) for k2, v in descriptors.items()},
                    "outside_training_range": outside[k],
                }
            )
    notes = []
    objective = design["objective"]
    fixed = {f: r["value"] for f, r in objective["roles"].items() if r["role"] == "fixed"}
    if fixed:
        notes.append(
            "Inputs held fixed (not part of the composition): "
            + ", ".join(f"{f} = {v:g}" for f, v in fixed.items())
            + "."
        )
    flagged = [k + 1 for k, names in enumerate(outside) if names]  # ranks
    if flagged:
        bounds = zip(objective["x_min"], objective["x_max"], strict=True)
        ranges = dict(zip(objective["features"], bounds, strict=True))
        names = sorted({name for row in outside for name in row})
        notes.append(
            f"{len(flagged)} of {len(candidates)} candidates (rank "
            + ", ".join(str(rank) for rank in flagged[:10])
            + (" …" if len(flagged) > 10 else "")
            + ") have model inputs outside their training range ("
            + ", ".join(f"{n} {ranges[n][0]:.4g}–{ranges[n][1]:.4g}" for n in names)
            + "): their predictions are extrapolation even within the trust region."
        )
    margin = design.get("input_margin")
    n_beyond, per_input = problem.beyond_counts(trace.n_evaluations)
    specs = [objective] + ([design["constraint"]] if design.get("constraint") else [])
    ranges = {
        f: (a, b)
        for spec in specs
        if spec.get("x_min") is not None
        for f, a, b in zip(spec["features"], spec["x_min"], spec["x_max"], strict=True)
    }
    if n_beyond:
        most = sorted(per_input.items(), key=lambda kv: -kv[1])[:4]
        notes.append(
            f"{n_beyond} of {trace.n_evaluations} evaluated compositions had model inputs "
            f"beyond their training range widened by {margin:g} of it each side (input_margin; "
            + ", ".join(
                f"{name} {ranges[name][0]:.4g}–{ranges[name][1]:.4g}: {count}"
                for name, count in most
            )
            + "): they are extrapolation and were not ranked. "
            + (
                "To rank them anyway raise input_margin or set it to null (off)."
                if candidates
                else ""
            )
        )
    free = sorted({f for spec in specs for f in unguarded_inputs(spec, elements)})
    if margin is not None and free:
        notes.append(
            f"{', '.join(free)} {'is' if len(free) == 1 else 'are'} constant over the training "
            "rows: input_margin cannot widen a zero range and leaves "
            f"{'it' if len(free) == 1 else 'them'} free; other values are flagged per candidate."
        )
    if design.get("unseen_elements"):
        notes.append(
            f"{design['unseen_elements']} never occur in the training alloys: predictions with "
            "them are extrapolation."
        )
    if not candidates:
        notes.append(
            "No evaluated composition met every constraint; widen the bounds or the budget"
            + (
                f", or allow candidates farther than {trust.max_distance:g} from the training "
                f"alloys (the closest evaluated was {trust.distance(trace.x).min():.3g})"
                if trust is not None and trace.n_evaluations
                else ""
            )
            + (
                f", or raise input_margin (now {margin:g}) or set it to null to rank "
                "compositions whose model inputs lie beyond the training range (as "
                "extrapolation)."
                if n_beyond
                else "."
            )
        )
    elif trust is None:
        notes.append(
            "No trust region (max_distance off): candidates far from every training alloy are "
            "extrapolation; check their distance before trusting the prediction."
        )
    ensemble = problem.ensemble
    interval_of = design.get("interval_of") if ensemble is not None else None
    if ensemble is not None and interval_of == "trained members":
        notes.insert(
            0,
            f"Ranked by the {len(ensemble.ensemble.members)} ensemble members as trained (their "
            f"mean and interval): run {design['source_run_id']}'s model was edited since "
            "(symbolic fixes or pruning) and the edits are not in these predictions. Reset the "
            "edits to design on the model as trained, or retrain the edited model (a single "
            "KAN, no interval) and design on that run.",
        )
    if trace.stopped:
        notes.append(f"Stopped after {trace.n_evaluations} of {trace.budget} evaluations.")
    return {
        "target": objective["target"],
        "direction": design["direction"],
        "method": trace.method,
        "budget": trace.budget,
        "n_evaluations": trace.n_evaluations,
        "n_feasible": int(trace.feasible.sum()),
        "max_distance": None if trust is None else trust.max_distance,
        "input_margin": margin,
        "n_beyond_input_margin": n_beyond,
        "acquisition": goal.acquisition,
        "interval_level": None if problem.ensemble is None else problem.ensemble.level,
        "interval_of": interval_of,
        "seconds": round(seconds, 3),
        "elements": elements,
        "candidates": candidates,
        "best_training_value": best_training_value(bundle["train_y"], goal),
        "training": training_points(bundle["train_x"], bundle["train_y"]),
        "fixed_inputs": fixed,
        "notes": notes,
        "stopped": trace.stopped,
    }


def train_design(job: TrainingJob) -> TrainOutcome:
    """The ``design`` run kind's trainer: everything it needs is in its config and bundle."""
    design = job.config.get("design")
    if not isinstance(design, dict) or job.init_weights is None:
        raise InvalidInputError("This design run has no design snapshot; start it again.")
    progress = _Progress(job)
    try:
        result = run_design(design, bundle_from_bytes(job.init_weights), progress)
    except InfeasibleConstraintError as exc:
        raise InvalidInputError(str(exc)) from None
    best = result["candidates"][0]["predicted"] if result["candidates"] else None
    return TrainOutcome(
        stopped_reason="cancelled" if progress.cancelled else "completed",
        train_loss=None,
        val_loss=None,
        val_metric=None,
        n_parameters=0,
        weights=None,
        extra={"design": result, "best_predicted": best},
    )


DESIGN_SPEC = ModelSpec(
    MODEL,
    "Inverse design: compositions that maximise, minimise or hit a target value of a trained "
    "run's prediction (start with POST /runs/{id}/design)",
    ("regression",),
    train_design,
    check_config=check_config,
)

__all__ = [
    "DESIGN_SPEC",
    "MODEL",
    "EnsembleView",
    "FeatureMap",
    "bundle_from_bytes",
    "bundle_to_bytes",
    "composition_formula",
    "feature_roles",
    "run_design",
    "train_design",
]
