"""The fused CPU engine (kan_core.fused) against autograd, torch.optim and closed forms."""

import math

import pytest
import torch

from kan_core import cpu_kernels
from kan_core.engine import Engine, enabled
from kan_core.fused import FusedOptimizer, _layer_params, loss_and_grad
from kan_core.model import KAN, MLP
from kan_core.train import FitConfig, TrainData, fit

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="numba kernels unavailable")


def _model(width, dtype=torch.float64, seed=1) -> KAN:
    model = KAN(width, grid=5, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:
            layer.coef.copy_(torch.randn(layer.coef.shape, generator=g))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
    return model


def _flat_grad(model: KAN) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in _layer_params(model)])


@pytest.mark.parametrize("width", [[3, 4, 2], [1, 1], [2, 5, 3, 1]])
def test_loss_and_gradient_equal_autograd(width):
    model = _model(width)
    model.layers[0].mask[0, 0] = 0.0  # a pruned edge gets no gradient and adds nothing
    g = torch.Generator().manual_seed(0)
    # a third of the inputs lie outside the grid range [-1, 1]
    x = torch.rand(64, width[0], generator=g, dtype=torch.float64) * 3 - 1.5
    y = torch.randn(64, width[-1], generator=g, dtype=torch.float64)
    loss, grad = loss_and_grad(model, x, y)
    ref = ((model(x) - y) ** 2).mean()
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(grad, _flat_grad(model), rtol=1e-10, atol=1e-12)
    assert float(grad[: width[0] * width[1]].reshape(width[1], width[0])[0, 0]) == 0.0


def test_cross_entropy_and_gradient_equal_autograd():
    model = _model([3, 4, 3])
    g = torch.Generator().manual_seed(1)
    x = torch.rand(80, 3, generator=g, dtype=torch.float64) * 3 - 1.5
    labels = torch.randint(0, 3, (80,), generator=g)
    loss, grad = loss_and_grad(model, x, labels, task="classification")
    ref = torch.nn.functional.cross_entropy(model(x), labels)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(grad, _flat_grad(model), rtol=1e-10, atol=1e-12)


def test_adam_follows_torch_optim_adam():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(100, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * x[:, 1:]
    fused_model, torch_model = _model([2, 3, 1]), _model([2, 3, 1])
    fused = FusedOptimizer(fused_model, "adam", 0.01)
    opt = torch.optim.Adam(_layer_params(torch_model), lr=0.01)
    for _ in range(30):
        fused_loss, ok = fused.step(x, y)
        opt.zero_grad()
        loss = ((torch_model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        assert ok and fused_loss == pytest.approx(float(loss), rel=1e-9)
    for a, b in zip(_layer_params(fused_model), _layer_params(torch_model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_lbfgs_follows_torch_optim_lbfgs_on_a_linear_problem():
    # one layer on a fixed grid is linear in its parameters (a convex, ill-conditioned
    # least-squares problem): our L-BFGS and torch's should walk the same path
    g = torch.Generator().manual_seed(5)
    x = torch.rand(300, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = (torch.exp(x[:, :1]) - torch.sin(2 * x[:, 1:])) + 0.01 * torch.randn(
        300, 1, generator=g, dtype=torch.float64
    )
    fused_model, torch_model = _model([2, 1]), _model([2, 1])
    fused = FusedOptimizer(fused_model, "lbfgs", 1.0)
    opt = torch.optim.LBFGS(
        _layer_params(torch_model),
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-32,
        tolerance_change=1e-32,
    )

    def closure():
        opt.zero_grad()
        loss = ((torch_model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    ours, theirs = [], []
    for _ in range(10):
        ours.append(fused.step(x, y)[0])
        theirs.append(float(opt.step(closure)))
    assert all(b <= a for a, b in zip(ours, ours[1:], strict=False))  # sufficient decrease
    assert ours[-1] < 1e-3 * ours[0]
    for a, b in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, rel=1e-6)


def test_fit_uses_the_fused_engine_only_where_it_applies():
    x = torch.rand(200, 2) * 2 - 1
    y = (x[:, :1] * x[:, 1:]).exp()
    data = TrainData(x, y)
    lbfgs = FitConfig(steps=3, optimizer="lbfgs")
    assert fit(KAN([2, 3, 1]), data, lbfgs).engine == "fused-cpu"
    assert fit(KAN([2, 3, 1]), data, FitConfig(steps=3)).engine == "fused-cpu"  # Adam
    layers = "native" if enabled(Engine.NATIVE) else "numba"  # the layer engine autograd runs on
    off = FitConfig(steps=3, optimizer="lbfgs", fused=False)
    assert fit(KAN([2, 3, 1]), data, off).engine == layers
    regularised = FitConfig(steps=3, optimizer="lbfgs", lamb=1e-3)
    assert fit(KAN([2, 3, 1]), data, regularised).engine == "numba"  # the basis kernels
    adaptive = FitConfig(steps=3, optimizer="lbfgs", grid_eps=0.5)
    assert fit(KAN([2, 3, 1]), data, adaptive).engine == layers
    symbolic = KAN([2, 3, 1])
    symbolic.layers[0].set_symbolic(0, 0, "sin", 1.0, 0.0, 1.0, 0.0)
    assert fit(symbolic, data, lbfgs).engine == layers
    assert fit(KAN([2, 3, 1], basis="rbf"), data, lbfgs).engine == "torch"
    labels = (x[:, 0] > 0).long()
    clf = FitConfig(steps=3, optimizer="lbfgs", task="classification")
    assert fit(KAN([2, 3, 2]), TrainData(x, labels), clf).engine == "fused-cpu"
    assert fit(MLP([2, 3, 2]), TrainData(x, labels), clf).engine == "torch"
    with pytest.raises(IndexError):  # a label the model has no output for: PyTorch's error
        fit(KAN([2, 3, 2]), TrainData(x, labels + 2), clf)


@pytest.mark.parametrize("optimizer,steps,lr", [("lbfgs", 30, 1.0), ("adam", 300, 0.02)])
def test_fused_and_torch_paths_fit_equally_well(optimizer, steps, lr):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 2, generator=g) * 2 - 1
    y = torch.exp(torch.sin(math.pi * x[:, :1]) + x[:, 1:] ** 2)
    losses = {}
    for fused in (True, False):
        model = KAN([2, 5, 1], seed=0)
        cfg = FitConfig(steps=steps, optimizer=optimizer, lr=lr, fused=fused)
        losses[fused] = fit(model, TrainData(x, y), cfg).train_loss
    # different float rounding → different trajectories, but the same quality of fit
    assert losses[True] < 3 * losses[False] + 1e-5
    assert losses[True] < 1e-2
