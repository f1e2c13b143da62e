"""kan_core.design: the constraint set (checks name the constraint; projection keeps bounds and
the sum exactly), the search (budget kept, deterministic, DE beats random on a smooth objective
with the same budget), ranking (feasible only, diverse, nearest reference)."""

from __future__ import annotations

import numpy as np
import pytest

from kan_core.design import (
    CompositionSpace,
    DesignGoal,
    Evaluation,
    InfeasibleConstraintError,
    composition_distance,
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
