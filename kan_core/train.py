"""Training: `fit(model, data, config, callback) -> FitResult` for KANs and MLPs alike.

- Adam (mini-batches) or LBFGS; MSE (regression) or cross-entropy (classification).
- pykan's regularisation (L1 of mean |φ| per edge + entropy), only computed when lamb > 0.
- Grid updates from the training inputs every `update_grid_every` steps until `update_grid_until`.
- Validation split, early stopping (best weights restored), progress callback; the callback
  returning False cancels. Deterministic with `seed` through a local generator.
- Data may stay on the CPU: mini-batches are moved to the model's device one at a time, so a
  100 000 × 20 table never becomes a full-data basis tensor on the device.
- A non-finite loss or gradient raises `NonFiniteLossError(step)`; the model keeps its last
  finite weights.
- Checkpoints: with `on_checkpoint`, every `checkpoint_every` steps fit hands over a
  `FitCheckpoint` (weights, optimiser state, RNG state, data cursor, early-stopping state);
  `fit(..., resume=checkpoint)` continues from it and follows the same trajectory as a run that
  was never interrupted (bit-exact on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kan_core.engine import ENGINE_NAMES, Engine, enabled, select_engine, use_engine
from kan_core.errors import ConfigError, NonFiniteLossError, TrainingDivergedError
from kan_core.fused import FusedOptimizer
from kan_core.grid import update_grid
from kan_core.metrics import r2_score
from kan_core.model import KAN


@dataclass
class TrainData:
    x_train: torch.Tensor  # (n, in) float
    y_train: torch.Tensor  # (n, out) float for regression, (n,) long for classification
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x_train.ndim != 2:
            raise ConfigError(
                f"x_train must be 2-D (rows, features), got shape {tuple(self.x_train.shape)}"
            )
        if self.x_train.shape[0] != self.y_train.shape[0]:
            raise ConfigError("x_train and y_train have different numbers of rows")
        if self.x_train.shape[0] < 1:
            raise ConfigError("no training rows")
        if (self.x_val is None) != (self.y_val is None):
            raise ConfigError("give both x_val and y_val, or neither")

    @classmethod
    def split(
        cls, x: torch.Tensor, y: torch.Tensor, val_fraction: float = 0.2, seed: int = 0
    ) -> TrainData:
        """Shuffle with a local generator and hold out `val_fraction` of the rows."""
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        n = x.shape[0]
        n_val = int(round(n * val_fraction))
        if n_val == 0 or n - n_val < 1:
            return cls(x, y)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        val, tr = perm[:n_val], perm[n_val:]
        return cls(x[tr], y[tr], x[val], y[val])


@dataclass
class FitConfig:
    steps: int = 200
    optimizer: Literal["adam", "lbfgs"] = "adam"
    lr: float = 1e-2
    batch_size: int | None = None  # None: full batch
    task: Literal["regression", "classification"] = "regression"
    lamb: float = 0.0
    lamb_l1: float = 1.0
    lamb_entropy: float = 2.0
    update_grid_every: int = 5  # 0: never
    update_grid_until: int | None = 50
    grid_eps: float = 1.0
    grid_sample_size: int = 4096
    reset_lbfgs_on_grid_update: bool = False
    divergence_factor: float | None = 1e8  # stop when the loss exceeds this × its first value
    # torch.compile the forward pass. Compiling takes tens of seconds on a CPU, so "auto"
    # compiles only big jobs, and only on the torch engine (the CPU kernels are as fast).
    compile: bool | Literal["auto"] = False
    compile_auto_threshold: float = 5e11  # steps × batch × (edges or weights) × features
    # "auto" or one of `kan_core.engine.Engine` ("fused-cpu", "native", "numba", "torch"):
    # see `kan_core.engine.select_engine`
    engine: str = "auto"
    # False: "auto" never picks the whole-fit numba engine ("fused-cpu")
    fused: bool = True
    early_stopping_patience: int | None = None
    seed: int = 0
    log_every: int = 1
    eval_batch_size: int = 8192
    checkpoint_every: int = 50  # steps between `on_checkpoint` calls (when one is given)

    def validate(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ConfigError(f"steps must be an integer ≥ 1, got {self.steps!r}")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ConfigError(f"Unknown optimizer {self.optimizer!r}. Available: ['adam', 'lbfgs']")
        if self.task not in ("regression", "classification"):
            raise ConfigError(
                f"Unknown task {self.task!r}. Available: ['classification', 'regression']"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1 or None, got {self.batch_size}")
        for name in ("lamb", "lamb_l1", "lamb_entropy"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number ≥ 0, got {v!r}")
        if self.log_every < 1:
            raise ConfigError("log_every must be ≥ 1")
        if self.checkpoint_every < 1:
            raise ConfigError("checkpoint_every must be ≥ 1")
        if self.engine not in ENGINE_NAMES:
            raise ConfigError(f"Unknown engine {self.engine!r}. Available: {ENGINE_NAMES}")


@dataclass
class FitProgress:
    step: int
    total_steps: int
    train_loss: float
    val_loss: float | None
    val_metric: float | None  # R² (regression) or accuracy (classification)
    elapsed_s: float


@dataclass
class FitResult:
    history: list[FitProgress] = field(default_factory=list)
    stopped_reason: Literal["completed", "early_stopping", "cancelled"] = "completed"
    best_step: int = 0
    train_loss: float = math.nan
    val_loss: float | None = None
    val_metric: float | None = None
    engine: str = "torch"  # the `kan_core.engine.Engine` that ran the training steps
    engine_reason: str = ""  # why `select_engine` chose it
    compiled: bool = False  # the forward pass ran under torch.compile


@dataclass
class FitCheckpoint:
    """Everything `fit` needs to continue after `step` completed steps, as if never stopped.

    Tensors are CPU copies; `kan_core.io.checkpoint_to_bytes` stores it without pickle.
    """

    step: int  # completed steps
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rng_state: torch.Tensor  # the fit's local generator
    perm: torch.Tensor  # mini-batch order of the current epoch
    cursor: int
    first_loss: float
    best_val: float
    best_step: int
    since_best: int
    best_state: dict[str, torch.Tensor] | None = None


@dataclass
class EnsembleCheckpoint:
    """`kan_core.ensemble.fit_ensemble` part way: its members train in blocks (one `fit` of a
    block-diagonal KAN each); the finished blocks' trained KANs and results, and the block in
    progress's `FitCheckpoint`. Stored like it by `kan_core.io.checkpoint_to_bytes`."""

    members: int
    members_per_fit: int
    finished_states: list[dict[str, torch.Tensor]]  # per finished block, its wide KAN's state
    # per finished block: the `FitResult` fields but `history`, and "steps" (its last step)
    finished_results: list[dict[str, Any]]
    current: FitCheckpoint  # block len(finished_states)'s fit

    @property
    def steps_before_current(self) -> int:
        """Steps of the finished blocks (each block's fit numbers its steps from 1)."""
        return sum(int(r["steps"]) for r in self.finished_results)

    @property
    def step(self) -> int:
        """Completed steps counted over the blocks one after another."""
        return self.steps_before_current + self.current.step


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _loss(pred: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(pred, y.long())
    return F.mse_loss(pred, y.reshape(pred.shape))


def regularization(
    model: KAN, x: torch.Tensor, lamb_l1: float, lamb_entropy: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """pykan's sparsity penalty; returns (prediction, penalty) from one pass over x."""
    pred, traces = model.forward_with_activations(x)
    reg = pred.new_zeros(())
    for t in traces:
        scale = t.edge_values.abs().mean(0)  # (out, in)
        total = scale.sum()
        p = scale / (total + 1e-12)
        reg = reg + lamb_l1 * total - lamb_entropy * (p * torch.log2(p + 1e-12)).sum()
    return pred, reg


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, batch_size: int = 8192
) -> tuple[float, float]:
    """(loss, metric) on a data set: metric is R² for regression, accuracy for classification."""
    device = next(model.parameters()).device
    preds = torch.cat(
        [model(x[s : s + batch_size].to(device)) for s in range(0, x.shape[0], batch_size)]
    )
    y = y.to(device)
    loss = float(_loss(preds, y, task))
    if task == "classification":
        return loss, float((preds.argmax(-1) == y.long()).float().mean())
    return loss, r2_score(y.reshape(preds.shape), preds)


def _job_size(model: nn.Module, cfg: FitConfig, n_rows: int) -> float:
    batch = n_rows if cfg.batch_size is None else min(cfg.batch_size, n_rows)
    per_row = sum(p.numel() for p in model.parameters())
    return float(cfg.steps) * batch * per_row * (20 if cfg.optimizer == "lbfgs" else 1)


def _maybe_compiled(
    model: nn.Module, cfg: FitConfig, n_rows: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's forward, compiled when asked to (or when "auto" finds the job big enough).

    "auto" never compiles on the CPU when kan_core's CPU kernels (native or numba) may run in
    this context (`use_engine`): the KAN's layers are one opaque operator either way, so
    compiling gains at most what it saves on the loss and the optimiser step (measured on 2
    cores, a compiled [10,32,32,1] step is 0.96-1.05× the eager one) and costs 30-100 s."""
    device = next(model.parameters()).device
    auto = cfg.compile == "auto" and not (
        device.type == "cpu" and (enabled(Engine.NATIVE) or enabled(Engine.NUMBA))
    )
    wanted = cfg.compile is True or (
        auto and _job_size(model, cfg, n_rows) >= cfg.compile_auto_threshold
    )
    if not wanted:
        return model
    return torch.compile(model, dynamic=False)  # type: ignore[return-value]


def _grads_finite(params: list[nn.Parameter]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack([g.detach().abs().sum() for g in grads]).sum()))


class Stepper(Protocol):
    """What `fit` needs of an engine: one optimiser step at a time."""

    def step(self, xb: torch.Tensor, yb: torch.Tensor, step: int) -> float:
        """Loss at the start of the step. A non-finite loss or gradient raises
        NonFiniteLossError(step) with the model left at its last finite weights."""
        ...

    def reset_history(self) -> None:
        """Forget curvature history (L-BFGS after a grid update)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Leave the model's parameters as ordinary tensors (the caller's)."""
        ...


class TorchStepper:
    """torch.optim's Adam or L-BFGS on autograd; the forward pass runs on whichever kernels the
    enclosing `use_engine` allows (native, numba or the PyTorch reference)."""

    def __init__(
        self, model: nn.Module, cfg: FitConfig, forward: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        self.model, self.cfg, self.forward = model, cfg, forward
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.regularised = isinstance(model, KAN) and cfg.lamb > 0
        if cfg.optimizer == "lbfgs":
            self.opt: torch.optim.Optimizer = torch.optim.LBFGS(
                self.params,
                lr=cfg.lr,
                history_size=10,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-32,
                tolerance_change=1e-32,
            )
        else:
            # torch's fused Adam: one kernel for all parameters (on the CPU ~4× faster than the
            # default per-tensor loop for a KAN's dozen small tensors); same update rule
            fused_adam = all(
                p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in self.params
            )
            self.opt = torch.optim.Adam(self.params, lr=cfg.lr, fused=fused_adam or None)

    def _closure(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=True)
        if self.regularised:
            pred, reg = regularization(self.model, xb, cfg.lamb_l1, cfg.lamb_entropy)  # type: ignore[arg-type]
            loss = _loss(pred, yb, cfg.task)
            (loss + cfg.lamb * reg).backward()
        else:
            loss = _loss(self.forward(xb), yb, cfg.task)
            loss.backward()
        return loss

    def step(self, xb: torch.Tensor, yb: torch.Tensor, step: int) -> float:
        params = self.params
        if self.cfg.optimizer == "lbfgs":
            snapshot = [p.detach().clone() for p in params]
            loss: torch.Tensor = self.opt.step(lambda: self._closure(xb, yb))  # type: ignore[arg-type, assignment, return-value]
            finite = bool(torch.isfinite(loss)) and all(
                bool(torch.isfinite(p).all()) for p in params
            )
            if not finite:
                with torch.no_grad():
                    for p, s in zip(params, snapshot, strict=True):
                        p.copy_(s)
                raise NonFiniteLossError(step)
        else:
            loss = self._closure(xb, yb)
            if not bool(torch.isfinite(loss)):
                raise NonFiniteLossError(step)
            if not _grads_finite(params):
                raise NonFiniteLossError(step, "gradient")
            self.opt.step()
        return float(loss.detach())

    def reset_history(self) -> None:
        self.opt.state.clear()

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state)

    def close(self) -> None:
        pass


class FusedStepper:
    """`kan_core.fused.FusedOptimizer`: the whole step in compiled numba loops."""

    def __init__(self, model: KAN, cfg: FitConfig) -> None:
        self.opt = FusedOptimizer(model, cfg.optimizer, cfg.lr, task=cfg.task)

    def step(self, xb: torch.Tensor, yb: torch.Tensor, step: int) -> float:
        loss, finite = self.opt.step(xb, yb)  # keeps the last finite weights
        if not finite:
            raise NonFiniteLossError(step)
        return loss

    def reset_history(self) -> None:
        self.opt.reset()

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state)

    def close(self) -> None:
        self.opt.release()


def make_stepper(model: nn.Module, cfg: FitConfig, n_rows: int, engine: Engine) -> Stepper:
    """The stepper for `engine` (call inside `use_engine(engine)`)."""
    if engine is Engine.FUSED_CPU:
        assert isinstance(model, KAN)  # select_engine checked it
        return FusedStepper(model, cfg)
    return TorchStepper(model, cfg, _maybe_compiled(model, cfg, n_rows))


def fit(
    model: nn.Module,
    data: TrainData,
    config: FitConfig | None = None,
    callback: Callable[[FitProgress], bool | None] | None = None,
    *,
    resume: FitCheckpoint | None = None,
    on_checkpoint: Callable[[FitCheckpoint], None] | None = None,
) -> FitResult:
    cfg = config or FitConfig()
    cfg.validate()
    if resume is not None and not 0 <= resume.step <= cfg.steps:
        raise ConfigError(f"checkpoint at step {resume.step} lies outside 0..{cfg.steps} steps")
    n = data.x_train.shape[0]
    batch = n if cfg.batch_size is None else min(cfg.batch_size, n)
    choice = select_engine(model, data.x_train, data.y_train, cfg, batch)
    result = FitResult(engine=choice.engine.value, engine_reason=choice.reason)
    # a named engine narrows the kernels of every forward pass in this thread (grid updates and
    # evaluation too); "auto" leaves them as they are: its engine is already the fastest that
    # applies, and grid updates and evaluation keep the fastest kernels (native) when the
    # training step cannot use them (lamb > 0: the numba basis kernels)
    scope = use_engine(choice.engine) if cfg.engine != "auto" else contextlib.nullcontext()
    with scope:
        stepper = make_stepper(model, cfg, n, choice.engine)
        result.compiled = isinstance(stepper, TorchStepper) and stepper.forward is not model
        try:
            _train(model, data, cfg, stepper, result, batch, callback, resume, on_checkpoint)
        finally:
            stepper.close()  # the parameters are the caller's ordinary tensors again
    return result


def _train(
    model: nn.Module,
    data: TrainData,
    cfg: FitConfig,
    stepper: Stepper,
    result: FitResult,
    batch: int,
    callback: Callable[[FitProgress], bool | None] | None,
    resume: FitCheckpoint | None,
    on_checkpoint: Callable[[FitCheckpoint], None] | None,
) -> None:
    """fit's loop: grid updates, batches, steps, logging, early stopping, checkpoints."""
    device = next(model.parameters()).device
    is_kan = isinstance(model, KAN)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = data.x_train.shape[0]
    full_batch = batch == n
    if full_batch:
        xb_full, yb_full = data.x_train.to(device), data.y_train.to(device)

    grid_until = cfg.update_grid_until if cfg.update_grid_until is not None else cfg.steps
    best_val, best_state, since_best = math.inf, None, 0
    start = time.perf_counter()
    perm, cursor = torch.randperm(n, generator=gen), 0
    first_loss, start_step = math.inf, 0
    if resume is not None:
        model.load_state_dict(resume.model_state)
        stepper.load_state_dict(resume.optimizer_state)
        gen.set_state(resume.rng_state)
        perm, cursor, first_loss = resume.perm.clone(), resume.cursor, resume.first_loss
        best_val, since_best = resume.best_val, resume.since_best
        result.best_step = resume.best_step
        best_state = _cpu_copy(resume.best_state)
        start_step = resume.step

    for step in range(start_step, cfg.steps):
        if (
            is_kan
            and cfg.update_grid_every
            and step % cfg.update_grid_every == 0
            and step < grid_until
        ):
            idx = torch.randperm(n, generator=gen)[: cfg.grid_sample_size]
            update_grid(model, data.x_train[idx].to(device), cfg.grid_eps)  # type: ignore[arg-type]
            if cfg.optimizer == "lbfgs" and cfg.reset_lbfgs_on_grid_update:
                stepper.reset_history()  # curvature history predates the new grid

        if full_batch:
            xb, yb = xb_full, yb_full
        else:
            if cursor + batch > n:
                perm, cursor = torch.randperm(n, generator=gen), 0
            idx = perm[cursor : cursor + batch]
            cursor += batch
            xb, yb = data.x_train[idx].to(device), data.y_train[idx].to(device)

        train_loss = stepper.step(xb, yb, step)
        if not math.isfinite(first_loss):  # the first step (a resumed fit brings its own)
            first_loss = max(train_loss, 1e-12)
        elif cfg.divergence_factor is not None and train_loss > cfg.divergence_factor * first_loss:
            raise TrainingDivergedError(step, first_loss, train_loss)

        last = step == cfg.steps - 1
        if step % cfg.log_every == 0 or last:
            val_loss = val_metric = None
            if data.x_val is not None and data.y_val is not None:
                model.eval()
                val_loss, val_metric = evaluate(
                    model, data.x_val, data.y_val, cfg.task, cfg.eval_batch_size
                )
                model.train()
            progress = FitProgress(
                step + 1, cfg.steps, train_loss, val_loss, val_metric, time.perf_counter() - start
            )
            result.history.append(progress)
            monitored = val_loss if val_loss is not None else train_loss
            if math.isfinite(monitored) and monitored < best_val:
                best_val, since_best, result.best_step = monitored, 0, step + 1
                if cfg.early_stopping_patience is not None:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
            if callback is not None and callback(progress) is False:
                result.stopped_reason = "cancelled"
                break
            if cfg.early_stopping_patience is not None and since_best > cfg.early_stopping_patience:
                result.stopped_reason = "early_stopping"
                break
        if on_checkpoint is not None and (step + 1) % cfg.checkpoint_every == 0 and not last:
            on_checkpoint(
                FitCheckpoint(
                    step=step + 1,
                    model_state=_cpu_copy(model.state_dict()),
                    optimizer_state=_cpu_copy(stepper.state_dict()),
                    rng_state=gen.get_state(),
                    perm=perm.clone(),
                    cursor=cursor,
                    first_loss=first_loss,
                    best_val=best_val,
                    best_step=result.best_step,
                    since_best=since_best,
                    best_state=_cpu_copy(best_state),
                )
            )

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.train_loss = evaluate(model, data.x_train, data.y_train, cfg.task, cfg.eval_batch_size)[
        0
    ]
    if data.x_val is not None and data.y_val is not None:
        result.val_loss, result.val_metric = evaluate(
            model, data.x_val, data.y_val, cfg.task, cfg.eval_batch_size
        )
