from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from app.api.deps import DatabaseDep, ExecutorDep, IdPath, IndexPath, SessionDep, SettingsDep
from app.api.schemas import (
    AutoSymbolicIn,
    AutoSymbolicOut,
    EdgeStateOut,
    ErrorOut,
    FixEdgeIn,
    FormulaOut,
    PruneIn,
    PruneOut,
    RetrainIn,
    RunOut,
    SuggestionsOut,
)
from app.services import symbolic as svc

router = APIRouter(tags=["symbolic"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}
EDGE = "/runs/{run_id}/edges/{layer}/{i}/{j}"


@router.get(EDGE + "/suggestions", response_model=SuggestionsOut, responses=ERRORS)
def get_suggestions(
    run_id: IdPath,
    layer: IndexPath,
    i: IndexPath,
    j: IndexPath,
    session: SessionDep,
    top: Annotated[int, Query(ge=1, le=50)] = 8,
    library: Annotated[list[str] | None, Query(max_length=64)] = None,
) -> SuggestionsOut:
    """Candidate functions for the edge, ranked by R² and simplicity."""
    return SuggestionsOut.model_validate(
        svc.suggestions(session, run_id, layer, i, j, top=top, library=library)
    )


@router.post(EDGE + "/fix", response_model=EdgeStateOut, responses=ERRORS)
def fix_edge(
    run_id: IdPath,
    layer: IndexPath,
    i: IndexPath,
    j: IndexPath,
    body: FixEdgeIn,
    db: DatabaseDep,
) -> EdgeStateOut:
    """Fix the edge to a library function (affine parameters fitted to the edge)."""
    out = svc.fix_edge(db, run_id, layer, i, j, body.name)
    return EdgeStateOut.model_validate(out)


@router.delete(EDGE + "/fix", response_model=EdgeStateOut, responses=ERRORS)
def unfix_edge(
    run_id: IdPath, layer: IndexPath, i: IndexPath, j: IndexPath, db: DatabaseDep
) -> EdgeStateOut:
    """Make the edge numeric (spline) again."""
    out = svc.unfix_edge(db, run_id, layer, i, j)
    return EdgeStateOut.model_validate(out)


@router.post("/runs/{run_id}/auto-symbolic", response_model=AutoSymbolicOut, responses=ERRORS)
def auto_symbolic(
    run_id: IdPath, db: DatabaseDep, settings: SettingsDep, body: AutoSymbolicIn | None = None
) -> AutoSymbolicOut:
    """Fix every numeric edge whose best candidate reaches ``r2_threshold`` (computed outside
    any database transaction, stored in a short one). Bounded by
    KANSCOPE_AUTO_SYMBOLIC_TIMEOUT_S: edges not reached by then stay splines, counted in
    ``n_out_of_time`` with a ``note``; the edges fixed by then are kept."""
    body = body or AutoSymbolicIn()
    out = svc.auto_symbolic(
        db, run_id, body.r2_threshold, body.library, body.complexity_weight,
        time_budget_s=settings.auto_symbolic_timeout_s,
    )  # fmt: skip
    return AutoSymbolicOut.model_validate(out)


@router.post("/runs/{run_id}/prune", response_model=PruneOut, responses=ERRORS)
def prune(run_id: IdPath, db: DatabaseDep, body: PruneIn | None = None) -> PruneOut:
    """Switch off edges whose attribution score is below ``threshold``."""
    out = svc.prune(db, run_id, (body or PruneIn()).threshold)
    return PruneOut.model_validate(out)


@router.post("/runs/{run_id}/reset-edits", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def reset_edits(run_id: IdPath, db: DatabaseDep) -> None:
    """Back to the model as trained (drops symbolic fixes and pruning)."""
    svc.reset_edits(db, run_id)


@router.post(
    "/runs/{run_id}/retrain",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
)
def retrain(
    run_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    executor: ExecutorDep,
    body: RetrainIn | None = None,
) -> RunOut:
    """A new child run (``parent_run_id``) that continues from this run's current model,
    symbolic edges included."""
    body = body or RetrainIn()
    overrides = body.model_dump(exclude={"name"}, exclude_none=True)
    run = svc.retrain(session, run_id, overrides, settings.max_parameters, name=body.name)
    session.commit()
    executor.submit(run.id)
    return RunOut.model_validate(run)


@router.get("/runs/{run_id}/formula", response_model=FormulaOut, responses=ERRORS)
def get_formula(run_id: IdPath, session: SessionDep, settings: SettingsDep) -> FormulaOut:
    """The symbolic formula per output in original units, with its R². While some live edges
    are still numeric it is a partial formula: those edges appear as placeholders
    φ_{layer,i,j}(…), listed in ``numeric_edges`` and ``note`` (no R² of its own; exports
    refuse it). 422 when the computation takes longer than KANSCOPE_FORMULA_TIMEOUT_S."""
    return FormulaOut.model_validate(svc.formula_out(session, run_id, settings.formula_timeout_s))
