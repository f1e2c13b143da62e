"""A tiny real model kind registered through KANSCOPE_MODEL_PLUGINS (used by test_app_wiring)."""

from __future__ import annotations

import numpy as np

from app.services.model_contract import ModelSpec, TrainingJob, TrainOutcome
from app.services.model_registry import register_model


def train_mean(job: TrainingJob) -> TrainOutcome:
    """Predicts the training mean (standardised units) for every validation row."""
    y = job.data.y_train.numpy()
    pred = np.repeat(y.mean(0, keepdims=True), len(job.data.val_rows), axis=0)
    return TrainOutcome(
        "completed", float(((y - y.mean(0)) ** 2).mean()), None, 0.0, 1, val_predictions=pred
    )


register_model(ModelSpec("mean_baseline", "predicts the mean", ("regression",), train_mean))
