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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kan_core import cpu_kernels, native
from kan_core.errors import ConfigError, NonFiniteLossError, TrainingDivergedError
from kan_core.fused import FusedOptimizer
from kan_core.grid import update_grid
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
    # compiles only big jobs, and only off the CPU (where the fused numba kernels are as fast).
    compile: bool | Literal["auto"] = False
    compile_auto_threshold: float = 5e11  # steps × batch × (edges or weights) × features
    # small B-spline KANs on the CPU train through compiled whole-network loops
    # (`kan_core.fused`); False forces the PyTorch path
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
    engine: str = "torch"  # "fused-cpu" (kan_core.fused), "torch" or "torch-compiled"


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
    y2 = y.reshape(preds.shape)
    ss_res = float(((preds - y2) ** 2).sum())
    ss_tot = float(((y2 - y2.mean(0)) ** 2).sum())
    return loss, 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan


def _job_size(model: nn.Module, cfg: FitConfig, n_rows: int) -> float:
    batch = n_rows if cfg.batch_size is None else min(cfg.batch_size, n_rows)
    per_row = sum(p.numel() for p in model.parameters())
    return float(cfg.steps) * batch * per_row * (20 if cfg.optimizer == "lbfgs" else 1)


def _maybe_compiled(
    model: nn.Module, cfg: FitConfig, n_rows: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's forward, compiled when asked to (or when "auto" finds the job big enough).

    "auto" never compiles on the CPU when kan_core's CPU engines (native operators or numba
    kernels) are there: the KAN's layers are one opaque operator either way, so compiling
    gains at most what it saves on the loss and the optimiser step (measured on 2 cores, a
    compiled [10,32,32,1] step is 0.96-1.05× the eager one) and costs 30-100 s."""
    device = next(model.parameters()).device
    auto = cfg.compile == "auto" and not (
        device.type == "cpu" and (native.enabled() or cpu_kernels.enabled())
    )
    wanted = cfg.compile is True or (
        auto and _job_size(model, cfg, n_rows) >= cfg.compile_auto_threshold
    )
    if not wanted:
        return model
    return torch.compile(model, dynamic=False)  # type: ignore[return-value]


def _fused_optimizer(
    model: nn.Module, data: TrainData, cfg: FitConfig, batch: int, compiled: bool
) -> FusedOptimizer | None:
    if not cfg.fused or compiled:
        return None
    if cfg.optimizer == "lbfgs" and batch != data.x_train.shape[0]:
        return None  # mini-batch LBFGS keeps the closure-based path
    if cfg.update_grid_every and cfg.grid_eps != 1.0:
        return None  # adaptive grids are not uniform: Cox–de Boor path
    if not FusedOptimizer.supports(model, data.x_train, cfg.task, cfg.lamb, batch):
        return None
    if cfg.task == "classification":  # the compiled loss indexes logits by label, unchecked
        assert isinstance(model, KAN)  # FusedOptimizer.supports checked it
        labels, n_classes = data.y_train.reshape(-1), model.width[-1]
        if labels.numel() and not (int(labels.min()) >= 0 and int(labels.max()) < n_classes):
            return None  # the PyTorch path raises its own clear error
    return FusedOptimizer(model, cfg.optimizer, cfg.lr, task=cfg.task)  # type: ignore[arg-type]


def _grads_finite(params: list[nn.Parameter]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack([g.detach().abs().sum() for g in grads]).sum()))


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
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    is_kan = isinstance(model, KAN)
    forward = _maybe_compiled(model, cfg, data.x_train.shape[0])
    gen = torch.Generator().manual_seed(cfg.seed)
    n = data.x_train.shape[0]
    batch = n if cfg.batch_size is None else min(cfg.batch_size, n)
    full_batch = batch == n
    if full_batch:
        xb_full, yb_full = data.x_train.to(device), data.y_train.to(device)

    fused = _fused_optimizer(model, data, cfg, batch, forward is not model)
    if cfg.optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            params,
            lr=cfg.lr,
            history_size=10,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-32,
            tolerance_change=1e-32,
        )
    else:
        # torch's fused Adam: one kernel for all parameters (on the CPU ~4× faster than the
        # default per-tensor loop for a KAN's dozen small tensors); same update rule
        fused_adam = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        opt = torch.optim.Adam(params, lr=cfg.lr, fused=fused_adam or None)
    stateful: torch.optim.Optimizer | FusedOptimizer = opt if fused is None else fused

    grid_until = cfg.update_grid_until if cfg.update_grid_until is not None else cfg.steps
    result = FitResult()
    if fused is not None:
        result.engine = "fused-cpu"
    elif forward is not model:
        result.engine = "torch-compiled"
    best_val, best_state, since_best = math.inf, None, 0
    start = time.perf_counter()
    perm, cursor = torch.randperm(n, generator=gen), 0
    first_loss, start_step = math.inf, 0
    if resume is not None:
        model.load_state_dict(resume.model_state)
        stateful.load_state_dict(resume.optimizer_state)
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
                if fused is not None:
                    fused.reset()
                else:
                    opt.state.clear()  # curvature history predates the new grid

        if full_batch:
            xb, yb = xb_full, yb_full
        else:
            if cursor + batch > n:
                perm, cursor = torch.randperm(n, generator=gen), 0
            idx = perm[cursor : cursor + batch]
            cursor += batch
            xb, yb = data.x_train[idx].to(device), data.y_train[idx].to(device)

        def closure(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:  # noqa: B023
            opt.zero_grad(set_to_none=True)
            if is_kan and cfg.lamb > 0:
                pred, reg = regularization(model, xb, cfg.lamb_l1, cfg.lamb_entropy)  # type: ignore[arg-type]
                loss = _loss(pred, yb, cfg.task)
                (loss + cfg.lamb * reg).backward()
            else:
                loss = _loss(forward(xb), yb, cfg.task)
                loss.backward()
            return loss

        loss: torch.Tensor
        if fused is not None:
            fused_loss, finite = fused.step(xb, yb)  # keeps the last finite weights
            if not finite:
                raise NonFiniteLossError(step)
            loss = torch.tensor(fused_loss)
        elif cfg.optimizer == "lbfgs":
            snapshot = [p.detach().clone() for p in params]
            loss = opt.step(closure)  # type: ignore[arg-type, assignment]
            finite = bool(torch.isfinite(loss)) and all(
                bool(torch.isfinite(p).all()) for p in params
            )
            if not finite:
                with torch.no_grad():
                    for p, s in zip(params, snapshot, strict=True):
                        p.copy_(s)
                raise NonFiniteLossError(step)
        else:
            loss = closure()
            if not bool(torch.isfinite(loss)):
                raise NonFiniteLossError(step)
            if not _grads_finite(params):
                raise NonFiniteLossError(step, "gradient")
            opt.step()
        train_loss = float(loss.detach())
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
                    optimizer_state=_cpu_copy(stateful.state_dict()),
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
    return result
