"""The design's input guard (``app.services.design``, ``input_margin``): a composition whose
descriptor lies beyond the training range widened by the margin is a violation of Σ excess /
range and is never ranked, while without the guard the search ranks exactly such compositions
first (a model that rewards Ω, which explodes where ΔHmix ≈ 0); the descriptors are computed once
per evaluation however many models read them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from app.services import design as service
from kan_core.design import CompositionSpace, DesignGoal, optimise, rank_candidates

ELEMENTS = ["Al", "Co", "Cr", "Cu", "Fe", "Ni"]
FEATURES = [f"x_{el}" for el in ELEMENTS] + ["vec", "omega"]
#: Ω's training range in this test (the shipped MPEA set spans 0.55–180)
OMEGA_RANGE = (1.0, 10.0)


class Picks(torch.nn.Module):
    """Predicts one (standardised) input as it is: here Ω, so maximising chases Ω."""

    def __init__(self, column: int) -> None:
        super().__init__()
        self.column = column

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, self.column : self.column + 1]


def _spec() -> dict[str, Any]:
    roles = service.feature_roles(FEATURES)
    lows = [0.0] * len(ELEMENTS) + [3.0, OMEGA_RANGE[0]]
    highs = [0.6] * len(ELEMENTS) + [11.0, OMEGA_RANGE[1]]
    return {"features": FEATURES, "roles": roles, "x_min": lows, "x_max": highs}


def _problem(margin: float | None, constraint: bool = False) -> service.DesignProblem:
    spec = _spec()
    fmap = service.FeatureMap(ELEMENTS, FEATURES, spec["roles"])
    zeros, ones = np.zeros(len(FEATURES)), np.ones(len(FEATURES))
    view = service.ModelView(Picks(FEATURES.index("omega")), zeros, ones, 0.0, 1.0, fmap)
    other = service.ModelView(Picks(FEATURES.index("vec")), zeros, ones, 0.0, 1.0, fmap)
    guard = service.input_range_from(spec, margin)
    return service.DesignProblem(
        view,
        other if constraint else None,
        None,
        1e9 if constraint else None,
        objective_range=guard,
        constraint_range=guard if constraint else None,
    )


def _omega(x: np.ndarray) -> np.ndarray:
    return service.composition_descriptors(ELEMENTS, x).values["omega"]


def test_a_descriptor_beyond_the_margin_is_a_violation_and_never_ranked() -> None:
    near = np.array([[0.0, 0.2, 0.2, 0.2, 0.2, 0.2]])  # CoCrCuFeNi-like, Ω ≈ 7: inside
    far = np.array([[0.08, 0.24, 0.16, 0.2, 0.21, 0.11]])  # ΔHmix ≈ 0: Ω ≈ 500
    omega = _omega(np.vstack([near, far]))
    assert omega[0] < OMEGA_RANGE[1] and omega[1] > 20 * OMEGA_RANGE[1], omega

    guarded = _problem(0.1).evaluate(np.vstack([near, far]))
    span = OMEGA_RANGE[1] - OMEGA_RANGE[0]
    expected = (omega[1] - (OMEGA_RANGE[1] + 0.1 * span)) / span  # Σ excess / range
    assert guarded.violation is not None
    assert guarded.violation[0] == 0 and guarded.violation[1] == pytest.approx(expected)
    assert guarded.values == pytest.approx(omega)  # the prediction itself is unchanged
    unguarded = _problem(None).evaluate(np.vstack([near, far]))
    assert unguarded.violation is not None and (unguarded.violation == 0).all()

    # the search: without the guard the best-ranked composition has Ω far outside the
    # training range; with it no ranked candidate is beyond the widened range
    space = CompositionSpace.build(ELEMENTS, min_elements=3)
    allowed = OMEGA_RANGE[1] + 0.1 * span
    ranked = {}
    for margin in (None, 0.1):
        problem = _problem(margin)
        trace = optimise(space, problem.evaluate, DesignGoal("max"), 300, method="random")
        ranked[margin] = rank_candidates(trace, 10)
        n_beyond, per_input = problem.beyond_counts(trace.n_evaluations)
        if margin is None:
            assert n_beyond == 0
        else:
            assert 0 < per_input["omega"] <= n_beyond <= sum(per_input.values())
            assert int((~trace.feasible).sum()) >= n_beyond
    assert ranked[None][0].value > 3 * allowed
    assert ranked[0.1] and all(c.value <= allowed + 1e-9 for c in ranked[0.1])
    omegas = _omega(np.array([c.fractions for c in ranked[0.1]]))
    assert omegas.max() <= allowed + 1e-9


def test_descriptors_are_computed_once_for_every_model(monkeypatch) -> None:
    calls = []
    real = service.composition_descriptors

    def counted(elements: list[str], x: np.ndarray) -> service.Descriptors:
        calls.append(len(x))
        return real(elements, x)

    monkeypatch.setattr(service, "composition_descriptors", counted)
    x = np.array([[0.0, 0.2, 0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.0, 0.2, 0.2]])
    ev = _problem(0.1, constraint=True).evaluate(x)  # objective and constraint read Ω / VEC
    assert calls == [2] and ev.violation is not None
