"""KAN runs trained as ensembles (issue #25): the ``model_options`` that ask for one, their
checks, and the training (``kan_core.ensemble.fit_ensemble``), calibration and coverage report.

A KAN run with ``model_options.ensemble_members`` = N (2..32) trains N members side by side
(seeds ``seed``…``seed + N − 1``; ``ensemble_bootstrap`` "none" | "rows" | "groups", the last
with ``group_column``; ``ensemble_level`` the interval's nominal level, default 0.9). The run's
model — what edges, symbolic fitting, formulas and exports use — is member 0 (seed ``seed``,
hidden nodes of the other members aligned to its). The ensemble is stored beside it
(``model_artifacts.ensemble``: ``kan_core.ensemble.ensemble_to_bytes``, safetensors + JSON).
Its interval is calibrated on the validation rows when there are any (residual noise +
split-conformal scale); the coverage reported is measured honestly by cross-fitting: calibrated
on one half of the validation rows, counted on the other, and the other way round.

Edits and retrains: a symbolic fix or a prune changes the run's model (member 0's copy), never
the members, so after one the interval describes the model as trained, not the edited one; the
views say so (``ensemble_views``). A retrain of an ensemble run trains the edited model alone:
the child run is a single KAN (the ensemble options dropped from its config, ``from_ensemble``
naming the parent and its member count) and its summary's notes say that it has no interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from app.services.errors import InvalidInputError
from app.services.model_contract import Reporter, TrainingJob, TrainOutcome
from kan_core.ensemble import (
    EnsembleConfig,
    KANEnsemble,
    ensemble_to_bytes,
    fit_ensemble,
    interval_coverage,
    members_per_fit,
)
from kan_core.io import model_to_bytes
from kan_core.metrics import r2_score
from kan_core.train import EnsembleCheckpoint, FitConfig, FitProgress, TrainData

MEMBERS = (2, 32)
LEVELS = (0.5, 0.99)
BOOTSTRAPS = ("none", "rows", "groups")
DEFAULT_LEVEL = 0.9
OPTION_KEYS = ("ensemble_members", "ensemble_bootstrap", "ensemble_level", "group_column")


@dataclass(frozen=True)
class EnsembleOptions:
    members: int
    bootstrap: str
    level: float
    group_column: str | None


def ensemble_options(config: dict[str, Any]) -> EnsembleOptions | None:
    """The run's ensemble settings (already checked by :func:`check_kan_options`), or None."""
    options = config.get("model_options") or {}
    if options.get("ensemble_members") is None:
        return None
    return EnsembleOptions(
        int(options["ensemble_members"]),
        str(options.get("ensemble_bootstrap") or "none"),
        float(options.get("ensemble_level") or DEFAULT_LEVEL),
        options.get("group_column"),
    )


def check_kan_options(config: dict[str, Any]) -> dict[str, Any]:
    """``ModelSpec.check_config`` of ``kan``: ``model_options`` may hold only the ensemble's
    keys (the KAN's own settings are the run's fields). 422 naming the key and the fix."""
    options = dict(config.get("model_options") or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise InvalidInputError(
            f"Model 'kan' takes only the ensemble's model_options {list(OPTION_KEYS)} (got "
            f"{unknown}); set its other options as the run's own fields (hidden, grid, k, basis, "
            "lr …)."
        )
    if not options:
        return config
    members = options.get("ensemble_members")
    if members is None:
        raise InvalidInputError(
            f"model_options {sorted(options)} describe an ensemble: set ensemble_members "
            f"({MEMBERS[0]}..{MEMBERS[1]}) too."
        )
    if isinstance(members, bool) or not isinstance(members, int):
        raise InvalidInputError(
            f"ensemble_members must be an integer {MEMBERS[0]}..{MEMBERS[1]}, got {members!r}."
        )
    if not MEMBERS[0] <= members <= MEMBERS[1]:
        raise InvalidInputError(
            f"ensemble_members must be {MEMBERS[0]}..{MEMBERS[1]}, got {members}: an interval "
            f"needs at least {MEMBERS[0]} members, and more than {MEMBERS[1]} cost time without "
            "changing it much."
        )
    bootstrap = options.get("ensemble_bootstrap", "none")
    if bootstrap not in BOOTSTRAPS:
        raise InvalidInputError(
            f"ensemble_bootstrap must be one of {list(BOOTSTRAPS)}, got {bootstrap!r}."
        )
    level = options.get("ensemble_level", DEFAULT_LEVEL)
    if (
        isinstance(level, bool)
        or not isinstance(level, (int, float))
        or not LEVELS[0] <= level <= LEVELS[1]
    ):
        raise InvalidInputError(
            f"ensemble_level (the interval's nominal level) must be a number in "
            f"{LEVELS[0]}..{LEVELS[1]}, e.g. 0.9, got {level!r}."
        )
    group = options.get("group_column")
    if bootstrap == "groups" and not group:
        raise InvalidInputError(
            "ensemble_bootstrap 'groups' resamples whole groups of rows: name the column that "
            "holds each row's group in model_options.group_column (e.g. the alloy's "
            "composition), or use bootstrap 'rows' or 'none'."
        )
    if group is not None and bootstrap != "groups":
        raise InvalidInputError(
            "model_options.group_column is used only with ensemble_bootstrap 'groups'; "
            "remove it or set ensemble_bootstrap to 'groups'."
        )
    if config.get("task", "regression") != "regression":
        raise InvalidInputError(
            "Ensembles (model_options.ensemble_members) are for regression runs only; remove "
            "the ensemble options or use task 'regression'."
        )
    return config


def retrain_config(payload: dict[str, Any], parent_id: int) -> dict[str, Any]:
    """A retrain's run config from its parent's: a retrain continues the parent's (edited)
    model alone, so an ensemble parent's options are dropped and ``from_ensemble`` records
    which ensemble the model came from (its member 0). Other parents: unchanged."""
    payload = {k: v for k, v in payload.items() if k != "from_ensemble"}
    opts = ensemble_options(payload)
    if opts is None:
        return payload
    options = payload.get("model_options") or {}
    kept = {k: v for k, v in options.items() if k not in OPTION_KEYS}
    return payload | {
        "model_options": kept,
        "from_ensemble": {"run_id": parent_id, "members": opts.members},
    }


def retrain_notes(config: dict[str, Any]) -> list[str]:
    """The summary's note of a retrain of an ensemble run (:func:`retrain_config`)."""
    origin = config.get("from_ensemble")
    if not isinstance(origin, dict):
        return []
    return [
        f"Retrained from run {origin.get('run_id')}'s model alone (member 0 of its ensemble of "
        f"{origin.get('members')} KANs, with its symbolic edits): the other members were not "
        "retrained, so this run has no ensemble and no prediction interval. Train a new "
        "ensemble run to get one."
    ]


def check_ensemble_run(
    columns: list[dict[str, Any]],
    config: dict[str, Any],
    width: list[int],
    n_rows: int,
    check_memory: Callable[[dict[str, Any], int, int, int], Any],
) -> None:
    """Checks that need the dataset: the group column exists and is not a target; the
    block-diagonal KANs trained side by side fit the memory budget (``check_memory`` =
    ``memory.check_run_memory``, given the widened config)."""
    opts = ensemble_options(config)
    if opts is None:
        return
    if opts.group_column is not None:
        names = [c["name"] for c in columns]
        if opts.group_column not in names:
            raise InvalidInputError(
                f"group_column {opts.group_column!r} is not in the dataset. Columns: {names}"
            )
        if opts.group_column in config["target_columns"]:
            raise InvalidInputError(
                f"group_column {opts.group_column!r} is a target; choose the column that names "
                "each row's group (e.g. the composition)."
            )
    per_fit = members_per_fit(width, _ensemble_config(opts, FitConfig(), 0), n_rows)
    wide = config | {"hidden": [h * per_fit for h in width[1:-1]]}
    check_memory(wide, width[0] * per_fit, width[-1] * per_fit, n_rows)


def _ensemble_config(opts: EnsembleOptions, fit_cfg: FitConfig, seed: int) -> EnsembleConfig:
    return EnsembleConfig(
        members=opts.members,
        bootstrap=opts.bootstrap,  # type: ignore[arg-type]  # checked: one of BOOTSTRAPS
        seed=seed,
        fit=fit_cfg,
    )


def _group_labels(job: TrainingJob, column: str) -> list[str]:
    """Each training row's group (as text; a missing value is a group of its own)."""
    labels = job.group_values
    if labels is None:
        raise InvalidInputError(f"The run's group column {column!r} could not be read.")
    return [str(labels[int(r)]) for r in job.data.train_rows]


class _BlockReporter:
    """Progress of the fits of consecutive blocks of members as one series of steps (a
    block's fit numbers its steps from 1 again); once told to stop it keeps saying so. A resumed
    ensemble starts after its checkpoint's step (``resume``)."""

    def __init__(
        self, report: Reporter, blocks: int, resume: EnsembleCheckpoint | None = None
    ) -> None:
        self.report, self.blocks = report, blocks
        self.offset = self.last = 0
        if resume is not None:
            self.offset, self.last = resume.steps_before_current, resume.current.step
        self.stopped = False

    def __call__(self, p: FitProgress) -> bool:
        if p.step <= self.last:  # the next block's fit started
            self.offset += self.last
        self.last = p.step
        if self.stopped:
            return False
        shifted = FitProgress(
            p.step + self.offset,
            p.total_steps * self.blocks,
            p.train_loss,
            p.val_loss,
            p.val_metric,
            p.elapsed_s,
        )
        self.stopped = not self.report(shifted)
        return not self.stopped


def train_kan_ensemble(
    job: TrainingJob, width: list[int], fit_cfg: FitConfig, build: dict[str, Any]
) -> TrainOutcome:
    """Train the run's ensemble; member 0 is the run's model. ``build``: the KAN's options
    (grid, k, basis, device)."""
    opts = ensemble_options(job.config)
    assert opts is not None
    data = job.data
    seed = int(job.config.get("seed", 0))
    ens_cfg = _ensemble_config(opts, fit_cfg, seed)
    groups = _group_labels(job, opts.group_column) if opts.group_column else None
    per_fit = members_per_fit(width, ens_cfg, int(data.x_train.shape[0]))
    # a requeued run resumes from its checkpoint (every member's state, finished blocks too)
    resume = job.resume if isinstance(job.resume, EnsembleCheckpoint) else None
    reporter = _BlockReporter(job.report, -(-opts.members // per_fit), resume)
    ensemble = fit_ensemble(
        width,
        TrainData(data.x_train, data.y_train, data.x_val, data.y_val),
        ens_cfg,
        groups=groups,
        model_options=build,
        callback=reporter,
        resume=resume,
        on_checkpoint=job.on_checkpoint,
    )
    ensemble.members = [m.cpu() for m in ensemble.members]
    main = ensemble.members[0]
    x_val, y_val = data.x_val, data.y_val
    with torch.no_grad():
        train_loss = float(torch.mean((main(data.x_train) - data.y_train) ** 2))
        val_pred = main(x_val) if x_val is not None else None
    val_loss = val_metric = None
    if val_pred is not None and y_val is not None:
        val_loss = float(torch.mean((val_pred - y_val) ** 2))
        val_metric = r2_score(y_val.numpy(), val_pred.numpy())
    ensemble, report = calibrate_and_report(ensemble, data, opts, per_fit, seed)
    meta = data.metadata() | {"run_id": job.run_id}
    stopped = "cancelled" if reporter.stopped else ensemble.results[-1].stopped_reason
    last = ensemble.results[-1]
    return TrainOutcome(
        stopped_reason=stopped,
        train_loss=train_loss,
        val_loss=val_loss,
        val_metric=None if val_metric is None or math.isnan(val_metric) else val_metric,
        n_parameters=int(main.num_parameters()),
        weights=model_to_bytes(main, meta),
        val_predictions=None if val_pred is None else val_pred.numpy(),
        extra={
            "best_step": last.best_step,
            "width": list(main.width),
            "engine": last.engine,
            "ensemble": report,
        },
        ensemble=ensemble_to_bytes(ensemble, meta | {"level": opts.level}),
    )


def calibrate_and_report(
    ensemble: KANEnsemble,
    data: Any,
    opts: EnsembleOptions,
    per_fit: int,
    seed: int,
) -> tuple[KANEnsemble, dict[str, Any]]:
    """The ensemble calibrated on the validation rows (unchanged without any) and the run
    summary's ``ensemble`` entry: settings, calibration, validation coverage and mean width
    (in the target's units)."""
    report: dict[str, Any] = {
        "members": opts.members,
        "bootstrap": opts.bootstrap,
        "group_column": opts.group_column,
        "level": opts.level,
        "seeds": [seed + m for m in range(opts.members)],
        "members_per_fit": per_fit,
        "main_model": f"member 0 (seed {seed})",
        "calibrated": False,
        "validation": None,
        "notes": [],
    }
    x, y = data.x_val, data.y_val
    n_val = 0 if x is None else int(x.shape[0])
    y_std = data.y_scaler.std.reshape(-1).double() if data.y_scaler is not None else None
    if n_val == 0 or y is None:
        report["notes"].append(
            "No validation rows: the interval is the members' spread alone, not calibrated, "
            "and usually too narrow. Give the run validation rows to calibrate it."
        )
        return ensemble, report
    raw_cov, _ = interval_coverage(ensemble.predict(x, opts.level), y)
    calibrated = ensemble.calibrate(x, y, level=opts.level)
    prediction = calibrated.predict(x, opts.level)
    width = (prediction.upper - prediction.lower).double().mean(0)
    validation: dict[str, Any] = {
        "n_rows": n_val,
        "coverage_members_only": raw_cov,
        "mean_width": _in_units(width, y_std),
        "coverage": None,
    }
    if n_val >= 4:
        halves = (torch.arange(0, n_val, 2), torch.arange(1, n_val, 2))
        inside = 0.0
        for fit_rows, count_rows in (halves, halves[::-1]):
            part = ensemble.calibrate(x[fit_rows], y[fit_rows], level=opts.level)
            cov, _ = interval_coverage(part.predict(x[count_rows], opts.level), y[count_rows])
            inside += cov * len(count_rows)
        validation["coverage"] = inside / n_val
    else:
        report["notes"].append(
            f"Only {n_val} validation rows: too few to measure the calibrated interval's "
            "coverage on rows it was not calibrated on."
        )
    noise = calibrated.noise_std
    report |= {
        "calibrated": True,
        "calibrated_on": "validation",
        "noise_std": None if noise is None else _in_units(noise.double(), y_std),
        "scale": calibrated.scale,
        "validation": validation,
    }
    return calibrated, report


def _in_units(values: torch.Tensor, y_std: torch.Tensor | None) -> list[float | None]:
    """Per output, standardised widths → the target's units."""
    scaled = values if y_std is None else values * y_std
    return [float(v) if np.isfinite(float(v)) else None for v in scaled.reshape(-1)]
