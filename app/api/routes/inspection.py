from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from app.api.deps import IdPath, IndexPath, SessionDep
from app.api.schemas import EdgeDetailOut, ErrorOut, NetworkOut, PredictionsOut, StabilityOut
from app.services import inspection as svc

router = APIRouter(tags=["inspection"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.get("/runs/{run_id}/network", response_model=NetworkOut, responses=ERRORS)
def get_network(
    run_id: IdPath, session: SessionDep, n_points: Annotated[int, Query(ge=2, le=256)] = 32
) -> NetworkOut:
    """Structure for the diagram: every edge's sampled curve, score, symbolic name; node scores.
    409 while the run has no model, or for a model that is not a KAN."""
    return NetworkOut.model_validate(svc.network(session, run_id, n_points))


@router.get("/runs/{run_id}/edges/{layer}/{i}/{j}", response_model=EdgeDetailOut, responses=ERRORS)
def get_edge(
    run_id: IdPath, layer: IndexPath, i: IndexPath, j: IndexPath, session: SessionDep
) -> EdgeDetailOut:
    """One edge in detail: a fine curve plus the data's actual pre-activations."""
    return EdgeDetailOut.model_validate(svc.edge_detail(session, run_id, layer, i, j))


@router.get("/runs/{run_id}/predictions", response_model=PredictionsOut, responses=ERRORS)
def get_predictions(
    run_id: IdPath, session: SessionDep, split: Literal["validation", "train"] = "validation"
) -> PredictionsOut:
    """Predictions vs truth in original units (labels for classification)."""
    return PredictionsOut.model_validate(svc.predictions(session, run_id, split))


@router.get("/runs/{run_id}/ensemble/stability", response_model=StabilityOut, responses=ERRORS)
def get_ensemble_stability(run_id: IdPath, session: SessionDep) -> StabilityOut:
    """Ensemble runs: per edge, each member's best symbolic form and how many members agree
    (fits the function library to every member's edges: slow on large KANs; kept once
    computed). 409 for a run without an ensemble."""
    return StabilityOut.model_validate(svc.ensemble_stability(session, run_id))
