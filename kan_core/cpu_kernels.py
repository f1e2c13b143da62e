"""Fused CPU kernels (numba) for the uniform cubic B-spline basis.

PyTorch builds the `(batch, in, K)` basis from about a dozen elementwise kernels forward and six
backward, each a full pass over memory; these loops do it in one pass each way. They compute the
same branch-free centred form as `basis.cardinal_bspline` (exactly Cox–de Boor on a uniform grid)
and return SIX times the basis, as `basis.CubicBSplineUniform` does.

numba is optional at run time: `available()` is False when it cannot be imported or no
thread-safe threading layer loads, and callers then use the PyTorch path. Compiled code is cached
on disk (`cache=True`), so only the first process on a machine pays the ~2 s compile.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

_state: dict[str, Any] = {"checked": False, "ok": False, "disabled": False}
_lock = threading.Lock()
SERIAL_BELOW = 1 << 17  # batch × in × K values: below this the kernels use one thread

try:  # pragma: no cover - exercised implicitly
    import numba
    from numba import njit, prange

    _HAVE_NUMBA = os.environ.get("KAN_CORE_DISABLE_NUMBA", "") not in ("1", "true", "yes")
except ImportError:  # pragma: no cover
    _HAVE_NUMBA = False


if _HAVE_NUMBA:
    # the API server calls models from several threads: only thread-safe layers (tbb, omp)
    numba.config.THREADING_LAYER = "threadsafe"  # type: ignore[attr-defined]

    @njit(parallel=True, cache=True, nogil=True)
    def _basis6_fwd(x, t0, inv_h, centres, out):  # pragma: no cover - compiled
        # centres = [2, 3, …, K + 1] in x's dtype: basis m is centred 2 + m knot spacings in
        batch, n_in = x.shape
        n_feat = out.shape[2]
        one, two, four = x.dtype.type(1.0), x.dtype.type(2.0), x.dtype.type(4.0)
        zero = x.dtype.type(0.0)
        for b in prange(batch):
            for i in range(n_in):
                u = (x[b, i] - t0[i]) * inv_h[i]
                for m in range(n_feat):
                    a = abs(u - centres[m])
                    r1 = max(one - a, zero)
                    r2 = max(two - a, zero)
                    out[b, i, m] = r2 * r2 * r2 - four * (r1 * r1 * r1)
        return out

    @njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def _basis6_bwd(x, t0, inv_h, centres, grad, out):  # pragma: no cover - compiled
        # d(6B)/du = -3·sign(d)·(r2² - 4 r1²) with d = u - centre;  du/dx = inv_h
        batch, n_in = x.shape
        n_feat = grad.shape[2]
        one, two, four = x.dtype.type(1.0), x.dtype.type(2.0), x.dtype.type(4.0)
        zero, minus3 = x.dtype.type(0.0), x.dtype.type(-3.0)
        for b in prange(batch):
            for i in range(n_in):
                u = (x[b, i] - t0[i]) * inv_h[i]
                acc = zero
                for m in range(n_feat):
                    d = u - centres[m]
                    a = abs(d)
                    r1 = max(one - a, zero)
                    r2 = max(two - a, zero)
                    acc += grad[b, i, m] * np.copysign(r2 * r2 - four * (r1 * r1), d)
                out[b, i] = acc * minus3 * inv_h[i]
        return out


def available() -> bool:
    """True when the numba kernels can run here (checked once, by running them)."""
    if _state["checked"]:
        return bool(_state["ok"])
    with _lock:
        if not _state["checked"]:
            ok = False
            if _HAVE_NUMBA:
                try:
                    x = np.zeros((2, 1), np.float32)
                    p = np.zeros(1, np.float32)
                    c = np.arange(4, dtype=np.float32) + 2
                    _basis6_fwd(x, p, p + 1, c, np.empty((2, 1, 4), np.float32))
                    ok = True
                except Exception:  # no threading layer, no compiler support, …
                    ok = False
            _state["ok"], _state["checked"] = ok, True
    return bool(_state["ok"])


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Use the PyTorch ops inside this block (tests and benchmarks compare both paths)."""
    previous, _state["disabled"] = _state["disabled"], True
    try:
        yield
    finally:
        _state["disabled"] = previous


def enabled() -> bool:
    """Available and not switched off by `disabled()`."""
    return not _state["disabled"] and available()


def usable_for(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.compiler.is_compiling()
        and enabled()
    )


def _sync_threads(work: int) -> None:
    # small calls run on the calling thread: waking a second thread costs more than it saves,
    # and on a busy machine a parallel region waits for a time slice on every core it uses
    n = 1 if work < SERIAL_BELOW else torch.get_num_threads()
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _centres(n: int, dtype: torch.dtype) -> np.ndarray:
    return np.arange(2, n + 2, dtype=np.float32 if dtype == torch.float32 else np.float64)


def basis6_forward(
    x: torch.Tensor, t0: torch.Tensor, inv_h: torch.Tensor, num_features: int
) -> torch.Tensor:
    """6·B_m(x): x (batch, in), t0/inv_h (in,) → (batch, in, num_features)."""
    _sync_threads(x.numel() * num_features)
    out = torch.empty(x.shape[0], x.shape[1], num_features, dtype=x.dtype)
    c = _centres(num_features, x.dtype)
    _basis6_fwd(_np(x), _np(t0.to(x.dtype)), _np(inv_h.to(x.dtype)), c, out.numpy())
    return out


def basis6_backward(
    x: torch.Tensor, t0: torch.Tensor, inv_h: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """∂L/∂x (batch, in) from ∂L/∂(6B) (batch, in, K)."""
    _sync_threads(grad.numel())
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    c = _centres(grad.shape[2], x.dtype)
    _basis6_bwd(_np(x), _np(t0.to(x.dtype)), _np(inv_h.to(x.dtype)), c, _np(grad), out.numpy())
    return out
