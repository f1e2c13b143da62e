"""The fused CPU layer path (kan_core.spline_layer) against the PyTorch formulation, for both of
its engines: the native C++ operators (`kan_core.native`) and the numba layer kernels they fall
back to."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from kan_core import cpu_kernels, native, spline_layer
from kan_core.engine import Engine, layer_engine, use_engine
from kan_core.model import KAN

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="numba kernels unavailable")

# the autograd node each engine leaves on the output
NODES = {"native": "_NativeSplineNetworkBackward", "numba": "_SplineNetworkBackward"}


@pytest.fixture(params=["native", "numba"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on one engine: the native operators, or the numba kernels without them."""
    if request.param == "native":
        assert native.available(), f"native operators unavailable: {native.unavailable_reason()}"
        ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:
        ctx = use_engine(Engine.NUMBA)
    with ctx:
        yield request.param


def _loss_and_grads(model: KAN, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = model(x)
    _loss_and_grads.last_node = type(out.grad_fn).__name__  # type: ignore[attr-defined]
    # weight the outputs so that every output column gets a different gradient
    loss = (out * torch.arange(1, out.shape[1] + 1, dtype=out.dtype)).sin().sum()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return out.detach(), [*grads, x.grad.clone()]


def _compare(model: KAN, x: torch.Tensor, tol: dict, backend: str | None = None) -> None:
    fused_out, fused_grads = _loss_and_grads(model, x)
    if backend is not None:  # the engine asked for ran
        assert _loss_and_grads.last_node == NODES[backend]  # type: ignore[attr-defined]
    with use_engine(Engine.TORCH):
        assert model.forward_engine(x) is Engine.TORCH
        ref_out, ref_grads = _loss_and_grads(model, x)
    torch.testing.assert_close(fused_out, ref_out, **tol)
    assert len(fused_grads) == len(ref_grads)
    for a, b in zip(fused_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
# [20, 17, 2]: layers at or above the native engine's vector-loop threshold (16 inputs) too
@pytest.mark.parametrize("width", [[3, 5, 1], [4, 6, 3], [2, 1], [20, 17, 2]])
def test_network_matches_pytorch_formulation(dtype, width, backend):
    model = KAN(width, grid=5, seed=1, dtype=dtype)
    with torch.no_grad():  # knots that differ per input, inputs partly outside the grid
        for layer in model.layers:
            lo = torch.linspace(-1.5, -0.5, layer.in_dim, dtype=dtype)
            layer.basis.set_range(lo, lo + torch.linspace(1.0, 3.0, layer.in_dim, dtype=dtype))
            layer.mask[0, 0] = 0.0  # a pruned edge
    x = torch.randn(257, width[0], generator=torch.Generator().manual_seed(0), dtype=dtype) * 1.3
    assert model.forward_engine(x) is not Engine.TORCH
    tol = {"atol": 2e-5, "rtol": 2e-5} if dtype == torch.float32 else {}
    _compare(model, x, tol, backend)


@pytest.fixture
def two_threads() -> Iterator[None]:
    """The session runs on one torch thread; the parallel branches need more."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_large_batch_uses_parallel_kernels_and_matches(backend, two_threads):
    model = KAN([8, 16, 2], seed=2, dtype=torch.float64)
    x = torch.randn(4000, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert x.shape[0] * 8 * 9 > cpu_kernels.SERIAL_BELOW  # the multi-threaded branch
    _compare(model, x, {}, backend)


def test_symbolic_edges_take_the_per_layer_path_and_match(backend):
    model = KAN([2, 3, 1], seed=3, dtype=torch.float64)
    model.layers[0].set_symbolic(0, 1, "sin", 2.0, 0.1, 0.5, 0.0)
    x = torch.rand(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert model.forward_engine(x) is Engine.TORCH  # layer 0 has a symbolic edge
    assert layer_engine([model.layers[1]], x) is not Engine.TORCH  # layer 1 still fused
    _compare(model, x, {})


def _gradcheck_network(model: KAN, uniform: bool, backend: str) -> bool:
    """gradcheck of the fused network node (of `backend`) in x and every layer's parameters."""
    layers = list(model.layers)
    x = (torch.rand(11, layers[0].in_dim, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    params = [p for layer in layers for p in (layer.w_base, layer.coef, layer.bias)]

    def f(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        tensors = []
        for i, layer in enumerate(layers):
            tensors += [*ps[3 * i : 3 * i + 3], layer.mask, layer.basis.knots]
        if backend == "native":
            return native.spline_network(x, tensors, [int(uniform)] * len(layers))
        return spline_layer._SplineNetwork.apply(x, (uniform,) * len(layers), *tensors)

    return bool(torch.autograd.gradcheck(f, (x, *params)))


def test_gradcheck_in_float64(backend):
    model = KAN([2, 3, 2], seed=4, dtype=torch.float64)
    assert _gradcheck_network(model, uniform=True, backend=backend)


def _adaptive(model: KAN, seed: int) -> None:
    """Give every layer sorted random (non-uniform) knots, some of them repeated."""
    g = torch.Generator().manual_seed(seed)
    for layer in model.layers:
        n_in, m = layer.basis.knots.shape
        knots = torch.sort(torch.rand(n_in, m, generator=g, dtype=layer.coef.dtype) * 4 - 2)[0]
        knots[:, 5] = knots[:, 4]  # a repeated knot (duplicate percentiles do this)
        layer.basis.set_knots(knots)
        assert not layer.basis._uniform


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adaptive_knots_match_cox_de_boor(dtype, backend):
    model = KAN([3, 5, 2, 1], seed=8, dtype=dtype)
    _adaptive(model, 0)
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(4), dtype=dtype) * 1.2
    assert model.forward_engine(x) is not Engine.TORCH
    tol = {"atol": 2e-5, "rtol": 2e-5} if dtype == torch.float32 else {}
    _compare(model, x, tol, backend)


def test_adaptive_knots_gradcheck_in_float64(backend):
    model = KAN([2, 3, 1], seed=9, dtype=torch.float64)
    _adaptive(model, 1)
    assert _gradcheck_network(model, uniform=False, backend=backend)


def test_inference_and_non_contiguous_input(backend):
    model = KAN([3, 4, 1], seed=5)
    x = torch.randn(3, 50).t()  # a transposed view
    with torch.no_grad():
        fused = model(x)
        with use_engine(Engine.TORCH):
            ref = model(x)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_torch_compile_keeps_the_fused_kernels_and_matches_eager(backend):
    model = KAN([3, 4, 2], seed=6)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(3))
    eager_out, eager_grads = _loss_and_grads(model, x)
    compiled = torch.compile(model, fullgraph=True)  # no graph break: the kernels are ops
    model.zero_grad(set_to_none=True)
    xc = x.clone().requires_grad_()
    out = compiled(xc)
    (out * torch.arange(1, 3)).sin().sum().backward()
    torch.testing.assert_close(out.detach(), eager_out)
    grads = [p.grad for p in model.parameters() if p.grad is not None] + [xc.grad]
    for a, b in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("uniform", [True, False])
def test_custom_operators_pass_opcheck(uniform, backend):
    model = KAN([2, 3, 1], seed=7)
    if not uniform:
        _adaptive(model, 2)
    tensors = []
    for layer in model.layers:
        tensors += [layer.w_base, layer.coef, layer.bias, layer.mask, layer.basis.knots]
    x = torch.randn(10, 2).requires_grad_()
    if backend == "native":
        op = torch.ops.kan_core_native.spline_network.default
        torch.library.opcheck(op, (x, tensors, [int(uniform)] * 2))
    else:
        torch.library.opcheck(spline_layer._network_op, (x, tensors, [uniform] * 2))


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_single_row_batches(rows, backend):
    model = KAN([3, 4, 2], seed=10)
    x = torch.randn(rows, 3).requires_grad_()
    out = model(x)
    out.sum().backward()
    assert out.shape == (rows, 2) and x.grad is not None and x.grad.shape == (rows, 3)
    with use_engine(Engine.TORCH):
        torch.testing.assert_close(model(x), out)
