from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.api.deps import ExecutorDep, IdempotencyKey, IdPath, SessionDep, SettingsDep
from app.api.schemas import (
    ErrorOut,
    MetricPoint,
    MetricsOut,
    ModelKindOut,
    RunCreate,
    RunListOut,
    RunOut,
    RunStatus,
)
from app.services import runs as svc
from app.services.model_registry import available_models
from app.worker.status import executor_status, queue_note

router = APIRouter(tags=["runs"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


@router.get("/models", response_model=list[ModelKindOut])
def list_models() -> list[ModelKindOut]:
    """Model kinds a run can use."""
    return [
        ModelKindOut(
            name=s.name, tasks=list(s.tasks), inspectable=s.inspectable, description=s.description
        )
        for s in available_models().values()
    ]


@router.post(
    "/runs",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS
    | {200: {"model": RunOut, "description": "Existing run for this Idempotency-Key"}},
)
def create_run(
    body: RunCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    executor: ExecutorDep,
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    """Queue a training run. 201 when created, 200 when the Idempotency-Key already made it."""
    run, created = svc.create_run(
        session,
        body.model_dump(),
        settings.max_parameters,
        idempotency_key=idempotency_key,
        sent_fields=body.model_fields_set,
    )
    session.commit()
    if created:
        executor.submit(run.id)
    else:
        response.status_code = status.HTTP_200_OK
    return RunOut.model_validate(run)


@router.get("/runs", response_model=RunListOut)
def list_runs(
    session: SessionDep,
    dataset_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    parent_run_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Only children of this run.")
    ] = None,
    model: Annotated[
        str | None,
        Query(
            max_length=32,
            pattern=r"^[A-Za-z0-9_.-]+$",
            description="Only runs of this model kind (see GET /api/models).",
        ),
    ] = None,
) -> RunListOut:
    runs = svc.list_runs(
        session,
        dataset_id=dataset_id,
        status=status_,
        limit=limit,
        parent_run_id=parent_run_id,
        model=model,
    )
    edited = svc.edited_runs(session, [r.id for r in runs])
    out = [RunOut.model_validate(r) for r in runs]
    for run in out:
        run.edited = run.id in edited
    return RunListOut(runs=out)


@router.get("/runs/{run_id}", response_model=RunOut, responses=ERRORS)
def get_run(run_id: IdPath, session: SessionDep, executor: ExecutorDep) -> RunOut:
    """A queued run carries ``queue_position`` and, when it may wait (no worker consumes the
    queue, every slot taken), ``queue_note``."""
    run = svc.get_run(session, run_id)
    out = RunOut.model_validate(run)
    out.edited = bool(svc.edited_runs(session, [run.id]))
    if out.status == "queued":
        out.queue_position = svc.queue_position(session, run)
        out.queue_note = queue_note(executor_status(executor))
    return out


@router.post("/runs/{run_id}/cancel", response_model=RunOut, responses=ERRORS)
def cancel_run(run_id: IdPath, session: SessionDep, executor: ExecutorDep) -> RunOut:
    """Queued: cancelled now. Running: stops within a training step (status turns
    ``cancelled``). Finished: 409."""
    run = svc.cancel_run(session, run_id)
    session.commit()
    executor.cancel(run_id)
    return RunOut.model_validate(run)


@router.delete("/runs/{run_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def delete_run(run_id: IdPath, session: SessionDep) -> None:
    """Deletes the run with its metrics and model (409 while it is running)."""
    svc.delete_run(session, run_id)
    session.commit()


@router.get("/runs/{run_id}/metrics", response_model=MetricsOut, responses=ERRORS)
def get_metrics(
    run_id: IdPath,
    session: SessionDep,
    after_step: Annotated[
        int | None, Query(ge=-1, le=2**31 - 1, description="Only points with step > this.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 5000,
    wait_s: Annotated[
        float,
        Query(
            ge=0,
            le=10,
            description="While there is no point after after_step and the run has not "
            "finished, wait up to this long for one (a long poll; 0: answer at once).",
        ),
    ] = 0.0,
) -> MetricsOut:
    run_status, task, rows = svc.wait_for_metrics(session, run_id, after_step, limit, wait_s)
    return MetricsOut(
        run_id=run_id,
        status=run_status,  # type: ignore[arg-type]
        metric_name="accuracy" if task == "classification" else "r2",
        points=[
            MetricPoint(
                step=r.step,
                train_loss=r.train_loss,
                val_loss=r.val_loss,
                val_metric=r.val_metric,
                elapsed_s=r.elapsed_s,
            )
            for r in rows
        ],
        last_step=rows[-1].step if rows else after_step,
    )
