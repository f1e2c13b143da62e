"""Inverse design over compositions: the data-free part (no descriptors, no model, no app).

A composition is a vector of fractions over a fixed element set that sums to 1. The search space
(:class:`CompositionSpace`) is that simplex cut by per-element bounds, with "at least k elements
present" on top (an element is present at a fraction ≥ ``presence``). The caller supplies the
objective: a function from a batch of compositions (n, d) to an :class:`Evaluation` (predicted
values, an optional spread for acquisition, and a non-negative constraint violation for what this
module cannot see, e.g. bounds on a second model's prediction). :func:`optimise` searches with
scipy's differential evolution (the descriptor maps in use are plain Python, not differentiable
in torch, so the search is derivative-free) or random sampling (uniform, or inside the trust
region below), all with the same budget of objective evaluations, and keeps every evaluation;
:func:`rank_candidates` turns them into a ranked, de-duplicated list with the distance to the
nearest reference (training) composition. With a spread, :class:`DesignGoal` ranks by an upper
confidence bound or the :func:`expected_improvement` over the best observed value.

Search variables live in the box [lower, upper]; :meth:`CompositionSpace.project` maps any point
onto the feasible set (the Euclidean projection onto {lower ≤ x ≤ upper, Σx = 1}), so the bounds
and the sum hold exactly for every evaluated point, and the k-element rule is a penalty.

Distances between compositions are ½·Σ|xᵢ − yᵢ| (total variation): the fraction of atoms that
would have to change element, 0 for the same alloy and 1 for alloys sharing no element. A
:class:`TrustRegion` keeps the search within ``max_distance`` of a reference (training) alloy,
where a model fitted to those alloys can be trusted: a further composition is a violation in
proportion to how far beyond it lies, so differential evolution is led back towards the data
(or, opt-in, its trial points are moved into the region before they are evaluated:
:meth:`TrustRegion.repair`).

A composition distance does not bound what the model sees: a descriptor such as Ω =
Tm·ΔSmix/|ΔHmix| explodes where ΔHmix ≈ 0, 0.15 in composition from a real alloy. An
:class:`InputRange` keeps the model's *inputs* within their training range widened by a margin;
the caller adds its :meth:`InputRange.violation` to the objective's (it holds the inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kan_core.errors import KanCoreError

__all__ = [
    "Candidate",
    "CompositionSpace",
    "DesignGoal",
    "DesignTrace",
    "Evaluation",
    "InfeasibleConstraintError",
    "InputRange",
    "TrustRegion",
    "composition_distance",
    "expected_improvement",
    "nearest_reference",
    "optimise",
    "rank_candidates",
]

Direction = Literal["max", "min", "target"]
Method = Literal["de", "random", "random_trust"]
Acquisition = Literal["mean", "ucb", "ei"]
#: the default fraction at which an element counts as present (5 at.%: the usual cut-off for a
#: principal element of a high-entropy alloy)
DEFAULT_PRESENCE = 0.05
#: a violated constraint costs this much per unit of violation, on top of the worst score
PENALTY = 1e6
#: the default trust region: at most this composition distance from a training alloy. Measured
#: on the shipped HEA sets, a training alloy's nearest other one lies within 0.04 (median),
#: 0.075-0.1 (75th percentile) and 0.2 (90th percentile): 0.15 lets a candidate be as far from
#: the data as the sparser fifth of the real alloys are from each other, and no further
DEFAULT_MAX_DISTANCE = 0.15
#: the default input guard: each model input may go this fraction of its training range beyond
#: the training minimum / maximum (:class:`InputRange`)
DEFAULT_INPUT_MARGIN = 0.1


class InfeasibleConstraintError(KanCoreError, ValueError):
    """A design constraint that no composition can satisfy, or that is malformed.
    ``constraint`` names it: ``elements``, ``bounds``, ``min_elements`` or ``presence``."""

    def __init__(self, constraint: str, message: str) -> None:
        self.constraint = constraint
        super().__init__(f"{constraint}: {message}")


@dataclass(frozen=True)
class CompositionSpace:
    """Fractions over ``elements`` with ``lower ≤ x ≤ upper`` element-wise, ``Σx = 1`` and at
    least ``min_elements`` elements at a fraction ≥ ``presence``. Build it with :meth:`build`,
    which checks that the constraints can be met together."""

    elements: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    min_elements: int = 1
    presence: float = DEFAULT_PRESENCE

    @classmethod
    def build(
        cls,
        elements: Sequence[str],
        bounds: Mapping[str, tuple[float, float]] | None = None,
        min_elements: int = 1,
        presence: float = DEFAULT_PRESENCE,
        known: Collection[str] | None = None,
    ) -> CompositionSpace:
        """Check and build. ``bounds``: element → (lower, upper), 0 ≤ lower ≤ upper ≤ 1 (elements
        not named: 0..1). ``known``: the allowed element symbols (None: any). Raises
        :class:`InfeasibleConstraintError` naming the first constraint that fails."""
        elements = tuple(str(e) for e in elements)
        if not elements:
            raise InfeasibleConstraintError("elements", "choose at least one element.")
        twice = sorted({e for e in elements if elements.count(e) > 1})
        if twice:
            raise InfeasibleConstraintError("elements", f"{twice} listed more than once.")
        if known is not None:
            unknown = [e for e in elements if e not in known]
            if unknown:
                raise InfeasibleConstraintError(
                    "elements",
                    f"unknown element(s) {unknown}; the descriptors cover {sorted(known)}.",
                )
        bounds = dict(bounds or {})
        stray = sorted(set(bounds) - set(elements))
        if stray:
            raise InfeasibleConstraintError(
                "bounds",
                f"bounds given for {stray}, which are not in the element set {list(elements)}.",
            )
        lower = np.zeros(len(elements))
        upper = np.ones(len(elements))
        for n, el in enumerate(elements):
            lo, hi = bounds.get(el, (0.0, 1.0))
            if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi <= 1.0):
                raise InfeasibleConstraintError(
                    "bounds", f"{el}: need 0 ≤ lower ≤ upper ≤ 1, got ({lo:g}, {hi:g})."
                )
            lower[n], upper[n] = lo, hi
        if lower.sum() > 1.0 + 1e-9:
            raise InfeasibleConstraintError(
                "bounds",
                f"the lower bounds sum to {lower.sum():.4g} > 1: no composition can meet them all.",
            )
        if upper.sum() < 1.0 - 1e-9:
            raise InfeasibleConstraintError(
                "bounds",
                f"the upper bounds sum to {upper.sum():.4g} < 1: the fractions cannot reach 1.",
            )
        if not (isinstance(presence, int | float) and 0.0 < presence < 1.0):
            raise InfeasibleConstraintError("presence", f"must be in (0, 1), got {presence!r}.")
        if not 1 <= int(min_elements) <= len(elements):
            raise InfeasibleConstraintError(
                "min_elements",
                f"k = {min_elements} but the element set has {len(elements)} element(s); "
                f"choose k from 1 to {len(elements)}.",
            )
        can_be_present = int((upper >= presence - 1e-12).sum())
        if can_be_present < min_elements:
            raise InfeasibleConstraintError(
                "min_elements",
                f"k = {min_elements} elements must reach {presence:g}, but only {can_be_present} "
                f"have an upper bound that high.",
            )
        # cheapest way to lift k elements to the presence level: those it costs least
        extra = np.sort(
            np.where(upper >= presence - 1e-12, np.maximum(presence - lower, 0), np.inf)
        )
        needed = lower.sum() + extra[: int(min_elements)].sum()
        if needed > 1.0 + 1e-9:
            raise InfeasibleConstraintError(
                "min_elements",
                f"k = {min_elements} elements at ≥ {presence:g} each together with the lower "
                f"bounds need a total of {needed:.4g} > 1.",
            )
        return cls(elements, lower, upper, int(min_elements), float(presence))

    @property
    def dim(self) -> int:
        return len(self.elements)

    def project(self, z: np.ndarray) -> np.ndarray:
        """Rows of ``z`` (n, d) → the nearest feasible fractions: ``clip(z − τ, lower, upper)``
        with τ per row chosen (bisection) so that each row sums to 1."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))  # (n, d)
        lo_t = (z - self.upper).min(axis=1)  # Σ clip(z - τ) = Σ upper ≥ 1 at τ = lo_t
        hi_t = (z - self.lower).max(axis=1)  # Σ clip(z - τ) = Σ lower ≤ 1 at τ = hi_t
        for _ in range(60):
            mid = 0.5 * (lo_t + hi_t)
            total = np.clip(z - mid[:, None], self.lower, self.upper).sum(axis=1)
            too_much = total > 1.0
            lo_t = np.where(too_much, mid, lo_t)
            hi_t = np.where(too_much, hi_t, mid)
        x = np.clip(z - (0.5 * (lo_t + hi_t))[:, None], self.lower, self.upper)
        # the bisection leaves ~1e-16; put the rest on the element with the most room
        rest = 1.0 - x.sum(axis=1)
        room = np.where(rest[:, None] > 0, self.upper - x, x - self.lower)
        pick = room.argmax(axis=1)
        x[np.arange(len(x)), pick] += rest
        return x

    def shortfall(self, x: np.ndarray) -> np.ndarray:
        """Per row, how many elements are missing for "at least k present" (0 = satisfied)."""
        present = (np.atleast_2d(x) >= self.presence - 1e-12).sum(axis=1)
        return np.maximum(self.min_elements - present, 0)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random feasible-bound compositions: uniform on the simplex (Dirichlet(1)),
        projected into the bounds (unchanged where they already hold)."""
        return self.project(rng.dirichlet(np.ones(self.dim), size=n))


@dataclass(frozen=True)
class TrustRegion:
    """Compositions at most ``max_distance`` (composition distance) from one of the reference
    alloys. ``reference`` (m, d): the references' fractions on the space's elements (rows
    unique); ``outside`` (m,): each one's fraction on elements outside the space, which every
    candidate differs in. Build it with :meth:`build`."""

    reference: np.ndarray
    outside: np.ndarray
    max_distance: float

    @classmethod
    def build(
        cls,
        elements: Sequence[str],
        reference: np.ndarray,
        reference_elements: Sequence[str],
        max_distance: float,
    ) -> TrustRegion:
        """``reference`` (m, e) fractions over ``reference_elements`` (each row summing to 1),
        mapped onto the space's ``elements``."""
        if not (
            isinstance(max_distance, int | float)
            and math.isfinite(max_distance)
            and 0.0 < max_distance <= 1.0
        ):
            raise InfeasibleConstraintError(
                "max_distance", f"must be in (0, 1] (or off), got {max_distance!r}."
            )
        ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
        if ref.size == 0:
            raise InfeasibleConstraintError(
                "max_distance", "there are no reference (training) alloys to stay near."
            )
        column = {el: n for n, el in enumerate(reference_elements)}
        inside = np.zeros((len(ref), len(elements)))
        for n, el in enumerate(elements):
            if el in column:
                inside[:, n] = ref[:, column[el]]
        outside = np.clip(ref.sum(axis=1) - inside.sum(axis=1), 0.0, None)
        both = np.unique(np.round(np.column_stack([inside, outside]), 9), axis=0)
        return cls(both[:, :-1], both[:, -1], float(max_distance))

    def distance(self, x: np.ndarray, chunk: int = 256) -> np.ndarray:
        """(n,) each row's distance to its nearest reference alloy."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = np.empty(len(x))
        for start in range(0, len(x), chunk):
            part = np.abs(x[start : start + chunk, None, :] - self.reference[None]).sum(axis=-1)
            out[start : start + chunk] = 0.5 * (part + self.outside[None]).min(axis=1)
        return out

    def violation(self, x: np.ndarray) -> np.ndarray:
        """(n,) 0 inside the region, else how far beyond it in units of ``max_distance``
        (beyond by more than 1e-9: a point :meth:`repair` put on the edge is inside)."""
        beyond = self.distance(x) - self.max_distance
        return np.where(beyond > 1e-9, beyond, 0.0) / self.max_distance

    def reachable_distances(self, space: CompositionSpace) -> np.ndarray:
        """(m,) each reference alloy's distance to the space's bounds and sum (exact, the
        k-element rule aside): the reference clipped into the bounds, then the remaining excess
        or shortfall of the sum moved at one unit of distance per unit."""
        clipped = np.clip(self.reference, space.lower, space.upper)
        moved = np.abs(clipped - self.reference).sum(axis=1) + np.abs(1.0 - clipped.sum(axis=1))
        return 0.5 * (moved + self.outside)

    def closest_reachable(self, space: CompositionSpace) -> float:
        """The smallest distance from any reference alloy to the space (see
        :meth:`reachable_distances`)."""
        return float(self.reachable_distances(space).min())

    def starts(self, space: CompositionSpace, n: int, rng: np.random.Generator) -> np.ndarray:
        """Up to ``n`` compositions of the space at reference alloys (each clipped into the
        bounds and projected onto the sum): drawn at random among those within
        ``max_distance`` of the space, or the ``n`` nearest when fewer are. A search's starting
        points inside or next to the region, spread over it rather than at the first rows."""
        reach = self.reachable_distances(space)
        inside = np.flatnonzero(reach <= self.max_distance + 1e-12)
        if len(inside) >= n:
            pick = rng.choice(inside, size=n, replace=False)
        else:
            pick = np.argsort(reach, kind="stable")[:n]
        return space.project(np.clip(self.reference[pick], space.lower, space.upper))

    def anchors(self, space: CompositionSpace) -> tuple[np.ndarray, np.ndarray]:
        """(anchors (m, d), their distances (m,)): each reference alloy clipped into the
        space's bounds and projected onto the sum, a point of the space near it, and the
        distance between the two (elements outside the space counted)."""
        anchors = space.project(np.clip(self.reference, space.lower, space.upper))  # (m, d)
        return anchors, 0.5 * (np.abs(anchors - self.reference).sum(axis=1) + self.outside)

    def repair(self, space: CompositionSpace, x: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Rows of ``x`` (n, d), compositions of the space, moved into the region: a row beyond
        ``max_distance`` from every reference goes along the straight line towards the anchor
        (:meth:`anchors`) of its nearest reference among those whose anchor lies inside, just
        far enough to be within ``max_distance`` of that reference (triangle inequality, as in
        :meth:`sample`); rows inside stay as they are. A convex combination of two points of
        the space keeps the bounds and the sum. With no anchor inside, rows go onto the
        nearest anchor (still beyond, still a violation)."""
        x = np.array(np.atleast_2d(x), dtype=np.float64)  # a copy: the caller's rows stay
        anchors, start = self.anchors(space)
        usable = np.flatnonzero(start <= self.max_distance)
        if len(usable) == 0:
            usable = np.argsort(start, kind="stable")[:1]
        ref, outside = self.reference[usable], self.outside[usable]
        for lo in range(0, len(x), chunk):
            part = x[lo : lo + chunk]  # a view: rows are repaired in place
            dist = 0.5 * (np.abs(part[:, None, :] - ref[None]).sum(axis=-1) + outside[None])
            near = dist.argmin(axis=1)  # (chunk,) into usable
            far = dist[np.arange(len(part)), near] > self.max_distance
            if not far.any():
                continue
            k = usable[near[far]]
            span = composition_distance(anchors[k], part[far])
            room = np.maximum(self.max_distance - start[k], 0.0)
            t = np.minimum(room / np.maximum(span, 1e-300), 1.0)
            part[far] = anchors[k] + t[:, None] * (part[far] - anchors[k])
        return x

    def sample(self, space: CompositionSpace, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random compositions of the space inside the region (random search at the
        scale of the region, the fair baseline for a search that has to stay in it). Each is a
        step from an *anchor* — a reference alloy clipped into the bounds and projected onto
        the sum, drawn at random among the anchors inside the region — towards a uniform random
        composition of the space, of length r = R·u^(1/(d−1)) (u uniform, R the room the anchor
        leaves up to ``max_distance``: radii spread as the volume of a (d−1)-dimensional ball
        grows). A convex combination of two points of the space keeps the bounds and the sum
        exactly; by the triangle inequality the point lies within ``max_distance`` of the
        anchor's reference. With no anchor inside, the nearest one is used (its points lie
        beyond the region and count as violations)."""
        anchors, start = self.anchors(space)  # (m, d), (m,)
        inside = np.flatnonzero(start <= self.max_distance)
        if len(inside) == 0:
            inside = np.argsort(start, kind="stable")[:1]
        pick = rng.choice(inside, size=n)
        a = anchors[pick]  # (n, d)
        room = np.maximum(self.max_distance - start[pick], 0.0)
        toward = space.sample(n, rng)  # (n, d)
        span = composition_distance(a, toward)
        r = room * rng.random(n) ** (1.0 / max(space.dim - 1, 1))
        t = np.minimum(r / np.where(span > 0, span, 1.0), 1.0) * (span > 0)
        return a + t[:, None] * (toward - a)

    def check_reachable(self, space: CompositionSpace) -> None:
        """:class:`InfeasibleConstraintError` (``max_distance``) when no composition of the
        space lies within ``max_distance`` of a reference alloy."""
        closest = self.closest_reachable(space)
        if closest > self.max_distance + 1e-9:
            raise InfeasibleConstraintError(
                "max_distance",
                f"no composition within these elements and bounds lies within "
                f"{self.max_distance:g} of a training alloy (the closest possible is "
                f"{closest:.3g}); raise max_distance, turn it off, or choose elements and "
                "bounds nearer the training alloys.",
            )


@dataclass(frozen=True)
class InputRange:
    """Model inputs (n, f) kept within ``[low − margin·range, high + margin·range]`` per input,
    ``range = high − low`` over the training rows. Inputs with no bound (``low`` / ``high``
    not finite: not guarded) or constant over the training rows (range 0: nothing to widen,
    see :meth:`build`) are left free. Build it with :meth:`build`."""

    low: np.ndarray  # (f,) allowed minimum, -inf where free
    high: np.ndarray  # (f,) allowed maximum, +inf where free
    scale: np.ndarray  # (f,) the training range (1 where free)
    margin: float

    @classmethod
    def build(
        cls,
        train_min: Sequence[float | None],
        train_max: Sequence[float | None],
        margin: float,
        guarded: Sequence[bool] | None = None,
    ) -> InputRange:
        """``train_min`` / ``train_max`` (f,): each input's range over the training rows (None:
        unknown, not guarded); ``guarded`` (f,): which inputs to guard (default all).
        An input whose training range is zero (constant over the training rows) is not
        guarded: there is no scale to widen by, and most often it is the fraction of an
        element no training alloy contains, which the caller chose to include (pinning it to 0
        would make that element unusable)."""
        if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
            raise InfeasibleConstraintError(
                "input_margin", f"must be a finite number ≥ 0 (or off), got {margin!r}."
            )
        lo = np.array([np.nan if v is None else v for v in train_min], dtype=np.float64)
        hi = np.array([np.nan if v is None else v for v in train_max], dtype=np.float64)
        span = hi - lo
        use = np.isfinite(lo) & np.isfinite(hi) & (span > 0)
        if guarded is not None:
            use &= np.asarray(guarded, dtype=bool)
        scale = np.where(use, span, 1.0)
        return cls(
            np.where(use, lo - margin * scale, -np.inf),
            np.where(use, hi + margin * scale, np.inf),
            scale,
            float(margin),
        )

    @property
    def guarded(self) -> np.ndarray:
        """(f,) which inputs are guarded."""
        return np.isfinite(self.low)

    def excess(self, inputs: np.ndarray) -> np.ndarray:
        """(n, f) how far each input lies beyond its allowed range, in units of its training
        range (0 inside; beyond by more than 1e-9 relative, so round-off is inside)."""
        v = np.atleast_2d(np.asarray(inputs, dtype=np.float64))
        beyond = np.maximum(self.low - v, 0.0) + np.maximum(v - self.high, 0.0)
        out = np.where(beyond > 1e-9 * self.scale, beyond / self.scale, 0.0)
        return np.where(np.isnan(v) & self.guarded, 1.0, out)  # NaN: not computable

    def violation(self, inputs: np.ndarray) -> np.ndarray:
        """(n,) Σ_j excess_j / range_j: 0 where every input is within its allowed range."""
        return self.excess(inputs).sum(axis=1)


@dataclass
class Evaluation:
    """The objective on a batch: ``values`` (n,) the prediction; ``std`` (n,) its spread when
    the model gives one (ensembles), else None; ``violation`` (n,) ≥ 0, 0 where the caller's own
    constraints hold (a second model's bounds, compositions its descriptors cannot handle)."""

    values: np.ndarray
    std: np.ndarray | None = None
    violation: np.ndarray | None = None


Objective = Callable[[np.ndarray], Evaluation]


def expected_improvement(
    mean: np.ndarray,
    std: np.ndarray,
    best: float,
    direction: Direction = "max",
    target: float | None = None,
) -> np.ndarray:
    """E[max(improvement, 0)] per row for a normal predictive distribution Y ~ N(mean, std²)
    over the incumbent ``best`` (the best value observed so far):

    - ``max``: improvement Y − f*; EI = (μ − f*)·Φ(z) + σ·φ(z), z = (μ − f*)/σ;
    - ``min``: improvement f* − Y; EI = (f* − μ)·Φ(z) + σ·φ(z), z = (f* − μ)/σ;
    - ``target`` t: improvement = how much closer to t than the incumbent, d* − |Y − t| with
      d* = |f* − t|; with m = μ − t and a, b, c = (−d* − m, −m, d* − m)/σ,
      EI = d*·(Φ(c) − Φ(a)) + m·(2Φ(b) − Φ(a) − Φ(c)) + σ·(φ(a) + φ(c) − 2φ(b)).

    σ = 0 gives the plain improvement, clipped at 0. Φ, φ: the standard normal's cdf and
    density."""
    from scipy.special import ndtr

    mu = np.asarray(mean, dtype=np.float64)
    sigma = np.asarray(std, dtype=np.float64)
    positive = sigma > 0
    s = np.where(positive, sigma, 1.0)

    def pdf(z: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    if direction in ("max", "min"):
        gain = mu - best if direction == "max" else best - mu
        z = gain / s
        ei = gain * ndtr(z) + s * pdf(z)
        plain = np.maximum(gain, 0.0)
    elif direction == "target":
        if target is None or not math.isfinite(target):
            raise InfeasibleConstraintError("target", "direction 'target' needs a finite target.")
        d = abs(float(best) - float(target))
        m = mu - float(target)
        a, b, c = (-d - m) / s, -m / s, (d - m) / s
        ei = (
            d * (ndtr(c) - ndtr(a))
            + m * (2.0 * ndtr(b) - ndtr(a) - ndtr(c))
            + s * (pdf(a) + pdf(c) - 2.0 * pdf(b))
        )
        plain = np.maximum(d - np.abs(m), 0.0)
    else:
        raise InfeasibleConstraintError(
            "direction", f"must be 'max', 'min' or 'target', got {direction!r}."
        )
    return np.where(positive, np.maximum(ei, 0.0), plain)


@dataclass(frozen=True)
class DesignGoal:
    """What "better" means: ``max`` / ``min`` the value, or get close to ``target``.
    ``acquisition`` (the last two need an objective that returns ``std``, e.g. an ensemble):
    ``mean`` ranks by the value alone; ``ucb`` by an optimistic bound value ± ``kappa``·std;
    ``ei`` by the :func:`expected_improvement` over ``incumbent`` (the best observed value,
    e.g. the best training alloy's; for ``target``, the observed value closest to it) under a
    normal predictive distribution N(value, std²)."""

    direction: Direction = "max"
    target: float | None = None
    acquisition: Acquisition = "mean"
    kappa: float = 1.0
    incumbent: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min", "target"):
            raise InfeasibleConstraintError(
                "direction", f"must be 'max', 'min' or 'target', got {self.direction!r}."
            )
        if self.direction == "target" and (self.target is None or not math.isfinite(self.target)):
            raise InfeasibleConstraintError("target", "direction 'target' needs a finite target.")
        if self.acquisition not in ("mean", "ucb", "ei"):
            raise InfeasibleConstraintError(
                "acquisition", f"must be 'mean', 'ucb' or 'ei', got {self.acquisition!r}."
            )
        if self.acquisition == "ei" and (
            self.incumbent is None or not math.isfinite(self.incumbent)
        ):
            raise InfeasibleConstraintError(
                "acquisition", "'ei' needs the best observed value (incumbent) to improve on."
            )

    def score(self, values: np.ndarray, std: np.ndarray | None = None) -> np.ndarray:
        """Lower is better."""
        v = np.asarray(values, dtype=np.float64)
        if self.acquisition in ("ucb", "ei"):
            if std is None:
                raise InfeasibleConstraintError(
                    "acquisition",
                    f"{self.acquisition!r} needs a model that gives a spread (an ensemble).",
                )
            sd = np.asarray(std, dtype=np.float64)
            if self.acquisition == "ei":
                assert self.incumbent is not None  # checked in __post_init__
                return -expected_improvement(v, sd, self.incumbent, self.direction, self.target)
            bonus = self.kappa * sd
            if self.direction == "max":
                return -(v + bonus)
            if self.direction == "min":
                return v - bonus
            return np.maximum(np.abs(v - float(self.target)) - bonus, 0.0)  # type: ignore[arg-type]
        if self.direction == "max":
            return -v
        if self.direction == "min":
            return v
        return np.abs(v - float(self.target))  # type: ignore[arg-type]


@dataclass
class DesignTrace:
    """Every evaluated composition of one search, in order: ``x`` (n, d), ``values``, ``std``
    (or None), ``violation`` (k-rule shortfall + the objective's own), ``score`` (lower is
    better). ``stopped``: the progress callback asked to stop."""

    x: np.ndarray
    values: np.ndarray
    std: np.ndarray | None
    violation: np.ndarray
    score: np.ndarray
    method: str
    budget: int
    stopped: bool = False

    @property
    def n_evaluations(self) -> int:
        return int(len(self.values))

    @property
    def feasible(self) -> np.ndarray:
        return (self.violation <= 0) & np.isfinite(self.score)


class _Recorder:
    """The objective as the optimiser sees it (one penalised score per composition), recording
    every evaluation and stopping at the budget or when ``progress`` says so."""

    def __init__(
        self,
        space: CompositionSpace,
        objective: Objective,
        goal: DesignGoal,
        budget: int,
        progress: Callable[[int, int], bool] | None,
        trust: TrustRegion | None = None,
    ) -> None:
        self.space, self.objective, self.goal, self.budget = space, objective, goal, budget
        self.progress, self.trust = progress, trust
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]]
        self.parts = []
        self.n = 0
        self.stopped = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x`` (n, d) feasible-bound fractions → (n,) penalised scores."""
        ev = self.objective(x)
        values = np.asarray(ev.values, dtype=np.float64).reshape(len(x))
        std = None if ev.std is None else np.asarray(ev.std, dtype=np.float64).reshape(len(x))
        violation = self.space.shortfall(x).astype(np.float64)
        if ev.violation is not None:
            violation = violation + np.maximum(np.asarray(ev.violation, dtype=np.float64), 0)
        if self.trust is not None:
            violation = violation + self.trust.violation(x)
        score = self.goal.score(values, std)
        bad = ~np.isfinite(score)
        violation = np.where(bad, np.maximum(violation, 1.0), violation)
        self.parts.append((x.copy(), values, std, violation, score))
        self.n += len(x)
        if (
            self.progress is not None
            and self.progress(min(self.n, self.budget), self.budget) is False
        ):
            self.stopped = True
        finite = np.where(bad, 0.0, score)
        return finite + PENALTY * (1.0 + violation) * (violation > 0)

    @property
    def done(self) -> bool:
        return self.stopped or self.n >= self.budget

    def trace(self, method: str) -> DesignTrace:
        if not self.parts:
            d = self.space.dim
            empty = np.zeros(0)
            return DesignTrace(np.zeros((0, d)), empty, None, empty, empty, method, self.budget)
        x, values, std, violation, score = (list(p) for p in zip(*self.parts, strict=True))
        stds = None if any(s is None for s in std) else np.concatenate(std)  # type: ignore[arg-type]
        return DesignTrace(
            np.concatenate(x)[: self.budget],
            np.concatenate(values)[: self.budget],
            None if stds is None else stds[: self.budget],
            np.concatenate(violation)[: self.budget],
            np.concatenate(score)[: self.budget],
            method,
            self.budget,
            self.stopped,
        )


def optimise(
    space: CompositionSpace,
    objective: Objective,
    goal: DesignGoal,
    budget: int,
    *,
    method: Method = "de",
    seed: int = 0,
    batch: int = 256,
    progress: Callable[[int, int], bool] | None = None,
    trust: TrustRegion | None = None,
    repair: bool = False,
) -> DesignTrace:
    """Search ``space`` for compositions that are best under ``goal``, spending at most
    ``budget`` objective evaluations (compositions). ``method``: ``de`` — scipy's
    differential evolution over the box [lower, upper] (each trial point projected onto the
    feasible set; population from the budget, Latin hypercube start — with ``trust``, half the
    first generation at the reference alloys nearest the space and half uniform — no polishing,
    no early convergence stop); ``random`` — ``budget`` uniform random compositions in batches
    of ``batch``; ``random_trust`` — random compositions inside ``trust``
    (:meth:`TrustRegion.sample`: steps from random training alloys), random search's fair
    counterpart when candidates must stay near the data. ``progress(evaluations_done, budget)``
    returning False stops the search (what was evaluated is kept). ``trust``: compositions
    beyond it are infeasible, penalised by how far beyond (differential evolution follows that
    back into the region, keeping ~7-10 % of its evaluations inside on the MPEA check;
    uniform random sampling does not aim and may find none). ``repair`` (with ``trust``, DE
    only; off by default): move each trial point into the region (:meth:`TrustRegion.repair`)
    before it is evaluated, so every evaluation is admissible — measured in
    ``benchmarks/results/design.md``: higher predictions at the region's edge, and on an
    ensemble compositions whose members disagree wildly. Deterministic for a seed."""
    if budget < 1:
        raise InfeasibleConstraintError("budget", f"must be at least 1, got {budget}.")
    record = _Recorder(space, objective, goal, int(budget), progress, trust)
    rng = np.random.default_rng(seed)
    if method == "random":
        while not record.done:
            n = min(batch, record.budget - record.n)
            record(space.sample(n, rng))
        return record.trace("random")
    if method == "random_trust":
        if trust is None:
            raise InfeasibleConstraintError(
                "method", "'random_trust' samples inside the trust region; give max_distance."
            )
        while not record.done:
            record(trust.sample(space, min(batch, record.budget - record.n), rng))
        return record.trace("random_trust")
    if method != "de":
        raise InfeasibleConstraintError(
            "method", f"must be 'de', 'random' or 'random_trust', got {method!r}."
        )
    from scipy.optimize import differential_evolution

    d = space.dim
    free = space.upper - space.lower > 1e-12
    if d == 1 or not free.any():  # one composition only
        record(space.project(space.lower[None, :]))
        return record.trace("de")
    # population: scipy's popsize × d members, so that about forty generations fit the budget
    # (measured on smooth 5-element objectives: fewer, larger generations converge worse)
    popsize = int(np.clip(budget // (40 * d), 2, 15))
    pop = popsize * d
    if pop > budget:
        return optimise(
            space,
            objective,
            goal,
            budget,
            method="random_trust" if repair and trust is not None else "random",
            seed=seed,
            progress=progress,
            trust=trust,
        )
    maxiter = max(1, budget // pop - 1)

    def fitness(z: np.ndarray) -> np.ndarray:  # z: (d, S) with vectorized=True
        if record.done:
            return np.full(z.shape[1], PENALTY * 10.0)
        x = space.project(z.T)
        return record(trust.repair(space, x) if repair and trust is not None else x)

    def stop(intermediate_result: object) -> bool:  # scipy passes an OptimizeResult
        return record.done

    init: str | np.ndarray = "latinhypercube"
    if trust is not None:  # half the first generation at the training alloys nearest the space
        near = trust.starts(space, pop // 2, rng)
        init = np.vstack([near, space.sample(pop - len(near), rng)])
    bounds = list(zip(space.lower, np.where(free, space.upper, space.lower + 1e-12), strict=True))
    differential_evolution(
        fitness,
        bounds,
        popsize=popsize,
        maxiter=maxiter,
        tol=0.0,
        atol=0.0,
        polish=False,
        init=init,
        updating="deferred",
        vectorized=True,
        seed=rng,
        callback=stop,
    )
    # what the generations left unspent of the budget goes to random points
    while not record.done:
        n = min(batch, record.budget - record.n)
        if repair and trust is not None:
            record(trust.sample(space, n, rng))
        else:
            record(space.sample(n, rng))
    return record.trace("de")


def composition_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """½·Σ|a − b| along the last axis (total variation between compositions, 0..1)."""
    return 0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum(axis=-1)


def nearest_reference(
    x: np.ndarray, reference: np.ndarray, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``x`` (n, d): (distance to, index of) its nearest row of ``reference``
    (m, d), by :func:`composition_distance`. With no reference rows: inf and -1."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    reference = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    if reference.shape[0] == 0 or reference.shape[1] == 0:
        return np.full(len(x), np.inf), np.full(len(x), -1, dtype=np.int64)
    dist = np.empty(len(x))
    index = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):
        part = composition_distance(x[start : start + chunk, None, :], reference[None, :, :])
        index[start : start + chunk] = part.argmin(axis=1)  # (chunk, m) → (chunk,)
        dist[start : start + chunk] = part.min(axis=1)
    return dist, index


@dataclass
class Candidate:
    """One proposed composition: ``fractions`` over the space's elements, the prediction
    (``value``, ``std`` when given), ``score`` (lower is better), and the distance to and row
    index of the nearest reference composition."""

    fractions: np.ndarray
    value: float
    std: float | None
    score: float
    nearest_distance: float
    nearest_index: int
    extra: dict[str, float] = field(default_factory=dict)


def rank_candidates(
    trace: DesignTrace,
    n: int = 20,
    *,
    reference: np.ndarray | None = None,
    min_distance: float = 0.02,
) -> list[Candidate]:
    """The best ``n`` feasible evaluations of ``trace`` by score, each at least
    ``min_distance`` (composition distance) from every better one kept, so the list is not one
    alloy repeated with tiny changes. ``reference`` (m, d): compositions in the same element
    order (e.g. the training alloys) for ``nearest_distance``."""
    ok = np.flatnonzero(trace.feasible)
    order = ok[np.argsort(trace.score[ok], kind="stable")]
    kept: list[int] = []
    for i in order:
        if len(kept) >= n:
            break
        if kept and composition_distance(trace.x[kept], trace.x[i]).min() < min_distance:
            continue
        kept.append(int(i))
    if not kept:
        return []
    if reference is None:
        dist, index = np.full(len(kept), np.inf), np.full(len(kept), -1)
    else:
        dist, index = nearest_reference(trace.x[kept], reference)
    return [
        Candidate(
            fractions=trace.x[i].copy(),
            value=float(trace.values[i]),
            std=None if trace.std is None else float(trace.std[i]),
            score=float(trace.score[i]),
            nearest_distance=float(dist[k]),
            nearest_index=int(index[k]),
        )
        for k, i in enumerate(kept)
    ]
