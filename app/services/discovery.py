"""Formula discovery as a run kind: ``kan_core.discover`` in a trainer, so it gets the executor,
claims, heartbeats, cancellation and storage of every run (what the API reads back is in
:mod:`app.services.discovery_views`).

A discovery run is a run with ``model = "discover"`` (regression, one target). Its options are
``model_options``: ``budget_s`` (seconds, :data:`BUDGET_MIN_S`–:data:`BUDGET_MAX_S`, default
:data:`BUDGET_DEFAULT_S`) and ``noise`` (the relative noise level if known, else null). The
run's ``seed``, ``val_fraction`` / ``val_rows`` split the rows as for any run, so a discovery
started from a trained run (:func:`discovery_payload`, ``parent_run_id``) holds out the same
validation rows as that run: ``discover`` sees the training rows only (it chooses among its
candidates on a quarter of them) and every formula is then scored on the held-out rows, which
makes its R² comparable with the network's.

Progress: each stage ``discover`` reports becomes a metric row whose step is the fraction done
in thousandths (:data:`PROGRESS_STEPS`); the reporter's answer (cancel requested, claim lost)
stops the search, which returns the best formula so far (a cancelled run keeps it). The result
is stored in the run's ``summary["discovery"]`` (``DiscoveryResult.to_dict()`` plus the held-out
scores), the chosen formula's held-out R² as the run's ``val_metric``, its held-out predictions
like any run's.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from app.services.errors import InvalidInputError
from app.services.formula_scores import formula_scores, formula_values
from app.services.model_contract import ModelSpec, TrainingJob, TrainOutcome
from app.services.numbers import finite_or_none
from kan_core.train import FitProgress

MODEL = "discover"
BUDGET_MIN_S, BUDGET_MAX_S, BUDGET_DEFAULT_S = 5.0, 600.0, 60.0
#: metric steps of a discovery run: the fraction done in thousandths
PROGRESS_STEPS = 1000

# ── options ─────────────────────────────────────────────────────────────────────────────────


def discovery_options(options: Any) -> dict[str, Any]:
    """``{"budget_s": float, "noise": float | None}`` from a run's ``model_options``, checked."""
    options = dict(options or {})
    unknown = sorted(set(options) - {"budget_s", "noise"})
    if unknown:
        raise InvalidInputError(
            f"Unknown option(s) {unknown} for formula discovery; allowed: budget_s "
            f"({BUDGET_MIN_S:g}–{BUDGET_MAX_S:g} s) and noise (0 ≤ noise < 1, or null)."
        )
    budget = options.get("budget_s", BUDGET_DEFAULT_S)
    if not _is_number(budget) or not BUDGET_MIN_S <= budget <= BUDGET_MAX_S:
        raise InvalidInputError(
            f"budget_s must be a number of seconds from {BUDGET_MIN_S:g} to {BUDGET_MAX_S:g}; "
            f"got {budget!r}."
        )
    noise = options.get("noise")
    if noise is not None and (not _is_number(noise) or not 0 <= noise < 1):
        raise InvalidInputError(
            "noise is the relative noise level of the target (noise std / RMS of the target), "
            f"0 ≤ noise < 1, or null when unknown; got {noise!r}."
        )
    return {"budget_s": float(budget), "noise": None if noise is None else float(noise)}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """``ModelSpec.check_config``: one target and valid options, checked when the run is created.
    The config is returned as given (an Idempotency-Key retry compares it as sent)."""
    targets = list(config.get("target_columns") or [])
    if len(targets) != 1:
        raise InvalidInputError(
            f"Formula discovery fits one target column; got {len(targets)}. Start one "
            "discovery per target."
        )
    discovery_options(config.get("model_options"))
    return config


# ── the trainer ─────────────────────────────────────────────────────────────────────────────


def overrun_limit_s(budget_s: float) -> float:
    """When the trainer stops a search that overruns its budget (at its next progress report;
    ``discover`` itself keeps to the budget, this is the server's guard)."""
    return budget_s * 1.25 + 10.0


class _Progress:
    """``discover``'s progress callback: one metric row per report (step = thousandths done,
    strictly increasing); False (stop, best formula so far) once the run is cancelled or lost
    (``cancelled``) or the search has overrun its budget (``overran``)."""

    def __init__(self, job: TrainingJob, budget_s: float) -> None:
        self.report, self.step = job.report, 0
        self.cancelled = self.overran = False
        self.limit_s = overrun_limit_s(budget_s)
        self.start = time.perf_counter()

    def __call__(self, stage: str, fraction: float) -> bool:
        done = round(min(max(float(fraction), 0.0), 1.0) * PROGRESS_STEPS)
        self.step = max(self.step + 1, done)
        elapsed = time.perf_counter() - self.start
        keep_going = self.report(
            FitProgress(self.step, PROGRESS_STEPS, math.nan, None, None, elapsed)
        )
        if keep_going is False:
            self.cancelled = True
        elif elapsed > self.limit_s:
            self.overran = True
        # at "done" the search is over; stopping there would lose the result it is returning
        return fraction >= 1.0 or not (self.cancelled or self.overran)


def _original_units(x: torch.Tensor, scaler: Any) -> np.ndarray:
    """Standardised float32 values back in the dataset's units, as float64."""
    return (
        x.to(torch.float64) * scaler.std.to(torch.float64) + scaler.mean.to(torch.float64)
    ).numpy()


def _n_constants(expr: Any) -> int:
    """Numbers in the formula other than small integers (exponents, signs): its 'parameters'."""
    import sympy

    numbers = expr.atoms(sympy.Number)
    return sum(1 for a in numbers if not (a.is_Integer and abs(int(a)) <= 4))


def train_discovery(job: TrainingJob) -> TrainOutcome:
    """The ``discover`` run kind: search on the training rows, score on the held-out rows."""
    from kan_core.discover import discover

    data = job.data
    if data.task != "regression" or data.y_scaler is None or len(data.target_names) != 1:
        raise InvalidInputError("Formula discovery fits one numeric (regression) target.")
    options = discovery_options(job.config.get("model_options"))
    seed = int(job.config.get("seed", 0))
    x_tr = _original_units(data.x_train, data.x_scaler)
    y_tr = _original_units(data.y_train, data.y_scaler)[:, 0]
    x_val, y_val = np.zeros((0, x_tr.shape[1])), np.zeros(0)
    if data.x_val is not None and data.y_val is not None and len(data.val_rows) > 0:
        x_val = _original_units(data.x_val, data.x_scaler)
        y_val = _original_units(data.y_val, data.y_scaler)[:, 0]
    has_val = len(y_val) > 0

    progress = _Progress(job, options["budget_s"])
    result = discover(
        x_tr,
        y_tr,
        data.feature_names,
        budget_s=options["budget_s"],
        noise=options["noise"],
        seed=seed,
        progress=progress,
    )
    symbols = result.inputs.symbols
    found = result.to_dict()
    if progress.overran and not progress.cancelled:
        found["notes"].append(
            f"The search overran its {options['budget_s']:g} s budget and was stopped by the "
            f"server after {progress.limit_s:g} s; the best formula so far is reported."
        )
    for entry, formula in zip(found["front"], result.front, strict=True):
        held_out = formula_scores(formula_values(formula.expr, symbols, x_val), y_val)
        entry |= {"val_r2": held_out["r2"], "val_rmse": held_out["rmse"]}
        entry["chosen"] = formula.expr == result.formula.expr
    pred_tr = formula_values(result.expr, symbols, x_tr)
    pred_val = formula_values(result.expr, symbols, x_val) if has_val else None
    held_out = formula_scores(pred_val, y_val)
    found["formula"] |= {"val_r2": held_out["r2"], "val_rmse": held_out["rmse"]}
    found |= {
        "budget_s": options["budget_s"],
        "noise": options["noise"],
        "seed": seed,
        "target": data.target_names[0],
        "n_rows_train": int(len(data.train_rows)),
        "n_rows_validation": int(len(data.val_rows)) if has_val else 0,
    }
    y_std = float(data.y_scaler.std[0])
    train_loss = _standardised_mse(pred_tr, y_tr, y_std)
    val_loss = _standardised_mse(pred_val, y_val, y_std) if has_val else None
    val_predictions = None
    if pred_val is not None:
        val_predictions = ((pred_val - float(data.y_scaler.mean[0])) / y_std).reshape(-1, 1)
    return TrainOutcome(
        stopped_reason="cancelled" if progress.cancelled else "completed",
        train_loss=train_loss,
        val_loss=val_loss,
        val_metric=held_out["r2"],
        n_parameters=_n_constants(result.expr),
        weights=None,  # the formula is the model: kept as text/LaTeX in the summary
        val_predictions=val_predictions,
        extra={"discovery": found, "formula": found["formula"]["formula"]},
    )


def _standardised_mse(pred: np.ndarray | None, y: np.ndarray, y_std: float) -> float | None:
    """MSE in standardised target units, as the other run kinds report their losses."""
    if pred is None or len(y) == 0:
        return None
    return finite_or_none(float(np.mean(((pred - y) / y_std) ** 2)))


DISCOVERY_SPEC = ModelSpec(
    MODEL,
    "Formula discovery: the simplest formula for the target within a time budget "
    f"(model_options: budget_s {BUDGET_MIN_S:g}–{BUDGET_MAX_S:g} s, default "
    f"{BUDGET_DEFAULT_S:g}; noise)",
    ("regression",),
    train_discovery,
    check_config=check_config,
)
