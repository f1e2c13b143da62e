"""kan_core.design: the constraint set (checks name the constraint; projection keeps bounds and
the sum exactly), the search (budget kept, deterministic, DE beats random on a smooth objective
with the same budget), ranking (feasible only, diverse, nearest reference), the trust region
(distances with elements outside the space, the closest reachable distance, trial points
repaired into it, DE kept inside, random search inside it), expected improvement (the normal
closed form, and the ranking it changes), the input guard (widened training range, zero-range
and unguarded inputs left free, bad margins refused)."""

from __future__ import annotations

import numpy as np
import pytest

from kan_core.design import (
    CompositionSpace,
    DesignGoal,
    Evaluation,
    InfeasibleConstraintError,
    InputRange,
    TrustRegion,
    composition_distance,
    expected_improvement,
    nearest_reference,
    optimise,
    rank_candidates,
)

ELEMENTS = ["Al", "Co", "Cr", "Fe", "Ni"]


@pytest.mark.parametrize(
    ("kwargs", "constraint", "words"),
    [
        ({"elements": []}, "elements", "at least one"),
        ({"elements": ["Al", "Al"]}, "elements", "more than once"),
        ({"elements": ["Al", "Xx"], "known": {"Al", "Co"}}, "elements", "['Xx']"),
        ({"bounds": {"Ti": (0, 1)}}, "bounds", "not in the element set"),
        ({"bounds": {"Al": (0.5, 0.2)}}, "bounds", "lower ≤ upper"),
        ({"bounds": {e: (0.25, 1) for e in ELEMENTS}}, "bounds", "lower bounds sum to 1.25"),
        ({"bounds": {e: (0, 0.1) for e in ELEMENTS}}, "bounds", "upper bounds sum to 0.5"),
        ({"min_elements": 6}, "min_elements", "has 5 element"),
        ({"min_elements": 0}, "min_elements", "from 1 to 5"),
        ({"min_elements": 3, "bounds": {"Al": (0, 0.01), "Co": (0, 0.01), "Cr": (0, 0.01)}},
         "min_elements", "only 2"),
        ({"min_elements": 4, "bounds": {"Al": (0.9, 1)}, "presence": 0.05}, "min_elements",
         "total of 1.05"),
        ({"presence": 1.5}, "presence", "(0, 1)"),
    ],
)  # fmt: skip
def test_infeasible_constraints_are_named(kwargs, constraint, words) -> None:
    args = {"elements": ELEMENTS} | kwargs
    with pytest.raises(InfeasibleConstraintError) as info:
        CompositionSpace.build(**args)
    assert info.value.constraint == constraint
    assert str(info.value).startswith(constraint + ":") and words in str(info.value)


def test_projection_keeps_bounds_and_sum() -> None:
    space = CompositionSpace.build(ELEMENTS, {"Al": (0.0, 0.1), "Ni": (0.3, 0.6)})
    z = np.random.default_rng(0).normal(0.3, 1.0, (500, 5))
    x = space.project(z)
    assert np.allclose(x.sum(axis=1), 1.0, atol=1e-12)
    assert (x >= space.lower - 1e-12).all() and (x <= space.upper + 1e-12).all()
    # a feasible point is its own projection
    inside = np.array([[0.1, 0.2, 0.2, 0.1, 0.4]])
    assert np.allclose(space.project(inside), inside)
    # the projection is the nearest feasible point: no random feasible point is closer
    others = space.sample(2000, np.random.default_rng(1))
    for row, proj in zip(z[:20], x[:20], strict=True):
        assert np.linalg.norm(row - proj) <= np.linalg.norm(others - row, axis=1).min() + 1e-9


def _peak(target: np.ndarray):
    def objective(x: np.ndarray) -> Evaluation:
        return Evaluation(values=-((x - target) ** 2).sum(axis=1))

    return objective


def test_search_keeps_the_budget_and_finds_an_interior_peak() -> None:
    space = CompositionSpace.build(ELEMENTS, {"Al": (0, 0.2)}, min_elements=4)
    peak = np.array([0.15, 0.3, 0.25, 0.1, 0.2])
    goal = DesignGoal("max")
    seen: list[int] = []
    de = optimise(space, _peak(peak), goal, 600, seed=3, progress=lambda d, b: seen.append(d))
    rnd = optimise(space, _peak(peak), goal, 600, method="random", seed=3)
    assert de.n_evaluations == rnd.n_evaluations == 600 and seen[-1] == 600
    assert np.allclose(de.x.sum(axis=1), 1.0) and (de.x[:, 0] <= 0.2 + 1e-12).all()
    best_de, best_rnd = de.values.max(), rnd.values.max()
    assert best_de > -1e-3 and best_de > best_rnd
    again = optimise(space, _peak(peak), goal, 600, seed=3)
    assert np.array_equal(again.x, de.x)  # deterministic for a seed
    stopped = optimise(space, _peak(peak), goal, 600, seed=3, progress=lambda d, b: d < 100)
    assert stopped.stopped and 100 <= stopped.n_evaluations < 600


def test_target_and_min_and_caller_violations() -> None:
    space = CompositionSpace.build(["A", "B"])
    value = lambda x: Evaluation(values=x[:, 0] * 10)  # noqa: E731
    hit = optimise(space, value, DesignGoal("target", target=4.0), 200, seed=0)
    best = rank_candidates(hit, 1)[0]
    assert best.value == pytest.approx(4.0, abs=0.05)
    low = rank_candidates(optimise(space, value, DesignGoal("min"), 200, seed=0), 1)[0]
    # the caller forbids A < 0.3 (e.g. a second model's bound): the minimum sits at the edge
    guarded = lambda x: Evaluation(values=x[:, 0] * 10, violation=0.3 - x[:, 0])  # noqa: E731
    edge = rank_candidates(optimise(space, guarded, DesignGoal("min"), 200, seed=0), 1)[0]
    assert low.value < 0.5 and 2.99 <= edge.value < 3.5
    with pytest.raises(InfeasibleConstraintError, match="target"):
        DesignGoal("target")
    with pytest.raises(InfeasibleConstraintError, match="ucb"):
        DesignGoal(acquisition="ucb").score(np.zeros(2))
    # the acquisition hook: an optimistic bound favours the uncertain point
    ucb = DesignGoal("max", acquisition="ucb", kappa=2.0)
    assert ucb.score(np.array([1.0, 0.9]), np.array([0.0, 0.2])).argmin() == 1


def test_ranking_is_feasible_diverse_and_measures_the_nearest_reference() -> None:
    space = CompositionSpace.build(["A", "B", "C"], min_elements=3, presence=0.1)
    trace = optimise(space, _peak(np.array([0.5, 0.3, 0.2])), DesignGoal("max"), 300, seed=1)
    ranked = rank_candidates(trace, 8, min_distance=0.05, reference=np.eye(3))
    assert 1 < len(ranked) <= 8
    xs = np.array([c.fractions for c in ranked])
    assert (xs >= 0.1 - 1e-12).all()  # every candidate keeps k = 3 at ≥ 0.1
    scores = [c.score for c in ranked]
    assert scores == sorted(scores)
    for i in range(len(xs)):
        for j in range(i):
            assert composition_distance(xs[i], xs[j]) >= 0.05
    dist, index = nearest_reference(xs, np.eye(3))
    assert [c.nearest_index for c in ranked] == index.tolist() == xs.argmax(axis=1).tolist()
    assert np.allclose([c.nearest_distance for c in ranked], 1 - xs.max(axis=1))
    assert np.allclose(dist, 1 - xs.max(axis=1))


def test_trust_region_distances_and_the_closest_reachable_point() -> None:
    rng = np.random.default_rng(0)
    # references over four elements, the space over three of them plus one they never contain
    ref = rng.dirichlet(np.ones(4), size=30)
    trust = TrustRegion.build(["B", "A", "X"], ref, ["A", "B", "C", "D"], 0.2)
    x = rng.dirichlet(np.ones(3), size=50)
    full = np.zeros((50, 5))  # columns A B C D X
    full[:, [1, 0, 4]] = x
    ref_full = np.column_stack([ref, np.zeros(30)])
    brute = 0.5 * np.abs(full[:, None, :] - ref_full[None]).sum(axis=-1).min(axis=1)
    assert np.allclose(trust.distance(x), brute)
    assert np.allclose(trust.violation(x), np.maximum(brute - 0.2, 0) / 0.2)
    # the closest reachable distance is a lower bound of every feasible point's and is attained
    space = CompositionSpace.build(["B", "A", "X"], {"X": (0.3, 1.0)})
    closest = trust.closest_reachable(space)
    many = space.sample(20_000, rng)
    assert trust.distance(many).min() >= closest - 1e-9
    assert trust.distance(many).min() < closest + 0.02
    with pytest.raises(InfeasibleConstraintError) as info:
        TrustRegion.build(
            ["B", "A", "X"], ref, ["A", "B", "C", "D"], closest * 0.9
        ).check_reachable(space)
    assert info.value.constraint == "max_distance" and f"{closest:.3g}" in str(info.value)
    TrustRegion.build(["B", "A", "X"], ref, ["A", "B", "C", "D"], closest * 1.1).check_reachable(
        space
    )
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(InfeasibleConstraintError, match="max_distance"):
            TrustRegion.build(["A"], ref, ["A", "B", "C", "D"], bad)


def test_differential_evolution_stays_in_the_trust_region() -> None:
    """The objective rises towards pure Al, far from the references (equimolar Co-Cr-Fe-Ni
    neighbours): DE proposes the best point within 0.15 of them; random sampling with the same
    budget lands inside far less often."""
    space = CompositionSpace.build(ELEMENTS, min_elements=3)
    ref = np.array([[0, 0.25, 0.25, 0.25, 0.25], [0, 0.3, 0.3, 0.2, 0.2], [0, 0.2, 0.3, 0.3, 0.2]])
    trust = TrustRegion.build(ELEMENTS, ref, ELEMENTS, 0.15)
    value = lambda x: Evaluation(values=x[:, 0])  # noqa: E731
    de = optimise(space, value, DesignGoal("max"), 600, seed=0, trust=trust)
    rnd = optimise(space, value, DesignGoal("max"), 600, method="random", seed=0, trust=trust)
    inside = trust.distance(de.x) <= 0.15 + 1e-9
    assert np.array_equal(de.feasible, inside)  # the trust region is the only constraint hit
    best = rank_candidates(de, 1)[0]
    assert 0.13 <= best.value <= 0.15 + 1e-9  # Al is what a step of 0.15 can add at most
    assert rnd.feasible.sum() < de.feasible.sum() / 3  # 34 vs 148 (seed 0)
    # repair=True: every trial point is moved into the region before it is evaluated
    fixed = optimise(space, value, DesignGoal("max"), 600, seed=0, trust=trust, repair=True)
    assert (trust.distance(fixed.x) <= 0.15 + 1e-9).all() and fixed.feasible.all()
    assert 0.14 <= rank_candidates(fixed, 1)[0].value <= 0.15 + 1e-9
    # DE starts half its first generation at the references: even a tiny budget finds some
    assert np.allclose(trust.distance(trust.starts(space, 3, np.random.default_rng(0))), 0.0)
    tiny = optimise(space, value, DesignGoal("max"), 30, seed=0, trust=trust)
    assert tiny.n_evaluations == 30 and tiny.feasible.sum() >= 3
    unconstrained = rank_candidates(optimise(space, value, DesignGoal("max"), 600, seed=0), 1)
    assert unconstrained[0].value > 0.5


def test_random_search_in_the_trust_region_stays_inside_and_spreads() -> None:
    """``random_trust``: every sample keeps the bounds and the sum and lies within max_distance
    of a reference, reaching out to the region's edge from several references; uniform
    sampling with the same budget rarely lands inside."""
    space = CompositionSpace.build(ELEMENTS, {"Al": (0.0, 0.3)}, min_elements=3)
    ref = np.array(
        [[0, 0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0, 0], [0.1, 0.2, 0.3, 0.2, 0.2]]
    )  # the second lies 0.2 outside the Al bound: its anchor has no room left at 0.15
    trust = TrustRegion.build(ELEMENTS, ref, ELEMENTS, 0.15)
    value = lambda x: Evaluation(values=x[:, 0])  # noqa: E731
    near = optimise(
        space, value, DesignGoal("max"), 600, method="random_trust", seed=0, trust=trust
    )
    uniform = optimise(space, value, DesignGoal("max"), 600, method="random", seed=0, trust=trust)
    assert near.method == "random_trust" and near.n_evaluations == 600
    assert np.allclose(near.x.sum(axis=1), 1.0, atol=1e-12)
    assert (near.x >= -1e-12).all() and (near.x[:, 0] <= 0.3 + 1e-12).all()
    dist = trust.distance(near.x)
    assert (dist <= 0.15 + 1e-9).all() and dist.max() > 0.12  # out to the edge
    nearest = np.abs(near.x[:, None, :] - ref[None]).sum(axis=-1).argmin(axis=1)
    assert set(nearest.tolist()) == {0, 2}  # both anchors with room are used
    assert near.feasible.sum() > 3 * uniform.feasible.sum()
    again = optimise(
        space, value, DesignGoal("max"), 600, method="random_trust", seed=0, trust=trust
    )
    assert np.array_equal(again.x, near.x)
    with pytest.raises(InfeasibleConstraintError, match="max_distance"):
        optimise(space, value, DesignGoal("max"), 50, method="random_trust")


def test_repair_moves_points_into_the_region_towards_a_training_alloy() -> None:
    space = CompositionSpace.build(ELEMENTS, {"Al": (0.0, 0.3)})
    ref = np.array(
        [[0, 0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0, 0], [0.1, 0.2, 0.3, 0.2, 0.2]]
    )  # the second's anchor (Al clipped to 0.3) lies 0.2 away: no room, never a target
    trust = TrustRegion.build(ELEMENTS, ref, ELEMENTS, 0.15)
    x = space.sample(400, np.random.default_rng(0))
    fixed = trust.repair(space, x)
    assert not np.shares_memory(fixed, x)
    assert np.allclose(fixed.sum(axis=1), 1.0, atol=1e-12)
    assert (fixed >= -1e-12).all() and (fixed[:, 0] <= 0.3 + 1e-12).all()
    dist = trust.distance(fixed)
    assert (dist <= 0.15 + 1e-9).all()
    was_inside = trust.distance(x) <= 0.15
    assert np.array_equal(fixed[was_inside], x[was_inside])
    # moved rows lie on the segment from their row towards reference 0's or 2's point: the
    # move is parallel to (row − anchor), and ends on the region's edge
    moved = ~was_inside
    assert moved.sum() > 100 and np.allclose(dist[moved], 0.15, atol=0.02)
    anchors, start = trust.anchors(space)
    assert sorted(start.round(6).tolist()) == [0.0, 0.0, 0.2]
    targets = anchors[start <= 0.15]  # references 0 and 2 (build sorts the rows)
    for row, new in zip(x[moved][:20], fixed[moved][:20], strict=True):
        on_segment = [
            np.allclose(new, a + composition_distance(a, new) / composition_distance(a, row)
                        * (row - a), atol=1e-9)
            for a in targets
        ]  # fmt: skip
        assert any(on_segment)


def test_expected_improvement_is_the_normal_closed_form() -> None:
    from scipy import integrate
    from scipy.stats import norm

    mean, std = np.array([10.0, 12.0, 11.0, 9.0]), np.array([2.0, 0.5, 1e-3, 3.0])
    best = 11.0
    # by hand: μ = 10, σ = 2, f* = 11 → z = −0.5, EI = −1·Φ(−0.5) + 2·φ(−0.5) = 0.39559
    assert expected_improvement(mean[:1], std[:1], best)[0] == pytest.approx(0.395593, abs=1e-6)
    z = (mean - best) / std
    hand_max = (mean - best) * norm.cdf(z) + std * norm.pdf(z)
    assert np.allclose(expected_improvement(mean, std, best, "max"), hand_max, rtol=1e-12)
    hand_min = (best - mean) * norm.cdf(-z) + std * norm.pdf(-z)
    assert np.allclose(expected_improvement(mean, std, best, "min"), hand_min, rtol=1e-12)
    # hit a target t = 10.5: the improvement is d* − |Y − t| over d* = |11 − 10.5|, integrated
    d = 0.5
    lo, hi = 10.5 - d, 10.5 + d
    for m, s in zip(mean, std, strict=True):
        numeric, _ = integrate.quad(
            lambda y, m=m, s=s: (d - abs(y - 10.5)) * norm.pdf(y, m, s), lo, hi, points=[10.5]
        )
        got = expected_improvement(np.array([m]), np.array([s]), best, "target", 10.5)[0]
        assert got == pytest.approx(numeric, abs=1e-9)
    # no spread: the plain improvement, never negative
    flat = expected_improvement(np.array([12.0, 9.0]), np.zeros(2), best)
    assert flat.tolist() == [1.0, 0.0]
    assert expected_improvement(np.array([10.7]), np.zeros(1), best, "target", 10.5)[0] == (
        pytest.approx(0.3)
    )


def test_expected_improvement_changes_the_ranking() -> None:
    """A sure, slight improvement against an unsure point below the incumbent: the mean ranks
    the sure one first, EI the unsure one (its upside is larger); UCB with a small κ keeps
    the mean's order. In a search: the mean peaks at pure B with no spread and matches the
    incumbent (EI 0 there), the spread grows towards A — EI proposes A-rich compositions."""
    mean, std = np.array([1.05, 0.9]), np.array([0.01, 0.5])
    assert DesignGoal("max").score(mean, std).argmin() == 0
    ei = DesignGoal("max", acquisition="ei", incumbent=1.0)
    assert ei.score(mean, std).argmin() == 1  # 0.05 vs 0.153
    assert DesignGoal("max", acquisition="ucb", kappa=0.1).score(mean, std).argmin() == 0
    lows = DesignGoal("min", acquisition="ei", incumbent=1.0).score(2.0 - mean, std)
    assert lows.argmin() == 1  # the mirror image for minimising
    with pytest.raises(InfeasibleConstraintError, match="incumbent"):
        DesignGoal("max", acquisition="ei")
    with pytest.raises(InfeasibleConstraintError, match="spread"):
        ei.score(mean)

    space = CompositionSpace.build(["A", "B"])
    unsure = lambda x: Evaluation(values=1.0 - x[:, 0], std=2.0 * x[:, 0] ** 2)  # noqa: E731
    by_mean = rank_candidates(optimise(space, unsure, DesignGoal("max"), 200, seed=0), 1)[0]
    by_ei = rank_candidates(optimise(space, unsure, ei, 200, seed=0), 1)[0]
    assert by_mean.fractions[0] < 0.02 and by_ei.fractions[0] > 0.95
    a = by_ei.fractions[0]  # its score is −EI of N(1 − a, (2a²)²) over f* = 1
    assert -by_ei.score == pytest.approx(float(expected_improvement(1 - a, 2 * a**2, 1.0)))
    assert -by_ei.score > 0.35  # 0.3956 at pure A


def test_input_range_widens_the_training_range_and_measures_the_excess() -> None:
    # inputs: a (0..10), b (constant 3: no range to widen), c (not guarded), d (unknown range)
    guard = InputRange.build([0.0, 3.0, 0.0, None], [10.0, 3.0, 1.0, None], 0.1,
                             guarded=[True, True, False, True])  # fmt: skip
    assert guard.guarded.tolist() == [True, False, False, False]
    inputs = np.array(
        [
            [-1.0, 3.0, 0.5, 0.0],  # inside the margin (allowed -1 .. 11)
            [11.0, 99.0, 50.0, 1e9],  # on the edge; the free inputs anywhere
            [13.5, 3.0, 0.5, 0.0],  # 2.5 beyond 11 = 0.25 of the range
            [-3.0, 3.0, 0.5, 0.0],  # 2 below -1 = 0.2 of the range
            [np.nan, 3.0, 0.5, 0.0],  # not computable
        ]
    )
    assert guard.violation(inputs) == pytest.approx([0.0, 0.0, 0.25, 0.2, 1.0])
    assert (guard.excess(inputs)[:, 1:] == 0).all()
    off = InputRange.build([0.0], [10.0], 0.0)  # margin 0: the training range itself
    assert off.violation(np.array([[10.0], [10.5]])) == pytest.approx([0.0, 0.05])
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(InfeasibleConstraintError, match="input_margin"):
            InputRange.build([0.0], [1.0], bad)
