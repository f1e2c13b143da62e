"""Request and response shapes of the design endpoints (``app/api/routes/design.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from app.api.schemas import STRICT_INPUT, ColumnName, MaybeFloat, Name, PlainText, RunStatus
from app.services.design import BUDGET_DEFAULT, BUDGET_MAX, BUDGET_MIN, CANDIDATES_MAX
from kan_core.design import DEFAULT_INPUT_MARGIN, DEFAULT_MAX_DISTANCE, DEFAULT_PRESENCE

#: an element symbol as sent (checked against hea-bench's tables by the service: 422 naming it)
ElementName = Annotated[PlainText, Field(min_length=1, max_length=3)]
Fraction = Annotated[float, Field(allow_inf_nan=False)]
Distance = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class DesignIn(BaseModel):
    """A design on a trained run: the element set and its constraints, the goal, the budget."""

    model_config = STRICT_INPUT

    elements: list[ElementName] = Field(
        min_length=1, max_length=30, description="Elements a candidate may contain."
    )
    bounds: dict[ElementName, list[Fraction]] | None = Field(
        default=None,
        max_length=30,
        description="Per element [lower, upper] mole fraction (0–1); elements not named: 0–1. "
        "Bounds that cannot sum to 1 are refused (422 naming the constraint).",
    )
    min_elements: int = Field(
        default=1, ge=1, le=64, description="At least this many elements present (≥ presence)."
    )
    presence: float = Field(
        default=DEFAULT_PRESENCE,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Fraction at which an element counts as present (default 5 at.%).",
    )
    direction: Literal["max", "min", "target"] = "max"
    target: float | None = Field(
        default=None, allow_inf_nan=False, description="The value to hit (direction 'target')."
    )
    budget: int = Field(
        default=BUDGET_DEFAULT,
        ge=BUDGET_MIN,
        le=BUDGET_MAX,
        description="Model evaluations (compositions) the search may spend.",
    )
    n_candidates: int = Field(default=20, ge=1, le=CANDIDATES_MAX)
    method: Literal["de", "random", "random_trust"] = Field(
        default="de",
        description="'de': differential evolution (scipy); 'random': uniform sampling of the "
        "composition space; 'random_trust': random sampling inside the trust region (steps from "
        "random training alloys; needs max_distance).",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_distance: Distance | None = Field(
        default=DEFAULT_MAX_DISTANCE,
        description="Trust region: every candidate lies at most this composition distance "
        "(½·Σ|x − y|, the fraction of atoms that differ) from a training alloy, where the "
        "model has data; null turns it off. Default 0.15: on the shipped HEA sets a training "
        "alloy's nearest other alloy is within 0.04 (median), 0.1 (75 %) and 0.2 (90 %). 422 "
        "when no composition within the bounds can be that close.",
    )
    input_margin: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] | None = Field(
        default=DEFAULT_INPUT_MARGIN,
        description="Input guard: every model input that follows from the composition "
        "(element fractions, descriptors such as omega) stays within its training rows' range "
        "widened by this fraction of the range on each side; compositions beyond it are "
        "penalised in the search and never ranked (a composition near a training alloy can "
        "still have a descriptor far outside: Ω explodes where ΔHmix ≈ 0). Default 0.1; null "
        "turns it off (candidates' inputs outside the range are then only flagged). Inputs "
        "constant over the training rows and inputs held fixed are not guarded.",
    )
    acquisition: Literal["mean", "ucb", "ei"] = Field(
        default="mean",
        description="'mean': rank by the prediction (an ensemble's mean). Ensemble runs only "
        "(else 422): 'ucb' by the calibrated interval's optimistic end (upper when maximising, "
        "lower when minimising), to explore where the model is unsure; 'ei' by the expected "
        "improvement over the best training alloy's measured value (for a target: the one "
        "closest to it) under a normal distribution with the ensemble's mean and calibrated "
        "spread.",
    )
    fixed_features: dict[ColumnName, Fraction] | None = Field(
        default=None,
        max_length=256,
        description="Values of model inputs that are not part of the composition (e.g. a "
        "processing flag); default: each one's most common training value.",
    )
    constraint_run_id: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description="A second run whose prediction is bounded."
    )
    constraint_lower: float | None = Field(default=None, allow_inf_nan=False)
    constraint_upper: float | None = Field(default=None, allow_inf_nan=False)
    name: Name | None = None


class DesignCandidateOut(BaseModel):
    rank: int
    composition: dict[str, float]
    formula: str
    predicted: MaybeFloat
    std: MaybeFloat = None
    lower: MaybeFloat = None
    upper: MaybeFloat = None
    expected_improvement: MaybeFloat = Field(
        default=None,
        description="Ensemble runs: E[max(improvement over best_training_value, 0)] under "
        "N(predicted, std²), in the target's units; null for single models.",
    )
    constraint_predicted: MaybeFloat = None
    nearest_distance: MaybeFloat = Field(
        default=None,
        description="½·Σ|x − y| to the nearest training alloy: the fraction of atoms that differ.",
    )
    nearest_training: str | None = None
    nearest_training_value: MaybeFloat = None
    descriptors: dict[str, MaybeFloat]
    outside_training_range: list[str] = Field(
        default_factory=list,
        description="Model inputs whose value for this composition lies outside the training "
        "rows' range: the prediction is extrapolation even within the trust region.",
    )


class DesignResultOut(BaseModel):
    target: str
    direction: str
    method: str
    budget: int
    n_evaluations: int
    n_feasible: int
    max_distance: MaybeFloat = None
    input_margin: MaybeFloat = Field(
        default=None,
        description="The input guard's margin (fraction of each input's training range); "
        "null: off.",
    )
    n_beyond_input_margin: int = Field(
        default=0,
        description="Evaluated compositions left out because a model input lay beyond its "
        "training range widened by input_margin.",
    )
    acquisition: str = "mean"
    interval_level: MaybeFloat = Field(
        default=None, description="The level of lower/upper (ensemble runs); null otherwise."
    )
    interval_of: Literal["current model", "trained members"] | None = Field(
        default=None,
        description="Whose predictions and interval rank the candidates (ensemble runs): "
        "'trained members' when the run's model was edited after training (symbolic fixes, "
        "pruning; the edits are not in the ranking), else 'current model'; null otherwise.",
    )
    seconds: float
    elements: list[str]
    candidates: list[DesignCandidateOut]
    best_training_value: MaybeFloat = Field(
        default=None,
        description="The measured value of the training alloy best under the direction (for "
        "a target: closest to it): what a candidate has to beat, and the incumbent of 'ei'.",
    )
    training: dict[str, list[MaybeFloat]] = Field(
        description="Training alloys for the plot: measured value and distance to the nearest "
        "other training composition."
    )
    fixed_inputs: dict[str, float]
    notes: list[str]
    stopped: bool


class DesignProgressOut(BaseModel):
    fraction: float
    elapsed_s: MaybeFloat = None


class DesignOut(BaseModel):
    run_id: int
    source_run_id: int | None
    dataset_id: int
    status: RunStatus
    error: str | None
    target: str | None
    options: dict[str, Any]
    progress: DesignProgressOut
    result: DesignResultOut | None
