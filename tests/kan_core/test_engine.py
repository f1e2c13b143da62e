"""kan_core.engine: one choice of engine per fit, named truthfully, scoped to the caller's thread,
and no process-wide side effects. (Each engine's values and gradients against the PyTorch
reference: test_basis, test_spline_layer, test_native, test_fused.)"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch

from kan_core import cpu_kernels, native
from kan_core.engine import Engine, enabled, select_engine, use_engine
from kan_core.errors import ConfigError
from kan_core.grid import update_grid
from kan_core.model import KAN, MLP
from kan_core.train import FitConfig, FitProgress, TrainData, fit

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="numba kernels unavailable")

# the autograd node a KAN's forward leaves under each layer engine
NODES = {"native": "_NativeSplineNetworkBackward", "numba": "_SplineNetworkBackward"}


def _data(n: int = 64) -> TrainData:
    x = torch.rand(n, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return TrainData(x, (x[:, :1] * x[:, 1:]).exp())


@pytest.mark.parametrize("engine", ["native", "numba", "torch"])
def test_the_engine_named_is_the_one_that_computes_the_forward_pass(engine: str) -> None:
    if engine == "native" and not native.available():
        pytest.skip(native.unavailable_reason())
    data, model = _data(), KAN([2, 3, 1], seed=1)
    seen: list[str] = []

    def callback(_: FitProgress) -> None:  # runs inside fit, on fit's thread
        seen.append(type(model(data.x_train.requires_grad_(False)).grad_fn).__name__)

    result = fit(model, data, FitConfig(steps=2, engine=engine), callback)
    assert result.engine == engine and result.engine_reason == "asked for"
    assert set(seen) == {NODES.get(engine, "AddBackward0")}
    # outside fit the default engine is back
    default = NODES["native" if native.available() else "numba"]
    assert type(model(data.x_train).grad_fn).__name__ == default


def test_auto_picks_the_fastest_engine_that_applies_and_says_why_not_the_others() -> None:
    data = _data()
    choice = select_engine(KAN([2, 3, 1]), data.x_train, data.y_train, FitConfig(), 64)
    assert choice.engine is Engine.FUSED_CPU
    choice = select_engine(KAN([2, 3, 1]), data.x_train, data.y_train, FitConfig(lamb=0.1), 64)
    assert choice.engine is Engine.NUMBA
    assert "not fused-cpu: a sparsity penalty" in choice.reason
    assert "not native: a sparsity penalty" in choice.reason
    choice = select_engine(MLP([2, 3, 1]), data.x_train, data.y_train, FitConfig(), 64)
    assert choice.engine is Engine.TORCH and "not a KAN" in choice.reason
    with use_engine(Engine.TORCH):
        choice = select_engine(KAN([2, 3, 1]), data.x_train, data.y_train, FitConfig(), 64)
        assert choice.engine is Engine.TORCH


def test_an_engine_that_cannot_run_the_job_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="engine 'fused-cpu' cannot train this job: not a KAN"):
        fit(MLP([2, 3, 1]), _data(), FitConfig(steps=1, engine="fused-cpu"))
    with pytest.raises(ConfigError, match="engine 'native' cannot .*sparsity penalty"):
        fit(KAN([2, 3, 1]), _data(), FitConfig(steps=1, engine="native", lamb=0.1))
    with pytest.raises(ConfigError, match="Unknown engine 'cuda-magic'. Available: \\['auto'"):
        fit(KAN([2, 3, 1]), _data(), FitConfig(steps=1, engine="cuda-magic"))


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_parameters_are_ordinary_tensors_after_a_fused_fit(optimizer: str) -> None:
    model = KAN([2, 3, 1], seed=2)
    result = fit(model, _data(), FitConfig(steps=3, optimizer=optimizer))  # type: ignore[arg-type]
    assert result.engine == "fused-cpu"
    storages = set()
    for p in model.parameters():  # each its own storage, of its own size, as before fit
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size()
        storages.add(p.untyped_storage().data_ptr())
    assert len(storages) == len(list(model.parameters()))


def test_disabling_kernels_in_one_thread_leaves_the_others_alone() -> None:
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def worker() -> None:
        with use_engine(Engine.TORCH):
            seen["worker"] = enabled(Engine.NUMBA)
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert inside.wait(10)
        assert enabled(Engine.NUMBA)  # this thread still has the kernels
        assert enabled(Engine.NATIVE) == native.available()
    finally:
        release.set()
        thread.join()
    assert seen["worker"] is False


def test_importing_and_fitting_leave_the_host_process_alone() -> None:
    """No numba threading-layer override, no allocator tuning, no PATH edits,
    kan_core.fused does not import kan_core.train (no import cycle), and importing
    kan_core.train does not load torch._dynamo."""
    code = """
import ctypes, json, os, sys
path = os.environ.get("PATH")
calls = []
import kan_core.fused
fused_imports_train = "kan_core.train" in sys.modules
import numba, torch
from kan_core import cpu_kernels
cpu_kernels.tune_allocator = lambda: calls.append("tune_allocator")
from kan_core.model import KAN
from kan_core.train import FitConfig, TrainData, fit
dynamo_imported = "torch._dynamo" in sys.modules
x = torch.rand(32, 2)
fit(KAN([2, 2, 1]), TrainData(x, x[:, :1]), FitConfig(steps=2))
fit(KAN([2, 2, 1]), TrainData(x, x[:, :1]), FitConfig(steps=2, engine="numba"))
print(json.dumps({"layer": numba.config.THREADING_LAYER, "path": os.environ.get("PATH") == path,
                  "calls": calls, "fused_imports_train": fused_imports_train,
                  "dynamo_imported": dynamo_imported}))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {
        "layer": "default",
        "path": True,
        "calls": [],
        "fused_imports_train": False,
        "dynamo_imported": False,  # kan_core.compile_marks: 1.7 s saved in every process
    }


def test_the_compile_mark_is_the_one_torchs_decorator_sets() -> None:
    """kan_core marks its availability checks constant without importing torch._dynamo; the
    mark must stay what ``torch.compiler.assume_constant_result`` sets."""
    from kan_core import compile_marks, cpu_kernels, engine, native

    def ours() -> bool:
        return True

    def torchs() -> bool:
        return True

    compile_marks.assume_constant_result(ours)
    torch.compiler.assume_constant_result(torchs)
    assert vars(ours) == vars(torchs) == {compile_marks.MARK: True}
    for checked in (cpu_kernels.available, native.available):
        assert getattr(checked, compile_marks.MARK) is True
    assert getattr(engine._allowed, compile_marks.MARK) is True


@pytest.mark.parametrize("lamb", [0.0, 1e-2])
def test_every_engine_trains_to_the_torch_reference_weights(lamb: float) -> None:
    """The same fit (float64, Adam) on each engine that applies ends at the pure-PyTorch
    reference's weights, to float tolerance. lamb 0: uniform grids (every engine applies);
    lamb > 0: adaptive grid updates (numba's de Boor basis kernels, and torch)."""
    x = torch.rand(96, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    data = TrainData(x, x[:, :1].sin() * x[:, 1:2] + x[:, 2:] ** 2)
    if lamb:
        cfg = {"lamb": lamb, "update_grid_every": 3, "grid_eps": 0.5}
        engines = ["numba", "torch"]
    else:
        cfg = {"update_grid_every": 0}
        engines = ["fused-cpu", *(["native"] if native.available() else []), "numba", "torch"]
    weights = {}
    for engine in engines:
        model = KAN([3, 4, 1], seed=5, dtype=torch.float64)
        result = fit(model, data, FitConfig(steps=6, engine=engine, **cfg))  # type: ignore[arg-type]
        assert result.engine == engine
        weights[engine] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for engine in engines[:-1]:
        torch.testing.assert_close(weights[engine], weights["torch"], rtol=1e-7, atol=1e-9)


def test_auto_keeps_the_fastest_kernels_for_grid_updates_and_evaluation() -> None:
    """With lamb > 0 "auto" trains on the numba basis kernels, but forward passes outside the
    step (grid updates, evaluation) keep the native operators, as before the engine seam, so
    results are unchanged; only a named engine narrows them."""
    if not native.available():
        pytest.skip(native.unavailable_reason())
    data, model = _data(), KAN([2, 3, 1], seed=1)
    seen: list[str] = []

    def callback(_: FitProgress) -> None:
        seen.append(type(model(data.x_train).grad_fn).__name__)

    result = fit(model, data, FitConfig(steps=2, lamb=1e-3), callback)
    assert result.engine == "numba" and "not native: a sparsity penalty" in result.engine_reason
    assert set(seen) == {NODES["native"]}


@pytest.mark.parametrize("grid_eps", [1.0, 0.02])
def test_engines_agree_with_torch_on_a_wide_network_over_many_rows_and_threads(
    grid_eps: float,
) -> None:
    """Issue #24 (a [10,32,32,1] Adam fit in float32 ended at different losses on numba and
    torch): the engines follow one arithmetic. In float64, on a shape with 18 inputs (native's
    vector loops) and a hidden width of 32, the forward pass and the gradient agree over enough
    rows for the kernels' multi-threaded branch on two threads, and a fit with grid updates
    ends at the same weights."""
    x = torch.rand(960, 18, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x = x * 2.4 - 1.2  # partly outside the initial grid
    y = (3 * x[:, :1]).sin() + x[:, 1:2] * x[:, 2:3]
    assert x.shape[0] * 18 * 9 > cpu_kernels.SERIAL_BELOW
    engines = [*(["native"] if native.available() else []), "numba", "torch"]
    if grid_eps == 1.0:
        engines.insert(0, "fused-cpu")
    first, weights = {}, {}
    for engine in engines:
        model = KAN([18, 32, 1], seed=4, dtype=torch.float64)
        update_grid(model, x, grid_eps)  # adaptive knots (de Boor) when grid_eps < 1
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if engine == "torch" else 2)  # the kernels' threaded branch
        try:
            with use_engine(Engine.NATIVE if engine == "fused-cpu" else Engine(engine)):
                loss = ((model(x) - y) ** 2).mean()
                loss.backward()
        finally:
            torch.set_num_threads(threads)
        first[engine] = [loss.detach(), *(p.grad for p in model.parameters())]
        model.zero_grad(set_to_none=True)
        cfg = FitConfig(steps=3, engine=engine, update_grid_every=2, grid_eps=grid_eps)
        assert fit(model, TrainData(x[:128], y[:128]), cfg).engine == engine
        weights[engine] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for engine in engines[:-1]:
        for a, b in zip(first[engine], first["torch"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(weights[engine], weights["torch"], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(("basis", "k"), [("rbf", 3), ("af_kan", 3), ("s_kan", 3), ("bspline", 2)])
def test_a_basis_without_a_kernel_form_takes_the_torch_path(basis: str, k: int) -> None:
    data, model = _data(), KAN([2, 3, 1], basis=basis, k=k)
    assert model.forward_engine(data.x_train) is Engine.TORCH
    choice = select_engine(model, data.x_train, data.y_train, FitConfig(), 64)
    assert choice.engine is Engine.TORCH and "a layer without cubic B-splines" in choice.reason
