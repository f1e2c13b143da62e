"""Native (C++) CPU operators for stacks of cubic B-spline KAN layers.

`kan_core/csrc/spline_network.cpp` holds a whole KAN's forward and backward as two operators,
`kan_core_native::spline_network` and `kan_core_native::spline_network_backward`: rows are
processed in cache-sized chunks (features, one small GEMM each, and in backward the weight
gradient, the feature gradient and the input gradient of the chunk), in one parallel loop per
layer on PyTorch's own thread pool. Compared with the numba layer kernels (`cpu_kernels`,
which `spline_layer` falls back to) there is no per-layer Python and no megabyte feature
buffers written to memory and read back.

The library is built once per machine with PyTorch's extension builder (a C++ compiler with
OpenMP, and ninja; 15–25 s) into a cache directory, and loaded from there in later processes
(well under a second). `python -m kan_core.fused` (run by `make setup`, the Docker build,
`kanscope serve` / `worker` start and the test session) does it ahead of time. The build
targets the CPU's x86-64 feature level (v4 with AVX-512, v3 with AVX2/FMA), so a cache moves
between machines of the same level. Where it cannot be built (no compiler) a warning says why
once, a marker file keeps other processes from retrying, and `spline_layer` uses the numba
kernels.

Whether they run for a given call is decided by `kan_core.engine`. Environment:
`KAN_CORE_NATIVE=0` switches the operators off; `KAN_CORE_NATIVE_DIR` chooses the
cache directory (default `$XDG_CACHE_HOME/kan_core/native`, i.e. `~/.cache/kan_core/native`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import platform
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kan_core.compile_marks import assume_constant_result

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "spline_network.cpp"
_state: dict[str, Any] = {"checked": False, "ok": False, "error": ""}
_lock = threading.Lock()

# x86-64 micro-architecture levels (the psABI's), as /proc/cpuinfo names their features
_X86_LEVELS = (
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
    ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _arch_flags() -> list[str]:
    """-march for the highest x86-64 level this CPU has (each level includes the ones below);
    elsewhere the compiler's default target."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    flags, level = _cpu_flags(), "x86-64"
    for name, needs in reversed(_X86_LEVELS):
        if not needs <= flags:
            break
        level = name
    return [f"-march={level}"]


def compile_flags() -> list[str]:
    # -fno-trapping-math lets the compiler turn the spline's selects into vector blends
    return ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", *_arch_flags()]


def build_name() -> str:
    """The library's name: a digest of everything the binary depends on."""
    h = hashlib.sha256(SOURCE.read_bytes())
    for part in (compile_flags(), torch.__version__, sys.version, platform.machine()):
        h.update(repr(part).encode())
    return f"kan_core_native_{h.hexdigest()[:16]}"


def cache_dir() -> Path:
    root = os.environ.get("KAN_CORE_NATIVE_DIR")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "kan_core" / "native"


def _switched_off() -> bool:
    return os.environ.get("KAN_CORE_NATIVE", "1").lower() in ("0", "false", "no", "off")


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """One builder per machine at a time: an flock, which the kernel releases when its holder
    dies (PyTorch's own lock file would make every later build wait forever)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """PyTorch's builder runs `ninja` from PATH; where it is missing, the `ninja` wheel (a
    dependency) ships the binary. PATH is extended for the build only and restored after it
    (the build runs once per machine, under `_lock`)."""
    bin_dir = None
    if shutil.which("ninja") is None:
        with contextlib.suppress(ImportError):
            import ninja  # type: ignore[import-untyped]

            bin_dir = ninja.BIN_DIR
    if bin_dir is None:
        yield
        return
    previous = os.environ.get("PATH")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{previous or ''}"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = previous


def _build_and_load(name: str, directory: Path) -> None:
    from torch.utils import cpp_extension

    library = directory / f"{name}{cpp_extension.LIB_EXT}"
    failed = directory.with_suffix(".failed")
    directory.mkdir(parents=True, exist_ok=True)
    with _build_lock(directory.with_suffix(".lock")):
        if library.exists():  # built before, or by another process while this one waited
            torch.ops.load_library(str(library))
            return
        if failed.exists():
            reason = failed.read_text()[:300]
            raise RuntimeError(f"an earlier build failed (delete {failed} to retry): {reason}")
        (directory / "lock").unlink(missing_ok=True)  # PyTorch's, left by a killed build
        try:
            with _ninja_on_path():
                cpp_extension.load(
                    name=name,
                    sources=[str(SOURCE)],
                    extra_cflags=compile_flags(),
                    extra_ldflags=["-fopenmp"],
                    build_directory=str(directory),
                    is_python_module=False,
                    verbose=False,
                )
        except Exception as exc:
            failed.write_text(f"{type(exc).__name__}: {exc}")
            raise


@assume_constant_result  # torch.compile evaluates it once, outside the graph
def available() -> bool:
    """True when the native operators are loaded (built first if needed; checked once)."""
    if _state["checked"]:
        return bool(_state["ok"])
    with _lock:
        if not _state["checked"]:
            ok = False
            if _switched_off():
                _state["error"] = "switched off by KAN_CORE_NATIVE=0"
            elif not hasattr(torch.ops.kan_core_native, "spline_network"):
                name = build_name()
                try:
                    _build_and_load(name, cache_dir() / name)
                    ok = True
                except Exception as exc:  # no compiler, no OpenMP, read-only cache, …
                    _state["error"] = f"{type(exc).__name__}: {exc}".strip()[:500]
                    log.warning(
                        "kan_core: native CPU operators unavailable, using the numba kernels "
                        "instead (%s)", _state["error"],
                    )  # fmt: skip
            else:
                ok = True
            if ok:
                _register_python_parts()
            _state["ok"], _state["checked"] = ok, True
    return bool(_state["ok"])


def unavailable_reason() -> str:
    """Why `available()` is False ("" when it is True or not yet checked)."""
    return str(_state["error"])


# ---- the operators from Python ------------------------------------------------------------------


def state_size(n: int, tensors: Sequence[Tensor]) -> int:
    """Values in the state buffer `spline_network` returns: per layer sigmoid(a) (n, in) and the
    weights (out, K+1, in), and for every layer but the last its output (n, out)."""
    total, n_layers = 0, len(tensors) // 5
    for layer in range(n_layers):
        n_out, n_in, n_feat = tensors[5 * layer + 1].shape
        total += n * n_in + n_out * (n_feat + 1) * n_in
        if layer + 1 < n_layers:
            total += n * n_out
    return total


def per_tensor(grads: Sequence[Tensor | None], n_tensors: int) -> list[Tensor | None]:
    """Layer gradients laid out like the (w_base, coef, bias, mask, knots) inputs. Shared with
    `spline_layer`'s numba engine, whose operators have the same signatures."""
    out: list[Tensor | None] = []
    for layer in range(n_tensors // 5):
        out += [*grads[1 + 3 * layer : 4 + 3 * layer], None, None]  # no mask/knot gradients
    return out


def gradients_like(x: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """What a network backward operator returns, as empty tensors (its fake kernel): the input
    gradient, then per layer (w_base, coef, bias)."""
    out = [torch.empty_like(x)]
    for i in range(0, len(tensors), 5):
        out += [torch.empty_like(t) for t in tensors[i : i + 3]]
    return out


def register_network_autograd(forward_op: Any, backward_op: Callable[..., Any]) -> None:
    """Autograd for a network forward operator (x, tensors, uniform) -> (y, state) whose
    backward operator is (g, x, tensors, state, uniform, need_x) -> `gradients_like`. Shared
    with `spline_layer`'s numba engine, whose operators have the same signatures."""

    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
        x, tensors, uniform = inputs
        ctx.save_for_backward(x, output[1], *tensors)
        ctx.uniform = uniform

    def backward(ctx, g, _g_state):  # type: ignore[no-untyped-def]
        x, state, *tensors = ctx.saved_tensors
        need_x = bool(ctx.needs_input_grad[0])
        grads = backward_op(g, x, tensors, state, ctx.uniform, need_x)
        return (grads[0] if need_x else None), per_tensor(grads, len(tensors)), None

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


def _register_python_parts() -> None:
    """Fake (meta) kernels for torch.compile and the autograd formula, once per process."""
    if getattr(_register_python_parts, "done", False):
        return

    @torch.library.register_fake("kan_core_native::spline_network")
    def _forward_fake(x, params, uniform):  # type: ignore[no-untyped-def]
        out = x.new_empty(x.shape[0], params[-4].shape[0])
        return out, x.new_empty(state_size(x.shape[0], params))

    @torch.library.register_fake("kan_core_native::spline_network_backward")
    def _backward_fake(g, x, params, state, uniform, need_x):  # type: ignore[no-untyped-def]
        return gradients_like(x, params)

    register_network_autograd(
        "kan_core_native::spline_network", torch.ops.kan_core_native.spline_network_backward
    )
    _register_python_parts.done = True  # type: ignore[attr-defined]


class _NativeSplineNetwork(torch.autograd.Function):
    """Eager form: the same operators without the dispatcher's Python autograd layer."""

    @staticmethod
    def forward(ctx, x, uniform, *params):  # type: ignore[override]
        y, state = torch.ops.kan_core_native.spline_network(x, list(params), uniform)
        ctx.save_for_backward(x, state, *params)
        ctx.uniform = uniform
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable  # no double backward
    def backward(ctx, g):  # type: ignore[override]
        x, state, *params = ctx.saved_tensors
        need_x = bool(ctx.needs_input_grad[0])
        grads = torch.ops.kan_core_native.spline_network_backward(
            g, x, params, state, ctx.uniform, need_x
        )
        return (grads[0] if need_x else None), None, *per_tensor(grads, len(params))


def spline_network(x: Tensor, tensors: list[Tensor], uniform: list[int]) -> Tensor:
    """The layers given as (w_base, coef, bias, mask, knots) each, applied in turn to x (2-D,
    CPU, float32/float64, every tensor in x's dtype), with `uniform[l]` 1 when layer l's knots
    are uniform. Differentiable in x, w_base, coef and bias. Needs `available()`."""
    tensors = [t.to(dtype=x.dtype).contiguous() for t in tensors]
    if torch.compiler.is_compiling():
        y: Tensor = torch.ops.kan_core_native.spline_network(x, tensors, uniform)[0]
        return y
    y = _NativeSplineNetwork.apply(x, uniform, *tensors)
    return y


def warm_up() -> bool:
    """Build (first time on a machine) or load the library and run it once; True when usable."""
    if not available():
        return False
    x = torch.linspace(-1, 1, 6).reshape(3, 2).requires_grad_()
    params = [torch.ones(1, 2), torch.ones(1, 2, 4), torch.zeros(1), torch.ones(1, 2)]
    knots = torch.linspace(-2, 2, 8).expand(2, 8).contiguous()
    spline_network(x, [*params, knots], [1]).sum().backward()
    return x.grad is not None and math.isfinite(float(x.grad.sum()))
