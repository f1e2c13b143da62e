"""The one place that chooses how a model trains: `select_engine(model, x, options)`.

A cubic B-spline KAN on the CPU can train on four engines, fastest first where they apply:

- `fused-cpu` (`kan_core.fused`): loss, gradient and optimiser step of the whole network in
  numba. Small KANs (rows × edges ≤ 600 000) on uniform cubic grids, no symbolic edges, lamb 0.
- `native` (`kan_core.native`): the layers as one C++ autograd node, torch's optimisers.
  Cubic B-spline KANs, lamb 0.
- `numba`: `kan_core.spline_layer`'s numba layer kernels (with lamb > 0 the numba basis
  kernels of `kan_core.basis`), torch's optimisers. Cubic B-spline KANs.
- `torch`: the pure-PyTorch reference (`BSplineBasis.reference_features`, autograd). Anything.

Every engine is tested against `torch` (values and gradients: `tests/kan_core/test_basis.py`,
`test_spline_layer.py`, `test_native.py`, `test_fused.py`). `FitConfig.engine` is "auto" (the
first that applies) or one name (an engine that cannot run the job is a `ConfigError` saying
why). A named engine runs inside `use_engine(engine)`, which narrows the kernels of every
forward pass (grid updates and evaluation too) for the current thread / task only (a
`ContextVar`, `cpu_kernels.kernel_scope`); other threads serving models are untouched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import torch
from torch import nn

from kan_core import cpu_kernels, native
from kan_core.basis import BSplineBasis
from kan_core.errors import ConfigError
from kan_core.fused import FusedOptimizer
from kan_core.model import KAN


class Engine(str, Enum):
    FUSED_CPU = "fused-cpu"
    NATIVE = "native"
    NUMBA = "numba"
    TORCH = "torch"


# the CPU kernels each engine lets a forward pass use (evaluation in a fused fit: native)
_KERNELS: dict[Engine, cpu_kernels.KernelLevel] = {
    Engine.FUSED_CPU: "native",
    Engine.NATIVE: "native",
    Engine.NUMBA: "numba",
    Engine.TORCH: "torch",
}
ENGINE_NAMES = ["auto", *(e.value for e in Engine)]


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine
    reason: str  # why this one (and, under "auto", why not the faster ones)


class FitOptions(Protocol):
    """What the choice reads from `kan_core.train.FitConfig`."""

    @property
    def engine(self) -> str: ...
    @property
    def fused(self) -> bool: ...
    @property
    def compile(self) -> bool | str: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def lamb(self) -> float: ...
    @property
    def update_grid_every(self) -> int: ...
    @property
    def grid_eps(self) -> float: ...


def use_engine(engine: Engine) -> contextlib.AbstractContextManager[None]:
    """Forward passes inside this block (this thread / task) use only `engine`'s kernels."""
    return cpu_kernels.kernel_scope(_KERNELS[engine])


def _cubic_kan_reason(model: nn.Module, x: torch.Tensor) -> str:
    """Why the layer kernels (native, numba) cannot compute `model` on x ("" when they can)."""
    if not isinstance(model, KAN):
        return "not a KAN"
    for layer in model.layers:
        basis = layer.basis
        if not (isinstance(basis, BSplineBasis) and basis.k == 3):
            return "a layer without cubic B-splines"
        if layer.coef.device.type != "cpu" or layer.coef.dtype != x.dtype:
            return "parameters not on the CPU in the data's dtype"
    if x.dtype not in (torch.float32, torch.float64):
        return "data not float32/float64"
    return ""


def _fused_reason(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: FitOptions, batch: int
) -> str:
    if not options.fused:
        return "FitConfig.fused is False"
    if options.compile is True:
        return "compile=True asks for the autograd path"
    if options.optimizer == "lbfgs" and batch != x.shape[0]:
        return "mini-batch L-BFGS"  # keeps the closure-based path
    if options.update_grid_every and options.grid_eps != 1.0:
        return "adaptive grids (grid_eps < 1) are not uniform"
    reason = FusedOptimizer.unsupported_reason(model, x, options.task, options.lamb, batch)
    if reason or options.task != "classification":
        return reason
    assert isinstance(model, KAN)  # unsupported_reason checked it
    labels, n_classes = y.reshape(-1), model.width[-1]
    if labels.numel() and not (int(labels.min()) >= 0 and int(labels.max()) < n_classes):
        return "class labels outside the model's outputs"  # the compiled loss does not check
    return ""


def _unsupported(
    engine: Engine,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    options: FitOptions,
    batch: int,
) -> str:
    """Why `engine` cannot train this job ("" when it can)."""
    if engine is Engine.TORCH:
        return ""
    if engine is Engine.FUSED_CPU:
        return _fused_reason(model, x, y, options, batch)
    reason = _cubic_kan_reason(model, x)
    if reason:
        return reason
    if engine is Engine.NATIVE:
        if options.lamb > 0:
            return "a sparsity penalty (lamb > 0) evaluates edge by edge"
        if not native.enabled():
            return "native operators " + (native.unavailable_reason() or "not allowed here")
        return ""
    if not cpu_kernels.enabled():
        return "numba kernels " + (cpu_kernels.unavailable_reason() or "not allowed here")
    return ""


def select_engine(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    options: FitOptions,
    batch: int,
) -> EngineChoice:
    """The engine `fit` trains `model` with on data x, y (x on the model's device) in batches
    of `batch` rows, and why. Raises ConfigError when a named engine cannot run the job."""
    if options.engine not in ENGINE_NAMES:
        raise ConfigError(f"Unknown engine {options.engine!r}. Available: {ENGINE_NAMES}")
    if options.engine != "auto":
        engine = Engine(options.engine)
        reason = _unsupported(engine, model, x, y, options, batch)
        if reason:
            raise ConfigError(f"engine {engine.value!r} cannot train this job: {reason}")
        return EngineChoice(engine, "asked for")
    passed: list[str] = []
    for engine in Engine:
        reason = _unsupported(engine, model, x, y, options, batch)
        if not reason:
            why = "; ".join(passed) if passed else "the fastest engine, and it applies"
            return EngineChoice(engine, why)
        passed.append(f"not {engine.value}: {reason}")
    raise AssertionError("the torch engine always applies")  # pragma: no cover
