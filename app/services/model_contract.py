"""The model contract every trainer speaks: what it is given (:class:`TrainingJob` with its
:class:`PreparedData`) and what it returns (:class:`TrainOutcome`), and what a model kind is
(:class:`ModelSpec`). A leaf: it imports no other service, so trainers, the registry, the
cross-validated leaderboard and plugins all depend on it and it on none of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from kan_core.scaling import Standardizer
from kan_core.train import EnsembleCheckpoint, FitCheckpoint, FitProgress

Task = Literal["regression", "classification"]


@dataclass
class PreparedData:
    """Standardised inputs (and targets for regression), split into train / validation.

    ``x_*`` are float32 (n, n_features) in standardised units; ``y_*`` are float32
    (n, n_targets) standardised (regression) or int64 (n,) class indices (classification).
    ``*_rows`` are the dataset row indices. Scalers map back to the original units.
    """

    task: Task
    feature_names: list[str]
    target_names: list[str]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    train_rows: np.ndarray
    val_rows: np.ndarray
    x_scaler: Standardizer
    y_scaler: Standardizer | None
    classes: list[str] | None
    n_rows_dropped: int

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes is not None else len(self.target_names)

    def metadata(self) -> dict[str, Any]:
        """What travels with the model file (JSON): names, scalers, class labels."""
        return {
            "task": self.task,
            "feature_names": self.feature_names,
            "target_names": self.target_names,
            "classes": self.classes,
            "x_scaler": self.x_scaler.to_dict(),
            "y_scaler": self.y_scaler.to_dict() if self.y_scaler is not None else None,
        }


#: progress reporter handed to a trainer; returns False when training must stop
Reporter = Callable[[FitProgress], bool]


@dataclass
class TrainingJob:
    """What a trainer gets. ``resume``: the checkpoint to continue from (a requeued run; an
    ensemble run's is an ``EnsembleCheckpoint``); ``on_checkpoint``: where to hand checkpoints
    every ``checkpoint_every`` steps (None: don't). Trainers that cannot checkpoint (the
    scikit-learn baselines) ignore the three."""

    run_id: int
    config: dict[str, Any]
    data: PreparedData
    report: Reporter
    device: str
    init_weights: bytes | None = None
    resume: FitCheckpoint | EnsembleCheckpoint | None = None
    on_checkpoint: Callable[[FitCheckpoint | EnsembleCheckpoint], None] | None = None
    checkpoint_every: int | None = None
    #: each dataset row's value in ``model_options.group_column`` (an ensemble's group
    #: bootstrap), indexed like ``data.train_rows``; None when the run names no group column
    group_values: np.ndarray | None = None


@dataclass
class TrainOutcome:
    """What a trainer returns. ``weights``: kan_core.io bytes (None for models kept as
    predictions only). ``val_predictions``: regression (n_val, n_out) in standardised units,
    classification (n_val,) class indices — stored so the predictions endpoint works for
    models without weights."""

    stopped_reason: str
    train_loss: float | None
    val_loss: float | None
    val_metric: float | None
    n_parameters: int
    weights: bytes | None = None
    val_predictions: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: a KAN ensemble (``kan_core.ensemble.ensemble_to_bytes``) stored beside ``weights``
    ensemble: bytes | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One trainable model kind. ``estimate_parameters(config, n_in, n_out)`` guards memory."""

    name: str
    description: str
    tasks: tuple[Task, ...]
    train: Callable[[TrainingJob], TrainOutcome]
    inspectable: bool = False
    estimate_parameters: Callable[[dict[str, Any], int, int], int] | None = None
    #: checks a run's config when the run is created (raises InvalidInputError: 422, nothing
    #: queued) and returns the config to store; None: nothing kind-specific to check
    check_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    #: the trainer stops early on ``data.x_val`` and returns ``weights`` (kan_core.io bytes): in
    #: a cross-validation fold it gets a grouped inner validation split of the fold's training
    #: rows and the fold's test rows are predicted with its model. False: it trains on all of
    #: the fold's training rows and the test rows are its validation rows (``val_predictions``)
    early_stopping: bool = False
