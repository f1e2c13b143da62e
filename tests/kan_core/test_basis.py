import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from kan_core import cpu_kernels
from kan_core.basis import (
    BASES,
    BSplineBasis,
    CubicBSplineUniform,
    bspline_basis_cox_de_boor,
    cardinal_bspline,
    make_basis,
)
from kan_core.engine import Engine, use_engine
from kan_core.errors import ConfigError


def scipy_basis(knots: np.ndarray, k: int, x: np.ndarray) -> np.ndarray:
    n = len(knots) - k - 1
    cols = []
    for m in range(n):
        c = np.zeros(n)
        c[m] = 1.0
        cols.append(BSpline(knots, c, k, extrapolate=False)(x))
    return np.nan_to_num(np.stack(cols, -1))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cox_de_boor_matches_scipy_on_random_knots(k, seed):
    rng = np.random.default_rng(seed)
    knots = np.sort(rng.uniform(-2, 2, size=12))
    x = rng.uniform(knots[k], knots[-k - 1] - 1e-9, size=300)
    ours = bspline_basis_cox_de_boor(torch.tensor(x)[:, None], torch.tensor(knots)[None, :], k)[
        :, 0, :
    ].numpy()
    np.testing.assert_allclose(ours, scipy_basis(knots, k, x), atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_uniform_fast_path_matches_scipy(k):
    basis = BSplineBasis(in_dim=3, grid=7, k=k, grid_range=(-1.5, 2.0)).double()
    x = torch.linspace(-1.5, 1.999, 401, dtype=torch.float64)[:, None].repeat(1, 3)
    ours = basis(x)[:, 1, :].numpy()
    ref = scipy_basis(basis.knots[1].numpy(), k, x[:, 1].numpy())
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_adaptive_knots_take_cox_de_boor_path_and_match_scipy():
    basis = BSplineBasis(in_dim=1, grid=5, k=3, grid_range=(-1, 1)).double()
    knots = torch.tensor(
        [[-3.0, -2.2, -1.9, -1.0, -0.3, 0.1, 0.2, 0.9, 1.5, 2.5, 3.0, 3.3]], dtype=torch.float64
    )
    basis.set_knots(knots)
    assert not basis._uniform
    x = torch.linspace(-1.0, 0.899, 200, dtype=torch.float64)[:, None]
    np.testing.assert_allclose(
        basis(x)[:, 0].numpy(), scipy_basis(knots[0].numpy(), 3, x[:, 0].numpy()), atol=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adaptive_knot_kernels_match_cox_de_boor_and_scipy(seed):
    """The numba de Boor path (CPU) against the torch Cox–de Boor recursion and scipy, with a
    repeated knot and inputs on both sides of the knot range."""
    rng = np.random.default_rng(seed)
    knots = np.sort(rng.uniform(-2, 2, size=(3, 12)), axis=1)
    knots[:, 6] = knots[:, 5]
    basis = BSplineBasis(in_dim=3, grid=5, k=3, grid_range=(-1, 1)).double()
    basis.set_knots(torch.tensor(knots))
    x = torch.tensor(rng.uniform(-2.5, 2.5, size=(400, 3))).requires_grad_()
    fast = basis(x)
    fast.pow(2).sum().backward()
    fast_grad = x.grad.clone()
    x.grad = None
    with use_engine(Engine.TORCH):
        ref = basis(x)
        ref.pow(2).sum().backward()
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(fast_grad, x.grad)
    for i in range(3):
        inside = (x[:, i] >= knots[i, 3]) & (x[:, i] < knots[i, -4])
        xi = x[inside, i].detach().numpy()
        np.testing.assert_allclose(
            fast[inside, i].detach().numpy(), scipy_basis(knots[i], 3, xi), atol=1e-12
        )
    assert cpu_kernels.available()
    xg = (torch.rand(12, 3, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: basis(v).sum(-1), (xg,))


@pytest.mark.parametrize("numba", [False, True])
def test_cubic_fast_path_equals_reference_values_and_gradients(numba):
    torch.manual_seed(0)
    t0 = torch.tensor([-2.0, -1.3], dtype=torch.float64)
    inv_h = torch.tensor([2.5, 1.7], dtype=torch.float64)
    x = (torch.rand(64, 2, dtype=torch.float64) * 4 - 2).requires_grad_()
    fast = CubicBSplineUniform.apply(x, t0, inv_h, 8, numba) / 6.0
    u = ((x - t0) * inv_h).unsqueeze(-1) - (torch.arange(8, dtype=torch.float64) + 2.0)
    ref = cardinal_bspline(u, 3)
    torch.testing.assert_close(fast, ref)
    w = torch.randn_like(ref)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(g_fast, g_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_cpu_kernels_equal_the_torch_ops(dtype):
    assert cpu_kernels.available(), "numba kernels should load on this machine"
    g = torch.Generator().manual_seed(4)
    # inputs inside, outside and exactly on knots of a grid with different ranges per input
    t0 = torch.tensor([-2.2, -0.7, 0.0], dtype=dtype)
    inv_h = torch.tensor([1.25, 4.0, 2.0], dtype=dtype)
    x = torch.randn(257, 3, generator=g, dtype=dtype) * 2
    x[:5] = t0 + torch.arange(5, dtype=dtype)[:, None] / inv_h
    w = torch.randn(257, 3, 9, generator=g, dtype=dtype)
    results = []
    for fused in (True, False):
        xr = x.clone().requires_grad_()
        out = CubicBSplineUniform.apply(xr, t0, inv_h, 9, fused)
        (grad,) = torch.autograd.grad((out * w).sum(), xr)
        results.append((out.detach(), grad))
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    torch.testing.assert_close(results[0][1], results[1][1], **tol)


def test_cubic_fast_path_gradcheck():
    t0 = torch.tensor([-2.0], dtype=torch.float64)
    inv_h = torch.tensor([2.5], dtype=torch.float64)
    x = (torch.rand(16, 1, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    for numba in (True, False):
        fast = lambda v, numba=numba: CubicBSplineUniform.apply(v, t0, inv_h, 8, numba)  # noqa: E731
        assert torch.autograd.gradcheck(fast, (x,))


@pytest.mark.parametrize("name", sorted(BASES))
def test_every_basis_gradcheck_in_float64(name):
    basis = make_basis(name, in_dim=2, grid=4, k=3).double()
    x = (torch.rand(12, 2, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: basis(v).sum(-1), (x,))


def test_unknown_basis_lists_options():
    with pytest.raises(ConfigError, match="Available bases"):
        make_basis("wavelet", 2, 5, 3)


@pytest.mark.parametrize("grid,k", [(0, 3), (5, 0), (5, 9)])
def test_bad_grid_or_order_rejected(grid, k):
    with pytest.raises(ConfigError):
        make_basis("bspline", 2, grid, k)
