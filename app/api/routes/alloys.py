"""Alloy workflow: composition featurisation (a new dataset version) and leaderboards (KAN,
MLP and scikit-learn baselines cross-validated on the same grouped folds, stored as runs).

The request/response shapes live here, next to the routes, because only this router uses them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from app.api.deps import ExecutorDep, IdPath, SessionDep, SettingsDep
from app.api.errors import validation_message
from app.api.schemas import (
    STRICT_INPUT,
    ColumnName,
    DatasetOut,
    ErrorOut,
    Name,
    OptionKey,
    PlainText,
    RunConfig,
    RunOut,
)
from app.services import alloys as alloys_svc
from app.services import leaderboard as lb_svc
from app.services.errors import InvalidInputError
from app.services.evaluation import COMPOSITION, SplitSpec

router = APIRouter(tags=["alloys"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}
LeaderboardId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$", description="Leaderboard id")]

# ── schemas ─────────────────────────────────────────────────────────────────────────────────


class CompositionSourceOut(BaseModel):
    kind: Literal["formula", "elements"]
    formula_column: str | None
    element_columns: dict[str, str] = Field(description="column → element symbol")


class DescriptorInfo(BaseModel):
    unit: str
    label: str


class CompositionInfoOut(BaseModel):
    dataset_id: int
    detected: CompositionSourceOut | None = Field(
        description="The composition found automatically; null when none was found."
    )
    problem: str | None = Field(description="Why nothing was detected (when detected is null).")
    text_columns: list[str] = Field(description="Columns a formula column could be chosen from.")
    element_columns: dict[str, str] = Field(description="Numeric columns named like elements.")
    descriptors: dict[str, DescriptorInfo] = Field(description="Columns featurising adds.")


class FeaturiseIn(BaseModel):
    model_config = STRICT_INPUT

    formula_column: ColumnName | None = Field(
        default=None, description="Column of formulas (e.g. 'Al0.5CoCrFeNi'); default: detected."
    )
    element_columns: list[ColumnName] | None = Field(
        default=None, max_length=200, description="Element-amount columns instead of a formula."
    )
    on_error: Literal["fail", "drop", "keep"] = Field(
        default="fail",
        description="Rows that cannot be featurised: 'fail' lists them (422) and creates nothing, "
        "'drop' leaves them out of the new version, 'keep' keeps them with empty descriptors.",
    )
    overwrite: bool = Field(
        default=False, description="Replace existing columns with the names featurising adds."
    )
    name: Name | None = Field(default=None, description="Name of the new version.")
    dry_run: bool = Field(default=False, description="Only report; create no dataset.")


class RowErrorOut(BaseModel):
    row: int = Field(description="0-based row index in the dataset.")
    line: int = Field(description="Line in the CSV file (the header is line 1).")
    value: str
    reason: str


class FeaturiseReport(BaseModel):
    source: CompositionSourceOut
    rows: int
    rows_ok: int
    rows_written: int | None = None
    fraction_columns: list[str]
    descriptor_columns: list[str]
    n_errors: int
    errors: list[RowErrorOut] = Field(description="The first 200 rows with errors.")
    on_error: str


class FeaturiseOut(BaseModel):
    dataset: DatasetOut | None = Field(description="The new dataset version (null for dry_run).")
    report: FeaturiseReport


class SplitIn(BaseModel):
    model_config = STRICT_INPUT

    n_splits: int = Field(default=5, ge=2, le=20)
    group_by: ColumnName | None = Field(
        default=COMPOSITION,
        description="'composition' (detected formula / element columns), any column name, "
        "or null for ungrouped K-fold.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    stratify: bool = Field(default=False, description="Balance classes over folds.")


class LeaderboardModelIn(BaseModel):
    model_config = STRICT_INPUT

    name: PlainText = Field(min_length=1, max_length=100)
    kind: PlainText = Field(
        max_length=64, description="kan, mlp, linear, random_forest or gradient_boosting"
    )
    params: dict[OptionKey, float | int | Name | bool | None | list[int]] = Field(
        default_factory=dict, max_length=32
    )


class LeaderboardIn(BaseModel):
    model_config = STRICT_INPUT

    target_columns: list[ColumnName] = Field(min_length=1, max_length=1)
    feature_columns: list[ColumnName] | None = Field(default=None, max_length=2048)
    task: Literal["regression", "classification"] = "regression"
    split: SplitIn = Field(default_factory=SplitIn)
    models: list[LeaderboardModelIn] | None = Field(
        default=None,
        max_length=12,
        description="Default: KAN, MLP, ridge/logistic, random forest, gradient boosting.",
    )
    network_steps: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Step limit of the default line-up's KAN and MLP (with models omitted); "
        "default 2000, with early stopping.",
    )
    device: str = Field(default="cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$")


class LeaderboardRunRef(BaseModel):
    run_id: int
    name: str
    status: str


class _LeaderboardBase(BaseModel):
    """What every leaderboard view says about the comparison itself."""

    id: str
    dataset_id: int
    task: str
    target_columns: list[str]
    feature_columns: list[str] | None
    split: dict[str, Any]
    n_groups: int


class LeaderboardSummaryOut(_LeaderboardBase):
    created_at: datetime
    runs: list[LeaderboardRunRef]


class LeaderboardCreatedOut(BaseModel):
    id: str
    dataset_id: int
    runs: list[RunOut]


class FoldOut(BaseModel):
    fold: int
    metrics: dict[str, float | None]
    train_time_s: float
    n_parameters: int
    n_test: int
    best_step: int | None = None


class LeaderboardRowOut(BaseModel):
    run_id: int
    name: str
    kind: str
    status: str
    error: str | None
    score_name: str = Field(description="'r2' (regression) or 'accuracy' (classification).")
    score_mean: float | None
    score_std: float | None
    second_name: str = Field(description="'mae' (regression) or 'f1_macro' (classification).")
    second_mean: float | None
    second_std: float | None
    train_time_s_mean: float | None = Field(description="Training seconds per fold.")
    n_parameters: int | None
    n_folds: int
    folds: list[FoldOut]


class PredictionsSeriesOut(BaseModel):
    run_id: int
    name: str
    rows: list[int]
    y_true: list[float | str]
    y_pred: list[float | str]


class LeaderboardOut(_LeaderboardBase):
    split_fingerprint: str
    complete: bool = Field(description="All runs finished (succeeded, failed or cancelled).")
    rows: list[LeaderboardRowOut] = Field(description="Best score first; unfinished runs last.")
    predictions: list[PredictionsSeriesOut] = Field(
        description="Out-of-fold predicted vs measured values per finished model."
    )


def _check_run_settings(model: lb_svc.LeaderboardModel, body: LeaderboardIn) -> None:
    """A leaderboard network's settings obey the same bounds as POST /runs (RunConfig)."""
    model.validate()
    if model.kind not in lb_svc.NETWORK_KINDS:
        return
    try:
        RunConfig.model_validate(
            {"target_columns": body.target_columns, "task": body.task, "model": model.kind}
            | dict(model.params)
        )
    except ValidationError as exc:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg")} for e in exc.errors()]
        raise InvalidInputError(
            f"Model {model.name!r}: " + validation_message(errors).removeprefix("Invalid request: ")
        ) from None


# ── routes ──────────────────────────────────────────────────────────────────────────────────


@router.get(
    "/datasets/{dataset_id}/composition", response_model=CompositionInfoOut, responses=ERRORS
)
def composition(dataset_id: IdPath, session: SessionDep) -> CompositionInfoOut:
    """The composition source detected in a dataset and the columns one could pick instead."""
    return CompositionInfoOut.model_validate(alloys_svc.composition_info(session, dataset_id))


@router.post(
    "/datasets/{dataset_id}/featurise",
    response_model=FeaturiseOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS | {200: {"model": FeaturiseOut, "description": "dry_run report"}},
)
def featurise(dataset_id: IdPath, body: FeaturiseIn, session: SessionDep) -> Any:
    """Normalised element fractions + VEC, δ, ΔSmix, ΔHmix, Tm, Δχ, Ω as a new dataset version."""
    dataset, report = alloys_svc.featurise_dataset(session, dataset_id, **body.model_dump())
    if dataset is None:
        out = FeaturiseOut(dataset=None, report=FeaturiseReport.model_validate(report))
        return JSONResponse(out.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    session.commit()
    return FeaturiseOut(
        dataset=DatasetOut.model_validate(dataset), report=FeaturiseReport.model_validate(report)
    )


@router.post(
    "/datasets/{dataset_id}/leaderboards",
    response_model=LeaderboardCreatedOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
)
def create_leaderboard(
    dataset_id: IdPath,
    body: LeaderboardIn,
    session: SessionDep,
    settings: SettingsDep,
    executor: ExecutorDep,
) -> LeaderboardCreatedOut:
    """Queue one cross-validated run per model, all on the same grouped folds."""
    models = (
        [lb_svc.LeaderboardModel(m.name, m.kind, dict(m.params)) for m in body.models]
        if body.models
        else None
    )
    if models and body.network_steps is not None:
        raise InvalidInputError(
            "network_steps limits the default line-up's networks; with models given, set "
            "steps in each network's params instead."
        )
    for model in models or []:
        _check_run_settings(model, body)
    board_id, runs = lb_svc.start_leaderboard(
        session,
        dataset_id,
        target_columns=body.target_columns,
        task=body.task,
        feature_columns=body.feature_columns,
        split=SplitSpec(**body.split.model_dump()),
        models=models,
        network_steps=body.network_steps,
        max_parameters=settings.max_parameters,
        device=body.device,
    )
    session.commit()
    for run in runs:
        executor.submit(run.id)
    return LeaderboardCreatedOut(
        id=board_id, dataset_id=dataset_id, runs=[RunOut.model_validate(r) for r in runs]
    )


@router.get(
    "/datasets/{dataset_id}/leaderboards",
    response_model=list[LeaderboardSummaryOut],
    responses=ERRORS,
)
def list_leaderboards(dataset_id: IdPath, session: SessionDep) -> list[LeaderboardSummaryOut]:
    """Leaderboards of a dataset, newest first."""
    return [
        LeaderboardSummaryOut.model_validate(b)
        for b in lb_svc.list_leaderboards(session, dataset_id)
    ]


@router.get(
    "/datasets/{dataset_id}/leaderboards/{leaderboard_id}",
    response_model=LeaderboardOut,
    responses=ERRORS,
)
def get_leaderboard(
    dataset_id: IdPath, leaderboard_id: LeaderboardId, session: SessionDep, predictions: bool = True
) -> LeaderboardOut:
    """The table (mean ± std over folds, time, parameters) and out-of-fold predictions."""
    return LeaderboardOut.model_validate(
        lb_svc.get_leaderboard(session, dataset_id, leaderboard_id, with_predictions=predictions)
    )
