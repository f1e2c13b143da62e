"""The ``rbf_subspace`` model kind: a Gaussian RBF network on a learned active subspace
(``kan_core.rbf_subspace``), trained by ``kan_core.train.fit`` like the KAN / MLP.

Its shape is in ``model_options`` (``subspace_dim``, ``centres``); training settings are the
run's own fields (steps, lr, optimizer, batch size, early stopping, seed). A leaderboard entry
passes only ``model_options``, so ``steps`` and ``lr`` may also be given there (they win);
otherwise a leaderboard fold trains as the leaderboard's networks do (2000 steps, patience 100).
The run summary carries the feature ranking from the projection (``feature_ranking``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from app.services.errors import InvalidInputError
from app.services.model_contract import ModelSpec, TrainingJob, TrainOutcome
from app.services.torch_trainer import final_scores, fit_config_from
from kan_core.io import model_to_bytes
from kan_core.rbf_subspace import RBFSubspaceNet, feature_ranking
from kan_core.train import TrainData, fit

#: option: (default, low, high, kind)
OPTIONS: dict[str, tuple[float, float, float, type]] = {
    "subspace_dim": (2, 1, 16, int),
    "centres": (16, 2, 256, int),
    "steps": (2000, 1, 100_000, int),
    "lr": (1e-2, 1e-6, 10.0, float),
}


def check_rbf_options(config: dict[str, Any]) -> dict[str, Any]:
    """``ModelSpec.check_config``: every option known, of its type and within its bounds."""
    options = config.get("model_options") or {}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(
            f"Unknown model_options {unknown} for rbf_subspace; allowed: {sorted(OPTIONS)}."
        )
    for name, value in options.items():
        _, low, high, kind = OPTIONS[name]
        ok_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            raise InvalidInputError(
                f"model_options.{name} must be {'an integer' if kind is int else 'a number'} "
                f"in {low:g}..{high:g}, got {value!r}."
            )
        if not low <= value <= high:
            raise InvalidInputError(f"model_options.{name} must lie in {low:g}..{high:g}.")
    return config


def _option(config: dict[str, Any], name: str) -> Any:
    default, *_, kind = OPTIONS[name]
    options = config.get("model_options") or {}
    if name in options:
        return kind(options[name])
    if name in ("steps", "lr") and name in config:
        return kind(config[name])
    return kind(default)


def estimate_rbf_parameters(config: dict[str, Any], n_in: int, n_out: int) -> int:
    k, m = _option(config, "subspace_dim"), _option(config, "centres")
    return k * n_in + m * k + n_out * m + n_out


def train_rbf_subspace(job: TrainingJob) -> TrainOutcome:
    data, config = job.data, job.config
    model = RBFSubspaceNet(
        len(data.feature_names),
        data.n_outputs,
        subspace_dim=_option(config, "subspace_dim"),
        centres=_option(config, "centres"),
        seed=int(config.get("seed", 0)),
        device=job.device,
    )
    fit_settings = {k: v for k, v in config.items() if k not in ("steps", "lr")}
    cfg = fit_config_from(fit_settings | {"steps": _option(config, "steps")})
    cfg.lr = _option(config, "lr")
    if "early_stopping_patience" not in config and data.x_val is not None:
        cfg.early_stopping_patience = 100  # a leaderboard fold: as its networks
    result = fit(
        model,
        TrainData(data.x_train, data.y_train, data.x_val, data.y_val),
        cfg,
        callback=job.report,
    )
    model.eval()
    preds = None
    if data.x_val is not None:
        with torch.no_grad():
            out = model(data.x_val.to(job.device)).cpu()
        preds = out.argmax(-1).numpy() if data.task == "classification" else out.numpy()
    ranking = feature_ranking(model)
    return TrainOutcome(
        stopped_reason=result.stopped_reason,
        train_loss=result.train_loss,
        val_loss=result.val_loss,
        val_metric=result.val_metric,
        n_parameters=int(model.num_parameters()),
        weights=model_to_bytes(model.cpu(), data.metadata() | {"run_id": job.run_id}),
        val_predictions=preds,
        extra={
            "best_step": result.best_step,
            "width": list(model.width),
            "engine": result.engine,
            **final_scores(result),
            "feature_ranking": {
                "features": list(data.feature_names),
                "scores": ranking.scores,
                "eigenvalues": ranking.eigenvalues,
                "method": ranking.method,
            },
        },
    )


RBF_SUBSPACE_SPEC = ModelSpec(
    "rbf_subspace",
    "Gaussian RBF network on a learned active subspace (feature ranking from the projection)",
    ("regression", "classification"),
    train_rbf_subspace,
    estimate_parameters=estimate_rbf_parameters,
    check_config=check_rbf_options,
    early_stopping=True,
)
