"""Formula discovery: a run kind (``model: "discover"``, created with ``POST /runs`` like any
run), a shortcut that starts one for a trained run, and its result. The search runs on the
executor as a background job, never inside a request."""

from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import ValidationError

from app.api.deps import ExecutorDep, IdempotencyKey, IdPath, SessionDep, SettingsDep
from app.api.schemas import DiscoverIn, DiscoveryOut, ErrorOut, LimitsOut, RunCreate, RunOut
from app.services import discovery as svc
from app.services import discovery_views as views
from app.services.errors import InvalidInputError
from app.services.runs import create_run

router = APIRouter(tags=["discovery"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.post(
    "/runs/{run_id}/discover",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS
    | {200: {"model": RunOut, "description": "Existing run for this Idempotency-Key"}},
)
def start_discovery(
    run_id: IdPath,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    executor: ExecutorDep,
    body: DiscoverIn | None = None,
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    """Queue a formula discovery for run ``run_id``'s dataset, target and features, holding out
    the same validation rows (a child run, ``parent_run_id``). Poll
    ``GET /runs/{child}/discovery`` for progress and the result."""
    body = body or DiscoverIn()
    payload = views.discovery_payload(session, run_id, body.budget_s, body.noise, body.name)
    try:
        checked = RunCreate.model_validate(payload).model_dump()
    except ValidationError as exc:  # the parent's stored config no longer passes today's checks
        raise InvalidInputError(
            f"Run {run_id}'s configuration cannot start a discovery: {exc.errors()[0]['msg']}."
        ) from None
    run, created = create_run(
        session,
        checked,
        settings.max_parameters,
        idempotency_key=idempotency_key,
        parent_run_id=run_id,
    )
    session.commit()
    if created:
        executor.submit(run.id)
    else:
        response.status_code = status.HTTP_200_OK
    return RunOut.model_validate(run)


@router.get("/runs/{run_id}/discovery", response_model=DiscoveryOut, responses=ERRORS)
def get_discovery(run_id: IdPath, session: SessionDep) -> DiscoveryOut:
    """A discovery run: status and progress while it runs; then the chosen formula, the Pareto
    front (complexity, R², RMSE on the search's and on the run's validation rows) and the
    networks scored on the same validation rows. 404 when the run is not a discovery."""
    return DiscoveryOut.model_validate(views.discovery_view(session, run_id))


@router.get("/limits", response_model=LimitsOut)
def get_limits(settings: SettingsDep) -> LimitsOut:
    """Limits a client should agree with: how long the formula endpoint may compute, the
    discovery budget's bounds, upload and model size caps."""
    return LimitsOut(
        formula_timeout_s=settings.formula_timeout_s,
        auto_symbolic_timeout_s=settings.auto_symbolic_timeout_s,
        discovery_budget_s={
            "min": svc.BUDGET_MIN_S,
            "max": svc.BUDGET_MAX_S,
            "default": svc.BUDGET_DEFAULT_S,
        },
        max_upload_bytes=settings.max_upload_bytes,
        max_parameters=settings.max_parameters,
    )
