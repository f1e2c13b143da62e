"""The torch trainer of the ``kan`` and ``mlp`` model kinds: a kan_core KAN / MLP built from the
run's settings (or its parent's model, for a retrain), trained by ``kan_core.train.fit``."""

from __future__ import annotations

import math
from typing import Any

import torch

from app.services.ensembles import (
    check_kan_options,
    ensemble_options,
    retrain_notes,
    train_kan_ensemble,
)
from app.services.errors import InvalidInputError
from app.services.model_contract import ModelSpec, TrainingJob, TrainOutcome
from kan_core.io import model_from_bytes, model_to_bytes
from kan_core.model import KAN, MLP
from kan_core.selectable import fit_selectable, is_selectable, needs_selection, node_families
from kan_core.train import FitCheckpoint, FitConfig, FitResult, TrainData, fit


def model_width(config: dict[str, Any], n_in: int, n_out: int) -> list[int]:
    return [n_in, *[int(h) for h in config.get("hidden", [])], n_out]


def estimate_kan_parameters(config: dict[str, Any], n_in: int, n_out: int) -> int:
    width = model_width(config, n_in, n_out)
    edges = sum(a * b for a, b in zip(width[:-1], width[1:], strict=False))
    # spline coefficients (grid + k) + base weight + spline scale + symbolic affine (4) + masks
    per_edge = int(config.get("grid", 5)) + int(config.get("k", 3)) + 8
    return edges * per_edge + sum(width[1:])


def estimate_mlp_parameters(config: dict[str, Any], n_in: int, n_out: int) -> int:
    width = model_width(config, n_in, n_out)
    return sum(a * b + b for a, b in zip(width[:-1], width[1:], strict=False))


def fit_config_from(config: dict[str, Any]) -> FitConfig:
    return FitConfig(
        steps=int(config.get("steps", 200)),
        optimizer=config.get("optimizer", "adam"),
        lr=float(config.get("lr", 1e-2)),
        batch_size=config.get("batch_size"),
        task=config.get("task", "regression"),
        lamb=float(config.get("lamb", 0.0)),
        lamb_l1=float(config.get("lamb_l1", 1.0)),
        lamb_entropy=float(config.get("lamb_entropy", 2.0)),
        update_grid_every=int(config.get("update_grid_every", 0)),
        update_grid_until=config.get("update_grid_until"),
        grid_eps=float(config.get("grid_eps", 1.0)),
        early_stopping_patience=config.get("early_stopping_patience"),
        seed=int(config.get("seed", 0)),
        log_every=int(config.get("log_every", 1)),
    )


def build_torch_model(job: TrainingJob) -> KAN | MLP:
    cfg, data = job.config, job.data
    if job.init_weights is not None:
        model, _ = model_from_bytes(job.init_weights, device=job.device)
        if list(model.width) != [len(data.feature_names), *model.width[1:-1], data.n_outputs]:
            raise InvalidInputError("The parent model's inputs/outputs do not match this data.")
        model.train()
        return model
    width = model_width(cfg, len(data.feature_names), data.n_outputs)
    if cfg.get("model", "kan") == "kan":
        return KAN(
            width,
            grid=int(cfg.get("grid", 5)),
            k=int(cfg.get("k", 3)),
            basis=cfg.get("basis", "bspline"),
            seed=int(cfg.get("seed", 0)),
            device=job.device,
        )
    return MLP(
        width,
        activation=cfg.get("activation", "silu"),
        seed=int(cfg.get("seed", 0)),
        device=job.device,
    )


def train_ensemble(job: TrainingJob) -> TrainOutcome:
    """A KAN run with ``model_options.ensemble_members``: its members side by side
    (``app.services.ensembles``); member 0 is the run's model. Checkpoints hold every member."""
    cfg, data = job.config, job.data
    build = {
        "grid": int(cfg.get("grid", 5)),
        "k": int(cfg.get("k", 3)),
        "basis": cfg.get("basis", "bspline"),
        "device": job.device,
    }
    width = model_width(cfg, len(data.feature_names), data.n_outputs)
    fit_cfg = fit_config_from(cfg)
    if job.checkpoint_every is not None:
        fit_cfg.checkpoint_every = job.checkpoint_every
    return train_kan_ensemble(job, width, fit_cfg, build)


def train_torch(job: TrainingJob) -> TrainOutcome:
    if job.init_weights is None and ensemble_options(job.config) is not None:
        return train_ensemble(job)
    data = job.data
    # a resumed run builds its model as the first attempt did (a retrain from its parent's
    # model, so symbolic edges are set), then fit loads the checkpoint's state into it
    model = build_torch_model(job)
    cfg = fit_config_from(job.config)
    if job.checkpoint_every is not None:
        cfg.checkpoint_every = job.checkpoint_every
    train_data = TrainData(data.x_train, data.y_train, data.x_val, data.y_val)
    if isinstance(model, KAN) and needs_selection(model):
        # S-KAN: warm-up on every family, one family per node, fine-tuning; no checkpoints
        result = fit_selectable(model, train_data, cfg, callback=job.report)
    else:
        result = fit(
            model,
            train_data,
            cfg,
            callback=job.report,
            resume=job.resume if isinstance(job.resume, FitCheckpoint) else None,
            on_checkpoint=job.on_checkpoint,
        )
    model.eval()
    preds = None
    if data.x_val is not None:
        with torch.no_grad():
            out = model(data.x_val.to(next(model.parameters()).device)).cpu()
        preds = out.argmax(-1).numpy() if data.task == "classification" else out.numpy()
    meta = data.metadata() | {"run_id": job.run_id}
    return TrainOutcome(
        stopped_reason=result.stopped_reason,
        train_loss=result.train_loss,
        val_loss=result.val_loss,
        val_metric=result.val_metric,
        n_parameters=int(model.num_parameters()),
        weights=model_to_bytes(model.cpu(), meta),
        val_predictions=preds,
        # engine: the kan_core.engine.Engine that ran ("fused-cpu", "native", "numba", "torch")
        extra={
            "best_step": result.best_step,
            "width": list(model.width),
            "engine": result.engine,
            **final_scores(result),
            **selected_families(model),
            # a retrain of an ensemble run continued its model alone: says it has no interval
            **({"notes": notes} if (notes := retrain_notes(job.config)) else {}),
        },
    )


def final_scores(result: FitResult) -> dict[str, Any]:
    """The last logged step's scores (``final_*``): with early stopping the kept model is the
    best step's, so the summary's train_loss / val_loss / val_metric are that step's and these
    say where training ended."""
    if not result.history:
        return {}
    last = result.history[-1]

    def finite(value: float | None) -> float | None:
        return float(value) if value is not None and math.isfinite(value) else None

    return {
        "final_step": last.step,
        "final_train_loss": finite(last.train_loss),
        "final_val_loss": finite(last.val_loss),
        "final_val_metric": finite(last.val_metric),
    }


def selected_families(model: torch.nn.Module) -> dict[str, Any]:
    """An S-KAN's chosen activation family per node (``node_families[layer][node]``, the
    layer's input nodes); nothing for other models."""
    if isinstance(model, KAN) and is_selectable(model):
        return {"node_families": node_families(model)}
    return {}


def check_no_model_options(config: dict[str, Any]) -> dict[str, Any]:
    """``ModelSpec.check_config`` of the networks: their settings are the run's own fields, so
    ``model_options`` must be empty (an option given there would be ignored silently)."""
    options = config.get("model_options") or {}
    if options:
        raise InvalidInputError(
            f"Model {config.get('model', 'kan')!r} takes no model_options (got "
            f"{sorted(options)}); set its options as the run's own fields (hidden, grid, k, "
            "basis, activation, lr …)."
        )
    return config


KAN_SPEC = ModelSpec(
    "kan",
    "Kolmogorov–Arnold Network (learnable edge functions)",
    ("regression", "classification"),
    train_torch,
    inspectable=True,
    estimate_parameters=estimate_kan_parameters,
    check_config=check_kan_options,
    early_stopping=True,
)
MLP_SPEC = ModelSpec(
    "mlp",
    "Multi-layer perceptron baseline (same training loop)",
    ("regression", "classification"),
    train_torch,
    estimate_parameters=estimate_mlp_parameters,
    check_config=check_no_model_options,
    early_stopping=True,
)
