"""Inverse design of alloys: a background run (kind ``design``) started for a trained run, its
progress and ranked candidates, and their CSV export."""

from typing import Any

from fastapi import APIRouter, Response, status

from app.api.deps import ExecutorDep, IdempotencyKey, IdPath, SessionDep, SettingsDep
from app.api.design_schemas import DesignIn, DesignOut
from app.api.schemas import ErrorOut, RunOut
from app.services import design_views as views
from app.services.runs import create_run

router = APIRouter(tags=["design"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.post(
    "/runs/{run_id}/design",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS
    | {200: {"model": RunOut, "description": "Existing run for this Idempotency-Key"}},
)
def start_design(
    run_id: IdPath,
    body: DesignIn,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    executor: ExecutorDep,
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    """Queue a design on run ``run_id`` (a KAN or MLP regression on a dataset with a
    composition): compositions over ``elements`` within ``bounds``, with at least
    ``min_elements`` present, that maximise / minimise / hit ``target`` of its prediction. 422
    names a constraint that cannot hold; 409 says why the run or its dataset cannot be designed
    on. Poll ``GET /runs/{child}/design`` for progress and candidates."""
    payload, bundle = views.start_design_payload(session, run_id, body.model_dump())
    run, created = create_run(
        session,
        payload,
        settings.max_parameters,
        idempotency_key=idempotency_key,
        parent_run_id=run_id,
        init_weights=bundle,
    )
    session.commit()
    if created:
        executor.submit(run.id)
    else:
        response.status_code = status.HTTP_200_OK
    return RunOut.model_validate(run)


@router.get("/runs/{run_id}/design", response_model=DesignOut, responses=ERRORS)
def get_design(run_id: IdPath, session: SessionDep) -> DesignOut:
    """A design run: status and progress (fraction of the evaluation budget spent) while it
    runs; then the ranked candidates (composition, prediction, distance to the nearest training
    alloy, descriptors) and the training alloys for a plot. 404 unless a design run."""
    return DesignOut.model_validate(views.design_view(session, run_id))


@router.get(
    "/runs/{run_id}/design/candidates.csv",
    responses=ERRORS | {200: {"content": {"text/csv": {}}}},
)
def export_design(run_id: IdPath, session: SessionDep) -> Response:
    """The ranked candidates as CSV (409 until the design has a result)."""
    return Response(
        views.candidates_csv(session, run_id),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="design_{run_id}.csv"'},
    )
