"""Request and response schemas of the HTTP API (the contract the dashboard codes against).

Floats that can be NaN or infinite (losses, metrics, predictions, curve samples) are typed
``float | None``: a non-finite value is sent as ``null``, never as a 500.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from app.services.discovery import BUDGET_DEFAULT_S, BUDGET_MAX_S, BUDGET_MIN_S
from app.services.safe_text import MAX_COLUMN_NAME_CHARS, forbidden_character


def _finite_or_none(value: Any) -> Any:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return f if math.isfinite(f) else None


#: A float that is ``null`` when the value was NaN or infinite.
MaybeFloat = Annotated[float | None, BeforeValidator(_finite_or_none)]

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Task = Literal["regression", "classification"]


def _printable(value: str) -> str:
    problem = forbidden_character(value)
    if problem:
        raise ValueError(problem)
    return value


#: Text a client sends that is stored or looked up: control characters (NUL, newline, escape …),
#: lone surrogates and bidi overrides are refused with a 422, the same on SQLite and PostgreSQL.
PlainText = Annotated[str, AfterValidator(_printable)]
#: A name given to a dataset or run (≤ 200 characters).
Name = Annotated[str, Field(max_length=200), AfterValidator(_printable)]
#: A column of a dataset, as named in its header.
ColumnName = Annotated[
    str, Field(min_length=1, max_length=MAX_COLUMN_NAME_CHARS), AfterValidator(_printable)
]
#: A key of a run's model_options.
OptionKey = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
#: Most explicit row indices a run request may list (each run's config, with them, is sent in
#: every GET /runs answer); larger splits: val_fraction with a seed.
MAX_ROW_INDICES = 100_000
#: Request bodies are strict JSON: an integer field takes an integer only (not "5", true or
#: 5.0), a number field an integer or a float (not "0.1"), a text field a string; unknown
#: fields are refused.
STRICT_INPUT = ConfigDict(extra="forbid", strict=True)


class ErrorOut(BaseModel):
    detail: str | list[Any] = Field(description="What went wrong and what to change.")


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    database: str = Field(description="Database dialect in use: sqlite or postgresql.")
    executor: str
    version: str


class WorkersOut(BaseModel):
    """Whether anything takes runs from the queue (``GET /api/workers``)."""

    executor: Literal["local", "celery"]
    consuming: bool = Field(
        description="A worker takes queued runs: always for the local executor while the server "
        "runs; for Celery, some worker answered a ping (kept a few seconds)."
    )
    busy: bool = Field(description="Consuming, but every training slot is taken.")
    detail: str
    workers: list[str] = Field(description="Worker names (Celery) or this server's executor.")
    warm: bool | None = Field(
        None,
        description="A trainer process has finished its imports and waits for a run, so the "
        "next run starts within about a second (local executor, KANSCOPE_WARM_TRAINER); null "
        "where the executor cannot tell (Celery).",
    )


# ── datasets ────────────────────────────────────────────────────────────────────────────────


class ColumnInfo(BaseModel):
    name: str
    dtype: str = Field(description="pandas dtype after typing: float64, int64, bool, string …")
    kind: Literal["numeric", "categorical"]
    n_missing: int
    n_unique: int
    mean: MaybeFloat = None
    std: MaybeFloat = None
    min: MaybeFloat = None
    max: MaybeFloat = None
    top_values: list[str] | None = Field(
        default=None, description="Most frequent values of a categorical column (up to 10)."
    )


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    filename: str | None
    n_rows: int
    n_columns: int
    size_bytes: int = Field(description="Size of the stored Parquet content.")
    columns: list[ColumnInfo]
    parent_id: int | None = Field(default=None, description="Dataset this one was derived from.")
    description: str | None = None
    created_at: datetime


class DatasetPreviewOut(BaseModel):
    id: int
    columns: list[str]
    rows: list[list[Any]] = Field(description="First rows, cell values; missing/NaN as null.")
    n_rows: int = Field(description="Total rows in the dataset.")
    stats: list[ColumnInfo]


class RowCheckIn(BaseModel):
    """Columns a run would use; ``POST /datasets/{id}/row-check`` says how many rows remain."""

    model_config = STRICT_INPUT

    target_columns: list[ColumnName] = Field(min_length=1, max_length=64)
    feature_columns: list[ColumnName] = Field(default=[], max_length=2048)
    task: Task = "regression"


class RowCheckColumn(BaseModel):
    name: str
    role: Literal["target", "feature"]
    n_missing: int = Field(description="Rows this column alone leaves out (missing/non-numeric).")
    n_complete_without: int = Field(description="Complete rows if this column were left out.")


class RowCheckOut(BaseModel):
    n_rows: int
    n_complete: int = Field(description="Rows a run with these columns trains and validates on.")
    n_dropped: int
    columns: list[RowCheckColumn]


# ── runs ────────────────────────────────────────────────────────────────────────────────────


#: Early stopping's patience when a run does not say (networks with validation rows only).
DEFAULT_PATIENCE = 100
EARLY_STOPPING_KINDS = ("kan", "mlp", "rbf_subspace")


class RunConfig(BaseModel):
    """Everything that defines a training run. Bounds keep memory and time sane."""

    model_config = STRICT_INPUT

    target_columns: list[ColumnName] = Field(min_length=1, max_length=64)
    feature_columns: list[ColumnName] | None = Field(
        default=None,
        max_length=2048,
        description="Input columns; default: every numeric column that is not a target.",
    )
    task: Task = "regression"
    model: PlainText = Field(
        default="kan",
        max_length=64,
        description="Model kind: 'kan', 'mlp', or a registered baseline (see GET /api/models).",
    )
    hidden: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default=[5],
        max_length=7,
        description="Hidden layer widths; the full width is [n_features, *hidden, n_outputs] "
        "(at most 8 layers). Empty list = a single layer.",
    )
    grid: int = Field(default=5, ge=1, le=200, description="KAN grid intervals per edge.")
    k: int = Field(default=3, ge=1, le=5, description="Spline order.")
    basis: Literal["bspline", "rbf", "chebyshev", "relu_kan", "rational", "af_kan", "s_kan"] = (
        "bspline"
    )
    activation: Literal["silu", "relu", "tanh", "gelu"] = Field(
        default="silu", description="MLP activation."
    )
    optimizer: Literal["adam", "lbfgs"] = "adam"
    steps: int = Field(default=200, ge=1, le=100_000)
    lr: float = Field(default=1e-2, gt=0, le=10.0, allow_inf_nan=False)
    batch_size: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Mini-batch size; null = full batch."
    )
    lamb: float = Field(
        default=0.0,
        ge=0,
        le=1e3,
        allow_inf_nan=False,
        description="Overall sparsity regularisation strength.",
    )
    lamb_l1: float = Field(default=1.0, ge=0, le=1e3, allow_inf_nan=False)
    lamb_entropy: float = Field(default=2.0, ge=0, le=1e3, allow_inf_nan=False)
    update_grid_every: int = Field(
        default=5, ge=0, le=100_000, description="Update grids from data every n steps; 0 = never."
    )
    update_grid_until: int | None = Field(
        default=50, ge=0, le=100_000, description="Last step with grid updates; null = all."
    )
    grid_eps: float = Field(default=1.0, ge=0, le=1, allow_inf_nan=False)
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Stop when the validation loss has not improved for this many logged steps "
        "and keep the weights of its best step (summary: best_step, and the last step's "
        "final_train_loss / final_val_loss / final_val_metric next to the kept model's "
        f"scores). Not sent: {DEFAULT_PATIENCE} for a KAN or MLP with validation rows "
        "(val_fraction > 0 or val_rows), else off. null: off (every step, the last weights).",
    )
    val_fraction: float = Field(
        default=0.2,
        ge=0.0,
        le=0.9,
        allow_inf_nan=False,
        description="Random validation split (ignored if val_rows given).",
    )
    train_rows: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None = Field(
        default=None,
        max_length=MAX_ROW_INDICES,
        description="Explicit training row indices (0-based, into the dataset; at most "
        f"{MAX_ROW_INDICES:,}).",
    )
    val_rows: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None = Field(
        default=None,
        max_length=MAX_ROW_INDICES,
        description="Explicit validation row indices; train = train_rows or the rest (at most "
        f"{MAX_ROW_INDICES:,}; for larger splits use val_fraction and seed).",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    device: str | None = Field(
        default=None,
        pattern=r"^(cpu|auto|cuda(:\d+)?)$",
        description="Torch device; unset = the worker's KANSCOPE_DEVICE (cpu by default). A "
        "device no worker offers is refused (KANSCOPE_WORKER_DEVICES).",
    )
    log_every: int = Field(default=1, ge=1, le=10_000)
    model_options: dict[OptionKey, float | int | Name | bool | None] = Field(
        default_factory=dict,
        max_length=32,
        description="Options of the model kind, checked when the run is created (unknown keys "
        "and out-of-range values are refused, naming the allowed ones): the baselines' "
        "hyperparameters (e.g. alpha, n_estimators), discovery's budget_s and noise; 'kan' and "
        "'mlp' take none (their settings are the fields above).",
    )

    @field_validator("target_columns", "feature_columns")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("column names must be unique")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> RunConfig:
        if self.feature_columns is not None:
            overlap = set(self.feature_columns) & set(self.target_columns)
            if overlap:
                raise ValueError(f"columns {sorted(overlap)} are both feature and target")
        if self.task == "classification" and len(self.target_columns) != 1:
            raise ValueError("classification takes exactly one target column")
        if self.val_rows is None and self.train_rows is not None:
            raise ValueError("train_rows needs val_rows too")
        if self.val_rows is not None and self.train_rows is not None:
            both = set(self.val_rows) & set(self.train_rows)
            if both:
                raise ValueError(f"{len(both)} rows are in both train_rows and val_rows")
        if "early_stopping_patience" not in self.model_fields_set:
            has_val = bool(self.val_rows) if self.val_rows is not None else self.val_fraction > 0
            if has_val and self.model in EARLY_STOPPING_KINDS:
                # a default, so not marked as sent (model_fields_set): an Idempotency-Key
                # retry is compared on what the client sent, never on the server's defaults
                self.__dict__["early_stopping_patience"] = DEFAULT_PATIENCE
        return self


class RunCreate(RunConfig):
    dataset_id: int = Field(ge=1, le=2**63 - 1)
    name: Name | None = None


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str | None
    dataset_id: int
    parent_run_id: int | None
    model: str
    task: Task
    status: RunStatus
    config: dict[str, Any]
    error: str | None
    cancel_requested: bool
    device: str | None
    owner: str | None = Field(description="Executor id holding the run while it runs.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    summary: dict[str, Any] = Field(
        description="Result figures: n_parameters, n_rows_used, n_rows_dropped, stopped_reason, "
        "train_loss / val_loss / val_metric of the model kept (the best step's with early "
        "stopping: best_step; the last step's as final_train_loss / final_val_loss / "
        "final_val_metric, final_step) (null when non-finite), width, inputs, outputs. "
        "After a lost worker (the run was requeued): resumed_from_step (continued from a "
        "checkpoint) or restarted_after_step (started over), and notes saying so."
    )
    has_model: bool
    edited: bool = Field(
        default=False,
        description="The model was changed after training (symbolic fixes, pruning); "
        "POST /runs/{id}/reset-edits goes back.",
    )
    queue_position: int | None = Field(
        default=None,
        description="Queued runs only: 1 = the next to start (queued runs created before it, "
        "plus one); null otherwise.",
    )
    queue_note: str | None = Field(
        default=None,
        description="Queued runs only: why the run may wait (no worker consumes the queue, or "
        "every training slot is taken); null otherwise.",
    )


class RunListOut(BaseModel):
    runs: list[RunOut]


class MetricPoint(BaseModel):
    step: int
    train_loss: MaybeFloat
    val_loss: MaybeFloat
    val_metric: MaybeFloat = Field(description="R² (regression) or accuracy (classification).")
    elapsed_s: MaybeFloat


class MetricsOut(BaseModel):
    run_id: int
    status: RunStatus
    metric_name: Literal["r2", "accuracy"]
    points: list[MetricPoint] = Field(description="Points with step > after_step, by step.")
    last_step: int | None = Field(description="Pass as after_step to get only newer points.")


class ModelKindOut(BaseModel):
    name: str
    tasks: list[Task]
    inspectable: bool = Field(description="Has KAN edges (network/curves/symbolic work).")
    description: str


# ── inspection ──────────────────────────────────────────────────────────────────────────────


class RowsUsedOut(BaseModel):
    rows_used: int = Field(
        description="Training rows this answer was computed on: fewer than rows_total when they "
        "were sampled (evenly spread) to keep it fast and within KANSCOPE_MAX_RUN_MEMORY_MB."
    )
    rows_total: int = Field(description="The run's training rows.")


class EdgeOut(BaseModel):
    i: int = Field(description="Input node index in this layer.")
    j: int = Field(description="Output node index in this layer.")
    score: MaybeFloat = Field(description="Attribution score (higher = more important).")
    symbolic: str | None = Field(description="Fixed symbolic function name, or null.")
    active: bool = Field(default=True, description="False when the edge was pruned.")
    x: list[MaybeFloat] = Field(
        description="Sample points of the edge input (standardised). Fewer points on wide "
        "models (≤ 1e6 samples in all); empty for edges beyond the 5000 highest-scoring ones."
    )
    y: list[MaybeFloat] = Field(description="phi(x) at those points.")


class LayerOut(BaseModel):
    index: int
    in_dim: int
    out_dim: int
    edges: list[EdgeOut]


class NetworkOut(RowsUsedOut):
    """Network structure for the diagram.

    ``{width, input_names, output_names, layers: [{index, in_dim, out_dim,
    edges: [{i, j, score, symbolic, active, x: [...], y: [...]}]}], node_scores: [[...]]}``;
    ``node_scores[l][n]`` is the score of node n in layer l (len(width) lists).
    """

    run_id: int
    width: list[int]
    input_names: list[str]
    input_scales: list[list[MaybeFloat]] = Field(
        default=[],
        description="Per input [mean, std] of the training rows: an input edge's x in the "
        "column's own units is mean + std·x.",
    )
    output_names: list[str]
    layers: list[LayerOut]
    node_scores: list[list[MaybeFloat]]
    node_families: list[list[str | None]] | None = Field(
        default=None,
        description="S-KAN (basis 's_kan'): node_families[l][n] is the activation family input "
        "node n of layer l chose (bspline, rbf, chebyshev, rational); null for other bases.",
    )


class EdgeBandOut(BaseModel):
    level: float = Field(description="lower/upper are the members' (1∓level)/2 quantiles.")
    members: int
    x: list[MaybeFloat] = Field(description="A grid over the members' inputs (as the edge's x).")
    mean: list[MaybeFloat]
    lower: list[MaybeFloat]
    upper: list[MaybeFloat]
    note: str | None = Field(
        default=None,
        description="Set when the run's model was edited after training: the band is the "
        "trained members', not the edited model's.",
    )


class EdgeStabilityOut(BaseModel):
    layer: int
    i: int
    j: int
    top: str | None = Field(description="The most common best symbolic form among members.")
    agree: int = Field(description="Members whose best form is `top`.")
    share: float
    best: list[str | None] = Field(description="Each member's best form (null: none valid).")
    r2: list[MaybeFloat]


class StabilityOut(BaseModel):
    run_id: int
    members: int
    rows_used: int = Field(description="Training rows the members' edges were fitted on.")
    edges: list[EdgeStabilityOut]


class EdgeDetailOut(RowsUsedOut):
    run_id: int
    layer: int
    i: int
    j: int
    input_name: str | None = Field(description="Column name when the edge starts at an input.")
    input_scale: list[MaybeFloat] | None = Field(
        default=None,
        description="[mean, std] of that input column: x in its own units is mean + std·x.",
    )
    x: list[MaybeFloat]
    y: list[MaybeFloat]
    data_x: list[MaybeFloat] = Field(description="Actual pre-activations seen on the data.")
    data_y: list[MaybeFloat]
    score: MaybeFloat
    symbolic: str | None
    affine: list[MaybeFloat] | None = Field(
        default=None, description="(a, b, c, d) of c*f(a*x+b)+d when the edge is symbolic."
    )
    band: EdgeBandOut | None = Field(
        default=None,
        description="Ensemble runs: the spread of this edge's φ across the trained members.",
    )


class PredictionsOut(BaseModel):
    run_id: int
    split: Literal["validation", "train"]
    output_names: list[str]
    rows: list[int] = Field(description="Dataset row indices.")
    y_true: list[list[MaybeFloat]] | list[str | None] = Field(
        description="Regression: [n][n_out] in original units. Classification: labels."
    )
    y_pred: list[list[MaybeFloat]] | list[str | None]
    metric_name: Literal["r2", "accuracy"]
    metric: MaybeFloat
    level: float | None = Field(
        default=None, description="Ensemble runs: the interval's nominal level (e.g. 0.9)."
    )
    y_mean: list[list[MaybeFloat]] | None = Field(
        default=None, description="Ensemble runs: the members' mean, [n][n_out]."
    )
    lower: list[list[MaybeFloat]] | None = Field(
        default=None, description="Ensemble runs: the calibrated interval's lower end."
    )
    upper: list[list[MaybeFloat]] | None = None
    interval_current: bool | None = Field(
        default=None,
        description="Ensemble runs: whether the interval describes the run's current model; "
        "false once the model was edited (symbolic fixes, pruning): the members are the "
        "trained ones, so the interval and y_mean describe the model before the edits.",
    )
    interval_note: str | None = Field(
        default=None, description="Why the interval is not the current model's (edited runs)."
    )


# ── symbolic ────────────────────────────────────────────────────────────────────────────────


class SuggestionOut(BaseModel):
    name: str
    r2: MaybeFloat
    complexity: int | None = None
    params: list[MaybeFloat] | None = Field(default=None, description="(a, b, c, d).")


class SuggestionsOut(RowsUsedOut):
    run_id: int
    layer: int
    i: int
    j: int
    suggestions: list[SuggestionOut]


class FixEdgeIn(BaseModel):
    model_config = STRICT_INPUT

    name: PlainText = Field(
        description="Function name from the library, e.g. 'sin', 'x^2'.", max_length=32
    )


class AutoSymbolicIn(BaseModel):
    model_config = STRICT_INPUT

    r2_threshold: float = Field(default=0.9, ge=0.0, le=1.0, allow_inf_nan=False)
    library: list[Annotated[str, Field(max_length=32), AfterValidator(_printable)]] | None = Field(
        default=None, max_length=64, description="Function names to try; null = all."
    )
    complexity_weight: float = Field(
        default=0.3,
        ge=0.0,
        le=10.0,
        allow_inf_nan=False,
        description="How much simpler functions are preferred over a higher R².",
    )


class PruneIn(BaseModel):
    model_config = STRICT_INPUT

    threshold: float = Field(default=1e-2, ge=0.0, le=1e6, allow_inf_nan=False)


class RetrainIn(BaseModel):
    model_config = STRICT_INPUT

    steps: int | None = Field(default=None, ge=1, le=100_000)
    lr: float | None = Field(default=None, gt=0, le=10.0, allow_inf_nan=False)
    lamb: float | None = Field(default=None, ge=0, le=1e3, allow_inf_nan=False)
    name: Name | None = None


class EdgeStateOut(BaseModel):
    run_id: int
    layer: int
    i: int
    j: int
    symbolic: str | None
    r2: MaybeFloat = None


class AutoSymbolicOut(BaseModel):
    run_id: int
    fixed: list[EdgeStateOut] = Field(description="Edges fixed by this call.")
    n_fixed: int
    n_numeric: int = Field(description="Live edges left numeric (best R² below threshold).")
    n_already_symbolic: int = Field(
        default=0, description="Live edges that were symbolic before this call (unchanged)."
    )
    n_inactive: int = Field(
        default=0, description="Pruned edges and edges into nodes that reach no output."
    )
    n_out_of_time: int = Field(
        default=0,
        description="Live numeric edges not tried because KANSCOPE_AUTO_SYMBOLIC_TIMEOUT_S ran "
        "out (left as splines; calling again continues with them).",
    )
    n_edges: int
    note: str | None = Field(default=None, description="Set when time ran out: what was left.")


class PruneOut(BaseModel):
    run_id: int
    pruned: int
    kept_inputs: list[str]


class FormulaOutput(BaseModel):
    name: str
    text: str = Field(description="sympy str() of the expression in original units.")
    latex: str
    r2: MaybeFloat = Field(
        description="R² of the formula on the training data (its constants are refitted there); "
        "for classification, against the network's class scores. Null for a partial formula."
    )
    val_r2: MaybeFloat = Field(
        default=None,
        description="R² of the formula on the run's validation rows, which it was not fitted "
        "on (for classification, against the network's class scores there). Null for a "
        "partial formula, a run without validation rows, or where it cannot be evaluated.",
    )
    rmse: MaybeFloat = None
    network_r2: MaybeFloat = None
    partial: bool = Field(
        default=False,
        description="Edges that are still splines appear as placeholders φ_{layer,i,j}(…): the "
        "formula is shown but has no R² of its own and cannot be exported.",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="Numeric edges left, and simplification steps skipped to keep the time "
        "bounded (e.g. 'simplification skipped: expression too large (N nodes)').",
    )


class NumericEdgeOut(BaseModel):
    layer: int
    i: int
    j: int


class FormulaOut(BaseModel):
    run_id: int
    outputs: list[FormulaOutput]
    network_r2: MaybeFloat = Field(description="R² of the network itself on the same data.")
    n_symbolic_edges: int
    n_edges: int
    complete: bool = Field(description="True when every active edge is symbolic.")
    numeric_edges: list[NumericEdgeOut] = Field(
        default_factory=list,
        description="Edges that reach an output and are still splines (placeholders φ).",
    )
    note: str | None = Field(
        default=None,
        description="Which edges are still splines and what to do, while there are any.",
    )


# ── formula discovery ───────────────────────────────────────────────────────────────────────


class DiscoverIn(BaseModel):
    """Options of a formula discovery started for a trained run (its dataset, target,
    features and validation split are used)."""

    model_config = STRICT_INPUT

    budget_s: float = Field(
        default=BUDGET_DEFAULT_S,
        ge=BUDGET_MIN_S,
        le=BUDGET_MAX_S,
        allow_inf_nan=False,
        description="Time budget of the search in seconds.",
    )
    noise: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Relative noise level of the target if known (noise std / RMS); null: "
        "judged from the data.",
    )
    name: Name | None = None


class DiscoveredFormulaOut(BaseModel):
    formula: str = Field(description="sympy str() of the formula in the dataset's units.")
    latex: str
    complexity: int = Field(description="Nodes in the expression tree.")
    r2: MaybeFloat = Field(
        description="R² on the rows the search held back to choose among its candidates (a "
        "quarter of the run's training rows)."
    )
    rmse: MaybeFloat = None
    source: str = Field(description="The generator that proposed it, e.g. 'terms: y'.")
    val_r2: MaybeFloat = Field(
        default=None, description="R² on the run's validation rows (never seen by the search)."
    )
    val_rmse: MaybeFloat = None
    chosen: bool = False


class DiscoveryAttemptOut(BaseModel):
    stage: str
    detail: str
    seconds: MaybeFloat
    candidates: int
    best_r2: MaybeFloat = None


class DiscoveryResultOut(BaseModel):
    formula: DiscoveredFormulaOut = Field(description="The chosen formula.")
    front: list[DiscoveredFormulaOut] = Field(
        description="Pareto front: simplest first, each more accurate than the simpler ones."
    )
    symbols: dict[str, str] = Field(description="Symbol in the formula → column name.")
    network_width: list[int] | None = Field(
        default=None, description="Width of the best KAN of the search's structure stage."
    )
    network_r2: MaybeFloat = Field(
        default=None, description="That KAN's R² on the search's own held-back rows."
    )
    tried: list[DiscoveryAttemptOut]
    notes: list[str]
    seconds: MaybeFloat
    budget_s: MaybeFloat = None
    noise: MaybeFloat = None
    noise_estimate: MaybeFloat = None
    n_train: int = Field(description="Rows the candidates were fitted on.")
    n_validation: int = Field(description="Rows the search chose on (from the training rows).")
    n_rows_train: int | None = Field(default=None, description="The run's training rows.")
    n_rows_validation: int | None = Field(default=None, description="The run's held-out rows.")


class ComparedRunOut(BaseModel):
    run_id: int
    model: str
    name: str | None
    r2: MaybeFloat = Field(description="The run's R² on the same validation rows.")
    roles: list[str] = Field(description="'parent', 'best kan', 'best mlp'.")


class DiscoveryProgressOut(BaseModel):
    fraction: float = Field(ge=0, le=1, description="Share of the search done (0–1).")
    elapsed_s: MaybeFloat = Field(description="Seconds since the run started (database clock).")


class DiscoveryOut(BaseModel):
    """A formula discovery run: poll it while it runs, read the result when it has one."""

    run_id: int
    parent_run_id: int | None
    dataset_id: int
    status: RunStatus
    error: str | None
    target: str | None
    features: list[str]
    budget_s: MaybeFloat
    progress: DiscoveryProgressOut
    val_r2: MaybeFloat = Field(description="The chosen formula's R² on the validation rows.")
    result: DiscoveryResultOut | None = Field(
        description="Null until the search has finished (a cancelled search keeps its best "
        "formula so far)."
    )
    comparison: list[ComparedRunOut] = Field(
        description="Networks on the same dataset and target scored on exactly the same "
        "validation rows: the parent run, the best KAN, the best MLP."
    )


class LimitsOut(BaseModel):
    """Server-side limits a client should agree with (time-outs, bounds)."""

    formula_timeout_s: float = Field(
        description="Time limit of GET /runs/{id}/formula's simplification (KANSCOPE_FORMULA_"
        "TIMEOUT_S); a client waits at least this long for it."
    )
    auto_symbolic_timeout_s: float = Field(
        description="Time budget of POST /runs/{id}/auto-symbolic (KANSCOPE_AUTO_SYMBOLIC_"
        "TIMEOUT_S); a client waits at least this long for it."
    )
    discovery_budget_s: dict[str, float] = Field(
        description="Formula discovery's time budget: min, max and default seconds."
    )
    max_upload_bytes: int
    max_parameters: int
