"""How a model computes and trains, decided in one place.

A cubic B-spline KAN on the CPU can train on four engines, fastest first where they apply:

- `fused-cpu` (`kan_core.fused`): loss, gradient and optimiser step of the whole network in
  numba. Small KANs (rows × edges ≤ 600 000) on uniform cubic grids, no symbolic edges, lamb 0.
- `native` (`kan_core.native`): the layers as one C++ autograd node, torch's optimisers.
  Cubic B-spline KANs, lamb 0.
- `numba`: `kan_core.spline_layer`'s numba layer kernels (with lamb > 0 the numba basis
  kernels of `kan_core.basis`), torch's optimisers. Cubic B-spline KANs.
- `torch`: the pure-PyTorch reference (`BSplineBasis.reference_features`, autograd). Anything.

`select_engine` picks the training engine from `FitConfig.engine`: "auto" (the first that
applies) or one name (an engine that cannot run the job is a `ConfigError` saying why). Every
forward pass asks `layer_engine` (a stack of layers) or `basis_engine` (a basis alone) which
kernels compute it; a layer or basis never decides itself. Only a basis that declares a kernel
form (`Basis.kernel = "cubic_bspline"`: the B-spline basis with k = 3) can leave the torch
path, so a new basis runs on `torch` with no change here. `use_engine(engine)` narrows the
kernels of every forward pass inside it (grid updates and evaluation too) for the current
thread / task only (a `ContextVar`); other threads serving models are untouched.

Every engine is tested against `torch` (values and gradients: `tests/kan_core/test_basis.py`,
`test_spline_layer.py`, `test_native.py`, `test_fused.py`, `test_engine.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import torch
from torch import nn

from kan_core import cpu_kernels, native
from kan_core.compile_marks import assume_constant_result
from kan_core.errors import ConfigError


class Engine(str, Enum):
    FUSED_CPU = "fused-cpu"
    NATIVE = "native"
    NUMBA = "numba"
    TORCH = "torch"


ENGINE_NAMES = ["auto", *(e.value for e in Engine)]
FUSED_MAX_WORK = 600_000  # rows × edges per evaluation; bigger jobs run faster layer by layer
# The most capable layer kernels this context may use (a fused fit evaluates on native). A
# ContextVar, so a scope set by one thread (or asyncio task) leaves the others alone.
_LEVELS = (Engine.TORCH, Engine.NUMBA, Engine.NATIVE)
_ceiling: ContextVar[Engine] = ContextVar("kan_core_engine", default=Engine.NATIVE)


@contextlib.contextmanager
def use_engine(engine: Engine | str) -> Iterator[None]:
    """Forward passes inside this block (this thread / task) use only `engine`'s kernels
    ("torch": the PyTorch reference). A scope can only narrow the enclosing one. Under
    torch.compile the scope is read when a graph is traced."""
    level = Engine.NATIVE if Engine(engine) is Engine.FUSED_CPU else Engine(engine)
    token = _ceiling.set(min(level, _ceiling.get(), key=_LEVELS.index))
    try:
        yield
    finally:
        _ceiling.reset(token)


@assume_constant_result  # dynamo cannot trace ContextVar.get
def _allowed(level: Engine) -> bool:
    return _LEVELS.index(_ceiling.get()) >= _LEVELS.index(level)


def enabled(engine: Engine) -> bool:
    """Whether `engine`'s kernels are there (built, importable) and allowed in this context."""
    if engine is Engine.NATIVE:
        return _allowed(Engine.NATIVE) and native.available()
    if engine in (Engine.NUMBA, Engine.FUSED_CPU):
        return _allowed(Engine.NUMBA) and cpu_kernels.available()
    return True


def _data_reason(x: torch.Tensor) -> str:
    if x.dim() != 2 or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return "data not 2-D float32/float64 on the CPU"
    return ""


def _layers_reason(layers: Sequence[Any], x: torch.Tensor) -> str:
    """Why the layer kernels (native, numba) cannot compute `layers` on x ("" when they can)."""
    for layer in layers:
        if getattr(layer.basis, "kernel", "") != "cubic_bspline":
            return "a layer without cubic B-splines"
        if layer.coef.device.type != "cpu" or layer.coef.dtype != x.dtype:
            return "parameters not on the CPU in the data's dtype"
    return _data_reason(x)


def layer_engine(layers: Sequence[Any], x: torch.Tensor) -> Engine:
    """Which kernels compute the numeric part of these KAN layers, applied in turn to x, here:
    NATIVE or NUMBA (`spline_layer.spline_network`, one fused node), or TORCH (each layer's own
    PyTorch ops on its basis)."""
    if not _layers_reason(layers, x):
        for engine in (Engine.NATIVE, Engine.NUMBA):
            if enabled(engine):
                return engine
    return Engine.TORCH


def basis_engine(basis: Any, x: torch.Tensor) -> Engine:
    """NUMBA when `kan_core.cpu_kernels` computes this basis alone on x here (a cubic B-spline
    basis, outside torch.compile: those kernels have no operator form), else TORCH."""
    numba = (
        getattr(basis, "kernel", "") == "cubic_bspline"
        and not _data_reason(x)
        and not torch.compiler.is_compiling()
        and enabled(Engine.NUMBA)
    )
    return Engine.NUMBA if numba else Engine.TORCH


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


def _kan_reason(model: nn.Module, x: torch.Tensor) -> str:
    if getattr(model, "kind", "") != "kan":
        return "not a KAN"
    return _layers_reason(model.layers, x)  # type: ignore[arg-type]


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
    if options.task not in ("regression", "classification"):
        return f"task {options.task!r}"
    if options.lamb > 0:
        return "a sparsity penalty (lamb > 0)"
    reason = _kan_reason(model, x)
    if reason:
        return reason
    if not enabled(Engine.FUSED_CPU):
        return "numba kernels " + (cpu_kernels.unavailable_reason() or "not allowed here")
    edges = 0
    for layer in model.layers:  # type: ignore[union-attr]
        if not layer.basis._uniform:
            return "a layer without uniform cubic B-splines"
        if layer.has_symbolic:
            return "symbolic edges"
        if not all(p.requires_grad for p in (layer.w_base, layer.coef, layer.bias)):
            return "frozen parameters"  # the compiled optimisers update everything
        edges += layer.in_dim * layer.out_dim
    if batch * edges > FUSED_MAX_WORK:
        return f"rows × edges {batch * edges} > {FUSED_MAX_WORK}"
    if options.task == "classification":
        labels, n_classes = y.reshape(-1), model.width[-1]  # type: ignore[index]
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
    reason = _kan_reason(model, x)
    if reason:
        return reason
    if engine is Engine.NATIVE:
        if options.lamb > 0:
            return "a sparsity penalty (lamb > 0) evaluates edge by edge"
        if not enabled(engine):
            return "native operators " + (native.unavailable_reason() or "not allowed here")
        return ""
    if not enabled(engine):
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
