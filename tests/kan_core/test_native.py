"""kan_core.native: the C++ operators' own behaviour (threads, BLAS, wide layers, validation) and
what happens where they cannot be built. Values against the PyTorch formulation for every
engine are in test_spline_layer.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from kan_core import native
from kan_core.engine import Engine, use_engine
from kan_core.model import KAN

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _require_native() -> None:
    assert native.available(), f"native operators unavailable: {native.unavailable_reason()}"


def _tensors(model: KAN) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for layer in model.layers:
        out += [layer.w_base, layer.coef, layer.bias, layer.numeric_mask(), layer.basis.knots]
    return out


def _run(model: KAN, x: torch.Tensor) -> list[torch.Tensor]:
    """Output, ∂L/∂x and the parameter gradients of a fixed loss, through the native node."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = model(x)
    assert type(out.grad_fn).__name__ == "_NativeSplineNetworkBackward"
    (out * torch.arange(1, out.shape[1] + 1, dtype=out.dtype)).sin().sum().backward()
    return [out.detach(), x.grad, *(p.grad for p in model.parameters() if p.grad is not None)]


@pytest.fixture
def threads() -> Iterator[Callable[[int], None]]:
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_results_are_deterministic_and_do_not_depend_on_the_thread_count(threads):
    model = KAN([6, 20, 3], seed=11)
    x = torch.randn(5000, 6, generator=torch.Generator().manual_seed(5))
    threads(1)
    one = _run(model, x)
    threads(2)
    two, again = _run(model, x), _run(model, x)
    for a, b, c in zip(one, two, again, strict=True):
        assert torch.equal(b, c)  # same thread count: bit-identical
        # the weight gradients are summed per thread, so only the rounding may differ
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_aten_matmul_fallback_equals_the_blas_path():
    model = KAN([5, 9, 2], seed=12, dtype=torch.float64)
    x = torch.randn(700, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.ops.kan_core_native.has_blas()  # this machine's PyTorch links MKL
    with_blas = _run(model, x)
    previous = torch.ops.kan_core_native.use_blas(False)
    try:
        without = _run(model, x)
    finally:
        torch.ops.kan_core_native.use_blas(previous)
    for a, b in zip(with_blas, without, strict=True):
        torch.testing.assert_close(a, b)


def test_small_batches_keep_blas_on_the_calling_thread_and_restore_its_setting(threads):
    """A batch too small to split runs outside any parallel region, where MKL would start its
    own thread team for each small GEMM; the operators hold the caller's MKL threads at 1 for
    the call and then give it back its own setting."""
    import ctypes

    mkl = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    threads(2)
    model = KAN([3, 4, 1], seed=13)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(7))
    before = mkl.MKL_Get_Max_Threads()
    assert before == 2
    _run(model, x)
    assert mkl.MKL_Get_Max_Threads() == before
    previous = mkl.MKL_Set_Num_Threads_Local(1)  # a caller with a thread-local setting of its own
    try:
        _run(model, x)
        assert mkl.MKL_Get_Max_Threads() == 1
    finally:
        mkl.MKL_Set_Num_Threads_Local(previous)
    assert mkl.MKL_Get_Max_Threads() == before


def test_wide_layers_match_the_pytorch_formulation():
    """More inputs than the kernels' inner block (256) and a non-default grid size."""
    model = KAN([300, 7, 4], grid=7, seed=13, dtype=torch.float64)
    with torch.no_grad():
        model.layers[0].mask[:, ::3] = 0.0
    x = torch.randn(90, 300, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    fast = _run(model, x)
    with use_engine(Engine.TORCH):
        model.zero_grad(set_to_none=True)
        xr = x.clone().requires_grad_()
        out = model(xr)
        (out * torch.arange(1, 5, dtype=out.dtype)).sin().sum().backward()
        ref = [out.detach(), xr.grad, *(p.grad for p in model.parameters() if p.grad is not None)]
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_forward_shape_and_dtype_errors_are_clear():
    model = KAN([3, 2], seed=14)
    tensors = [t.detach() for t in _tensors(model)]
    op = torch.ops.kan_core_native.spline_network
    with pytest.raises(RuntimeError, match="expects 3 inputs, gets 4"):
        op(torch.randn(5, 4), tensors, [1])
    with pytest.raises(RuntimeError, match="x's dtype"):
        op(torch.randn(5, 3, dtype=torch.float64), tensors, [1])
    with pytest.raises(RuntimeError, match="one uniform flag per layer"):
        op(torch.randn(5, 3), tensors, [1, 1])


def test_state_buffer_size_matches_the_fake_kernel():
    model = KAN([4, 6, 5, 1], seed=15)
    x = torch.randn(33, 4)
    tensors = [t.detach() for t in _tensors(model)]
    y, state = torch.ops.kan_core_native.spline_network(x, tensors, [1, 1, 1])
    assert y.shape == (33, 1)
    assert state.numel() == native.state_size(33, tensors)


def test_build_name_covers_source_flags_and_torch():
    name = native.build_name()
    assert name.startswith("kan_core_native_") and name == native.build_name()
    flags = native.compile_flags()
    assert "-fopenmp" in flags and any(f.startswith("-march=x86-64") for f in flags)


_CHILD = textwrap.dedent(
    """
    import json, sys, time, torch
    from kan_core import native
    from kan_core.model import KAN
    start = time.perf_counter()
    ok = native.available()
    model = KAN([2, 3, 1], seed=0)
    y = model(torch.rand(4, 2, requires_grad=True))
    y.sum().backward()
    print(json.dumps({"ok": ok, "reason": native.unavailable_reason(),
                      "node": type(y.grad_fn).__name__, "finite": bool(torch.isfinite(y).all()),
                      "seconds": time.perf_counter() - start}))
    """
)


def _child(tmp_path: Path, **env: str) -> dict:
    full = {**os.environ, "KAN_CORE_NATIVE_DIR": str(tmp_path), **env}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=full, cwd=REPO, capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_without_a_compiler_the_numba_kernels_take_over_and_nobody_retries(tmp_path):
    first = _child(tmp_path, CXX="/nonexistent/c++")
    assert not first["ok"] and first["reason"]
    assert first["node"] == "_SplineNetworkBackward" and first["finite"]  # the numba engine
    markers = list(tmp_path.glob("*.failed"))
    assert len(markers) == 1 and markers[0].read_text()
    second = _child(tmp_path, CXX="/nonexistent/c++")
    assert not second["ok"] and "an earlier build failed" in second["reason"]
    assert str(markers[0]) in second["reason"]  # says how to retry


@pytest.mark.slow
def test_switched_off_by_the_environment(tmp_path):
    result = _child(tmp_path, KAN_CORE_NATIVE="0")
    assert not result["ok"] and "KAN_CORE_NATIVE=0" in result["reason"]
    assert result["node"] == "_SplineNetworkBackward"
    assert not any(tmp_path.iterdir())  # nothing built


@pytest.mark.slow
def test_a_fresh_cache_is_built_once_by_concurrent_processes_despite_a_stale_lock(tmp_path):
    """Two processes start on an empty cache in which a killed build left PyTorch's lock file:
    one builds, the other waits for it, both end up on the native operators."""
    stale = tmp_path / native.build_name() / "lock"
    stale.parent.mkdir()
    stale.touch()
    env = {**os.environ, "KAN_CORE_NATIVE_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD], env=env, cwd=REPO, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["ok"] and r["node"] == "_NativeSplineNetworkBackward" for r in results), results
    assert len(list(tmp_path.glob("*/*.so"))) == 1 and not stale.exists()
    loaded = _child(tmp_path)  # a later process loads the library without building
    assert loaded["ok"] and loaded["seconds"] < min(r["seconds"] for r in results)


def test_backward_checks_its_gradient_and_state():
    model = KAN([3, 4, 2], seed=16)
    tensors = [t.detach() for t in _tensors(model)]
    x = torch.randn(6, 3)
    y, state = torch.ops.kan_core_native.spline_network(x, tensors, [1, 1])
    backward = torch.ops.kan_core_native.spline_network_backward
    with pytest.raises(RuntimeError, match="must be \\(batch, out\\)"):
        backward(torch.ones(6, 3), x, tensors, state, [1, 1], True)
    with pytest.raises(RuntimeError, match="state does not belong"):
        backward(torch.ones(5, 2), x[:5], tensors, state, [1, 1], True)
