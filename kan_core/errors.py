"""Errors a user of kan_core can cause; each message says what to change."""

from __future__ import annotations


class KanCoreError(Exception):
    """Base class for every user-caused error raised by kan_core."""


class ConfigError(KanCoreError, ValueError):
    """A model, training or symbolic configuration value is invalid."""


class NonFiniteLossError(KanCoreError, FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the model keeps its last finite weights."""

    def __init__(self, step: int, what: str = "loss") -> None:
        self.step = step
        super().__init__(
            f"Training stopped at step {step}: the {what} became non-finite (NaN or inf). "
            "The model keeps its last finite weights. Lower the learning rate, "
            "standardise the inputs or reduce the regularisation."
        )


class TrainingDivergedError(NonFiniteLossError):
    """The loss exploded (grew by orders of magnitude); stopped before it overflows."""

    def __init__(self, step: int, first: float, now: float) -> None:
        self.step = step
        FloatingPointError.__init__(
            self,
            f"Training diverged at step {step}: the loss grew from {first:.3g} to {now:.3g} "
            "and is heading for NaN/inf. The model keeps its last finite weights. "
            "Lower the learning rate (try 10× smaller) or standardise the inputs.",
        )
