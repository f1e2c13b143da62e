import contextlib
import math

import numpy as np
import pytest
import torch

from kan_core.engine import Engine, enabled, use_engine
from kan_core.errors import ConfigError, NonFiniteLossError
from kan_core.model import KAN, MLP
from kan_core.train import FitConfig, TrainData, fit


def hello_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    y = torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)[:, None]
    return x, y


def two_moons(n: int, seed: int):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, math.pi, n)
    label = rng.integers(0, 2, n)
    x = np.where(
        label[:, None] == 0, np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)]
    )
    x = x + rng.normal(0, 0.1, x.shape)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(label)


def rmse(model, x, y) -> float:
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean().sqrt())


@pytest.mark.slow
def test_hello_kan_reaches_rmse_below_1e_2():
    x, y = hello_data(1000, 0)
    xt, yt = hello_data(1000, 1)
    model = KAN([2, 5, 1], grid=5, k=3, seed=0)
    fit(model, TrainData(x, y), FitConfig(steps=50, optimizer="lbfgs", lr=1.0))
    assert rmse(model, xt, yt) < 1e-2


def test_two_moons_classification_above_95_percent():
    x, y = two_moons(600, 0)
    xt, yt = two_moons(400, 1)
    model = KAN([2, 4, 2], seed=0)
    fit(
        model,
        TrainData(x, y),
        FitConfig(steps=150, optimizer="adam", lr=2e-2, task="classification"),
    )
    with torch.no_grad():
        acc = float((model(xt).argmax(-1) == yt).float().mean())
    assert acc > 0.95


@pytest.mark.parametrize("basis", ["bspline", "rbf", "chebyshev", "relu_kan", "rational"])
def test_each_basis_trains(basis):
    x, y = hello_data(400, 2)
    model = KAN([2, 5, 1], basis=basis, seed=0)
    start = rmse(model, x, y)
    fit(model, TrainData(x, y), FitConfig(steps=150, optimizer="adam", lr=2e-2))
    final = rmse(model, x, y)
    assert final < 0.5 * start and final < 0.35


def test_fit_is_deterministic_and_leaves_global_rng_alone():
    x, y = hello_data(300, 3)
    state = torch.get_rng_state()
    results = []
    for _ in range(2):
        model = KAN([2, 3, 1], seed=1)
        fit(
            model, TrainData.split(x, y, 0.2, seed=4), FitConfig(steps=30, batch_size=64, lamb=1e-3)
        )
        results.append(model.layers[0].coef.detach().clone())
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(results[0], results[1])


def test_huge_lr_ends_in_clear_error_with_finite_weights():
    x, y = hello_data(200, 4)
    model = KAN([2, 5, 1], seed=0)
    with pytest.raises(NonFiniteLossError, match="step") as info:
        fit(
            model,
            TrainData(x, y),
            FitConfig(steps=200, lr=1e6, optimizer="adam", update_grid_every=0),
        )
    assert info.value.step >= 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_huge_lr_lbfgs_stays_finite():
    # LBFGS's strong-Wolfe line search tames lr=1e6: it must either fit or stop cleanly
    x, y = hello_data(200, 4)
    model = KAN([2, 5, 1], seed=0)
    with contextlib.suppress(NonFiniteLossError):
        fit(model, TrainData(x, y), FitConfig(steps=20, lr=1e6, optimizer="lbfgs"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_in_data_is_a_non_finite_error_at_step_zero():
    x, y = hello_data(50, 4)
    y[3] = float("nan")
    model = KAN([2, 2, 1], seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="step 0"):
        fit(model, TrainData(x, y), FitConfig(steps=5, update_grid_every=0))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_callback_progress_and_cancellation():
    x, y = hello_data(200, 5)
    seen = []

    def cb(p):
        seen.append(p)
        return p.step < 7

    result = fit(KAN([2, 2, 1]), TrainData.split(x, y, 0.25), FitConfig(steps=100), cb)
    assert result.stopped_reason == "cancelled"
    assert [p.step for p in seen] == list(range(1, 8))
    assert seen[-1].val_loss is not None and seen[-1].total_steps == 100


def test_early_stopping_restores_best_weights():
    x, y = hello_data(120, 6)
    data = TrainData.split(x, y + torch.randn_like(y), 0.5, seed=0)
    model = MLP([2, 64, 64, 1])
    result = fit(model, data, FitConfig(steps=2000, lr=3e-2, early_stopping_patience=10))
    assert result.stopped_reason == "early_stopping"
    best = min(p.val_loss for p in result.history)
    assert result.val_loss == pytest.approx(best, rel=1e-5)


def test_mini_batches_stream_from_cpu_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, 20, generator=g)
    y = x[:, :1] * 2 + torch.sin(x[:, 1:2])
    model = KAN([20, 4, 1], seed=0)
    result = fit(model, TrainData(x, y), FitConfig(steps=60, batch_size=1024, lr=1e-2))
    assert result.history[-1].train_loss < result.history[0].train_loss


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"lr": float("nan")},
        {"lr": -1.0},
        {"optimizer": "sgd"},
        {"task": "ranking"},
        {"lamb": -1.0},
    ],
)
def test_bad_config_rejected(kwargs):
    x, y = hello_data(20, 0)
    with pytest.raises(ConfigError):
        fit(KAN([2, 1]), TrainData(x, y), FitConfig(**kwargs))


def test_multi_output_regression():
    x, y = hello_data(400, 7)
    y2 = torch.cat([y, x[:, :1] ** 2], dim=1)
    model = KAN([2, 5, 2], seed=0)
    fit(model, TrainData(x, y2), FitConfig(steps=40, optimizer="lbfgs", lr=1.0))
    assert rmse(model, x, y2) < 0.05


def test_compile_auto_leaves_small_interactive_jobs_eager():
    from kan_core.train import _maybe_compiled

    small = KAN([2, 5, 1])
    assert _maybe_compiled(small, FitConfig(steps=50, compile="auto"), 1000) is small
    big = KAN([10, 32, 32, 1])
    huge_job = FitConfig(steps=20_000, batch_size=8192, compile="auto")
    # on the CPU the fused kernels make eager as fast as compiled: "auto" stays eager there
    assert (_maybe_compiled(big, huge_job, 100_000) is big) == enabled(Engine.NUMBA)
    with use_engine(Engine.TORCH):
        assert _maybe_compiled(big, huge_job, 100_000) is not big
    assert _maybe_compiled(big, FitConfig(compile=True), 100) is not big
    assert _maybe_compiled(big, FitConfig(compile=False), 100_000) is big
