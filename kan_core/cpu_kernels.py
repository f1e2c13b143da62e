"""Fused CPU kernels (numba) for cubic B-spline KANs.

- The basis alone, `(batch, in, K)`: on a uniform grid the branch-free centred form of
  `basis.cardinal_bspline` (exactly Cox–de Boor), returned as SIX times the basis as
  `basis.CubicBSplineUniform` expects; on adaptive knots de Boor's scheme for the four nonzero
  B-splines (`basis.CubicBSplineKnots`). PyTorch needs about a dozen elementwise kernels
  forward and six backward for the uniform form, each a full pass over memory; these loops do
  it in one pass each way.
- A whole layer for `kan_core.spline_layer`: features [silu(x); basis] laid out
  (batch, K+1, in) with the weight assembly, the input gradient and the parameter-gradient
  split. These wrappers take numpy arrays.

numba is optional at run time: `available()` is False when it cannot be imported, or when the
threading layer numba picked is not thread-safe (`workqueue`: the API serves models from several
threads), and callers then use the PyTorch path. The library leaves numba's configuration to the
host (`NUMBA_THREADING_LAYER`). Compiled code is cached on disk (`cache=True`), so only the first
process on a machine pays the compile (10–20 s). Whether these kernels run for a given call is
decided by `kan_core.engine` (availability here, and the caller's `use_engine` scope).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from typing import Any

import numpy as np
import torch

from kan_core.compile_marks import assume_constant_result

_state: dict[str, Any] = {"checked": False, "ok": False, "reason": ""}
_lock = threading.Lock()
SERIAL_BELOW = 1 << 17  # batch × in × K values: below this the kernels use one thread
ROWS = 64  # rows per parallel chunk in the layer kernels

try:  # pragma: no cover - exercised implicitly
    import numba
    from numba import njit, prange

    _HAVE_NUMBA = os.environ.get("KAN_CORE_DISABLE_NUMBA", "") not in ("1", "true", "yes")
except ImportError:  # pragma: no cover
    _HAVE_NUMBA = False


if _HAVE_NUMBA:
    # The uniform cubic B-spline in centred form, d = u - centre (knot spacings), as
    # `basis.b6` / `basis.db6_over_minus3` (and C++'s `b6`), the one numba form (the layer,
    # basis and `kan_core.fused` kernels all call these): 6·B(d) = relu(2-|d|)³ -
    # 4·relu(1-|d|)³ and d(6B)/dd = -3·sign(d)·(relu(2-|d|)² - 4·relu(1-|d|)²). `one` is 1 in
    # the arrays' dtype (keeps float32 loops in float32).

    @njit(cache=True, nogil=True, inline="always")
    def b6(d, one):  # pragma: no cover - compiled
        a = abs(d)
        r1 = max(one - a, one - one)
        r2 = max(one + one - a, one - one)
        return r2 * r2 * r2 - (one + one + one + one) * (r1 * r1 * r1)

    @njit(cache=True, nogil=True, inline="always")
    def db6_over_minus3(d, one):  # pragma: no cover - compiled
        # d(6B)/dd divided by -3 (callers fold the -3 into one multiply per input)
        a = abs(d)
        r1 = max(one - a, one - one)
        r2 = max(one + one - a, one - one)
        return np.copysign(r2 * r2 - (one + one + one + one) * (r1 * r1), d)

    @njit(parallel=True, cache=True, nogil=True)
    def _basis6_fwd(x, t0, inv_h, centres, out):  # pragma: no cover - compiled
        # centres = [2, 3, …, K + 1] in x's dtype: basis m is centred 2 + m knot spacings in
        batch, n_in = x.shape
        n_feat = out.shape[2]
        one = x.dtype.type(1.0)
        for b in prange(batch):
            for i in range(n_in):
                u = (x[b, i] - t0[i]) * inv_h[i]
                for m in range(n_feat):
                    out[b, i, m] = b6(u - centres[m], one)
        return out

    @njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def _basis6_bwd(x, t0, inv_h, centres, grad, out):  # pragma: no cover - compiled
        # du/dx = inv_h
        batch, n_in = x.shape
        n_feat = grad.shape[2]
        one, zero, minus3 = x.dtype.type(1.0), x.dtype.type(0.0), x.dtype.type(-3.0)
        for b in prange(batch):
            for i in range(n_in):
                u = (x[b, i] - t0[i]) * inv_h[i]
                acc = zero
                for m in range(n_feat):
                    acc += grad[b, i, m] * db6_over_minus3(u - centres[m], one)
                out[b, i] = acc * minus3 * inv_h[i]
        return out

    # ---- whole spline layer: features [silu(x), 6·B_0(x), …, 6·B_{K-1}(x)] ------------------
    # Rows are feature-major, (batch, K+1, in): for one row and one feature the inputs are
    # contiguous, so the inner loops run over inputs with SIMD. The layer's GEMMs do not care
    # in which order a row's columns come, as long as the weights (out, K+1, in) match.
    # `sig` is sigmoid(x), computed by PyTorch (vectorised exp); knots (in, M) is the layer's
    # uniform knot buffer. Everything a layer needs besides its BLAS products is in these
    # kernels, so a layer is one kernel call forward and two backward.

    @njit(cache=True, nogil=True)
    def _grid_of(knots):  # pragma: no cover - compiled
        # first knot and inverse spacing per input
        n_in = knots.shape[0]
        t0 = np.empty(n_in, knots.dtype)
        inv_h = np.empty(n_in, knots.dtype)
        for i in range(n_in):
            t0[i] = knots[i, 0]
            inv_h[i] = knots.dtype.type(1.0) / (knots[i, 1] - knots[i, 0])
        return t0, inv_h

    @njit(cache=True, nogil=True)
    def _assemble_weights(w_base, coef, mask, scale, w):  # pragma: no cover - compiled
        # w[j] = [w_base·mask; coef·mask·scale] (out, K+1, in)
        n_out, n_in, n_feat = coef.shape
        for j in range(n_out):
            for i in range(n_in):
                mk = mask[j, i]
                w[j, 0, i] = w_base[j, i] * mk
                for m in range(n_feat):
                    w[j, m + 1, i] = coef[j, i, m] * (mk * scale)

    @njit(parallel=True, cache=True, nogil=True)
    def _layer_fwd(x, sig, knots, w_base, coef, mask, centres, feats, w):  # pragma: no cover
        # w[j] = [w_base·mask; coef·mask/6] (out, K+1, in); feats (batch, K+1, in)
        batch, n_in = x.shape
        n_feat = coef.shape[2]
        one = x.dtype.type(1.0)
        _assemble_weights(w_base, coef, mask, x.dtype.type(1.0 / 6.0), w)
        t0, inv_h = _grid_of(knots)
        n_chunks = (batch + ROWS - 1) // ROWS
        for c in prange(n_chunks):
            u = np.empty(n_in, x.dtype)
            for b in range(c * ROWS, min(batch, c * ROWS + ROWS)):
                xr, f0 = x[b], feats[b, 0]
                for i in range(n_in):
                    u[i] = (xr[i] - t0[i]) * inv_h[i]
                    f0[i] = xr[i] * sig[b, i]
                for m in range(n_feat):
                    cm, fm = centres[m], feats[b, m + 1]
                    for i in range(n_in):
                        fm[i] = b6(u[i] - cm, one)

    @njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def _layer_bwd(x, sig, knots, centres, grad, w, out):  # pragma: no cover - compiled
        # ∂L/∂x[b, i] = Σ_m G[b, m, i] · ∂feature_m/∂x with G = grad (batch, K+1, in); for a
        # one-output layer (w non-empty) G[b, m, i] = grad[b, 0, 0] · w[0, m, i], never built
        batch, n_in = x.shape
        rank1 = w.shape[0] > 0
        n_feat = (w.shape[1] if rank1 else grad.shape[1]) - 1
        one, zero, minus3 = x.dtype.type(1.0), x.dtype.type(0.0), x.dtype.type(-3.0)
        t0, inv_h = _grid_of(knots)
        n_chunks = (batch + ROWS - 1) // ROWS
        for c in prange(n_chunks):
            u = np.empty(n_in, x.dtype)
            acc = np.empty(n_in, x.dtype)
            for b in range(c * ROWS, min(batch, c * ROWS + ROWS)):
                xr = x[b]
                for i in range(n_in):
                    u[i] = (xr[i] - t0[i]) * inv_h[i]
                    acc[i] = zero
                for m in range(n_feat):
                    cm = centres[m]
                    gm = w[0, m + 1] if rank1 else grad[b, m + 1]
                    for i in range(n_in):
                        acc[i] += gm[i] * db6_over_minus3(u[i] - cm, one)
                g0 = w[0, 0] if rank1 else grad[b, 0]
                scale = grad[b, 0, 0] if rank1 else one
                for i in range(n_in):
                    xi, si = xr[i], sig[b, i]
                    ds = si * (one + xi * (one - si))
                    out[b, i] = (acc[i] * minus3 * inv_h[i] + g0[i] * ds) * scale

    @njit(cache=True, nogil=True)
    def _layer_param_grads(gw, mask, scale, g_base, g_coef):  # pragma: no cover - compiled
        # gw (out, K+1, in) = ∂L/∂w → the parameters' gradients (w as `_assemble_weights`)
        n_out, k1, n_in = gw.shape
        for j in range(n_out):
            for i in range(n_in):
                mk = mask[j, i]
                g_base[j, i] = gw[j, 0, i] * mk
                for m in range(k1 - 1):
                    g_coef[j, i, m] = gw[j, m + 1, i] * (mk * scale)

    # ---- the same on arbitrary (adaptive) knots: de Boor's triangular scheme -------------------
    # Per input and row only the four cubic B-splines over the row's knot interval are nonzero;
    # they are computed as in Cox–de Boor (half-open intervals, zero outside [t_0, t_last)),
    # features hold B itself (not 6·B), the weights coef·mask.

    @njit(cache=True, nogil=True, inline="always")
    def _span(t, xi):  # pragma: no cover - compiled
        # j with t[j] <= xi < t[j + 1] and t[j] < t[j + 1], or -1 outside [t_0, t_last)
        n = t.shape[0]
        if not (xi >= t[0] and xi < t[n - 1]):
            return -1
        j = 0
        while j < n - 2 and t[j + 1] <= xi:
            j += 1
        return j

    @njit(cache=True, nogil=True, inline="always")
    def _de_boor(t, j, xi, degree, out, left, right):  # pragma: no cover - compiled
        # out[r], r = 0..degree: B-splines of `degree` with indices j - degree + r at xi;
        # left/right: scratch of length degree + 1
        out[0] = 1.0
        for d in range(1, degree + 1):
            left[d] = xi - t[j + 1 - d]
            right[d] = t[j + d] - xi
            saved = out.dtype.type(0.0)
            for r in range(d):
                temp = out[r] / (right[r + 1] + left[d - r])
                out[r] = saved + right[r + 1] * temp
                saved = left[d - r] * temp
            out[d] = saved

    @njit(cache=True, nogil=True, inline="always")
    def _cubic_derivatives(t, j, xi, quad, left, right, out):  # pragma: no cover - compiled
        # out[r] = B'_m(xi) for the cubic B-splines m = j - 3 + r (0 where m does not exist):
        # B'_m = 3·N_m/(t[m+3]-t[m]) - 3·N_{m+1}/(t[m+4]-t[m+1]) with N the quadratic B-splines;
        # quad (5,) is scratch with quad[0] = quad[4] = 0 (no quadratic B-spline there)
        zero, three = out.dtype.type(0.0), out.dtype.type(3.0)
        _de_boor(t, j, xi, 2, quad[1:4], left, right)
        n_basis = t.shape[0] - 4
        for r in range(4):
            m = j - 3 + r
            out[r] = zero
            if 0 <= m < n_basis:  # B_m exists (knots t[m] … t[m+4])
                d1 = t[m + 3] - t[m]
                d2 = t[m + 4] - t[m + 1]
                a = quad[r] / d1 if d1 > zero else zero
                e = quad[r + 1] / d2 if d2 > zero else zero
                out[r] = three * (a - e)

    @njit(parallel=True, cache=True, nogil=True)
    def _layer_fwd_knots(x, sig, knots, w_base, coef, mask, feats, w):  # pragma: no cover
        batch, n_in = x.shape
        n_feat = coef.shape[2]
        _assemble_weights(w_base, coef, mask, x.dtype.type(1.0), w)
        n_chunks = (batch + ROWS - 1) // ROWS
        for c in prange(n_chunks):
            nz = np.empty(4, x.dtype)
            left, right = np.empty(4, x.dtype), np.empty(4, x.dtype)
            for b in range(c * ROWS, min(batch, c * ROWS + ROWS)):
                for i in range(n_in):
                    xi = x[b, i]
                    feats[b, 0, i] = xi * sig[b, i]
                    for m in range(n_feat):
                        feats[b, m + 1, i] = 0.0
                    j = _span(knots[i], xi)
                    if j < 0:
                        continue
                    _de_boor(knots[i], j, xi, 3, nz, left, right)
                    for r in range(4):
                        m = j - 3 + r
                        if 0 <= m < n_feat:
                            feats[b, m + 1, i] = nz[r]

    @njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def _layer_bwd_knots(x, sig, knots, grad, w, out):  # pragma: no cover - compiled
        # as `_layer_bwd`, with the derivatives of `_cubic_derivatives`
        batch, n_in = x.shape
        rank1 = w.shape[0] > 0
        n_feat = (w.shape[1] if rank1 else grad.shape[1]) - 1
        one = x.dtype.type(1.0)
        n_chunks = (batch + ROWS - 1) // ROWS
        for c in prange(n_chunks):
            quad, dB = np.zeros(5, x.dtype), np.empty(4, x.dtype)
            left, right = np.empty(4, x.dtype), np.empty(4, x.dtype)
            for b in range(c * ROWS, min(batch, c * ROWS + ROWS)):
                scale = grad[b, 0, 0] if rank1 else one
                g_row = w[0] if rank1 else grad[b]
                for i in range(n_in):
                    xi, si = x[b, i], sig[b, i]
                    acc = g_row[0, i] * si * (one + xi * (one - si))
                    j = _span(knots[i], xi)
                    if j >= 0:
                        _cubic_derivatives(knots[i], j, xi, quad, left, right, dB)
                        for r in range(4):
                            m = j - 3 + r
                            if 0 <= m < n_feat:
                                acc += g_row[m + 1, i] * dB[r]
                    out[b, i] = acc * scale

    @njit(parallel=True, cache=True, nogil=True)
    def _basis_knots_fwd(x, knots, out):  # pragma: no cover - compiled
        # cubic B-spline basis on arbitrary knots: x (batch, in) → out (batch, in, K)
        batch, n_in = x.shape
        n_feat = out.shape[2]
        n_chunks = (batch + ROWS - 1) // ROWS
        for c in prange(n_chunks):
            nz = np.empty(4, x.dtype)
            left, right = np.empty(4, x.dtype), np.empty(4, x.dtype)
            for b in range(c * ROWS, min(batch, c * ROWS + ROWS)):
                for i in range(n_in):
                    for m in range(n_feat):
                        out[b, i, m] = 0.0
                    j = _span(knots[i], x[b, i])
                    if j < 0:
                        continue
                    _de_boor(knots[i], j, x[b, i], 3, nz, left, right)
                    for r in range(4):
                        m = j - 3 + r
                        if 0 <= m < n_feat:
                            out[b, i, m] = nz[r]

    @njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def _basis_knots_bwd(x, knots, grad, out):  # pragma: no cover - compiled
        # ∂L/∂x from ∂L/∂basis (batch, in, K), derivatives as in `_layer_bwd_knots`
        batch, n_in = x.shape
        n_feat = grad.shape[2]
        zero = x.dtype.type(0.0)
        n_chunks = (batch + ROWS - 1) // ROWS
        for c in prange(n_chunks):
            quad, dB = np.zeros(5, x.dtype), np.empty(4, x.dtype)
            left, right = np.empty(4, x.dtype), np.empty(4, x.dtype)
            for b in range(c * ROWS, min(batch, c * ROWS + ROWS)):
                for i in range(n_in):
                    acc = zero
                    j = _span(knots[i], x[b, i])
                    if j >= 0:
                        _cubic_derivatives(knots[i], j, x[b, i], quad, left, right, dB)
                        for r in range(4):
                            m = j - 3 + r
                            if 0 <= m < n_feat:
                                acc += grad[b, i, m] * dB[r]
                    out[b, i] = acc


@assume_constant_result  # torch.compile evaluates it once, outside the graph
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
                    layer = numba.threading_layer()
                    ok = layer in ("tbb", "omp")
                    if not ok:  # concurrent calls from two threads would abort the process
                        _state["reason"] = f"numba's threading layer {layer!r} is not thread-safe"
                except Exception as exc:  # no threading layer, no compiler support, …
                    ok, _state["reason"] = False, f"{type(exc).__name__}: {exc}"[:300]
            else:
                _state["reason"] = "numba not installed or KAN_CORE_DISABLE_NUMBA set"
            _state["ok"], _state["checked"] = ok, True
    return bool(_state["ok"])


def unavailable_reason() -> str:
    """Why `available()` is False ("" when it is True or not yet checked)."""
    return str(_state["reason"])


def tune_allocator() -> None:
    """Opt-in for a host process (the kanscope server and workers call it; the library never
    does): keep freed memory in the process (glibc). The numba engine's feature buffers are
    megabytes, and glibc otherwise returns them to the system after each step and takes page
    faults on the next (measured: the [10,32,32,1] batch-8192 step took ~1900 faults and ~3 ms
    longer). Raises the mmap threshold to its 32 MiB maximum and the trim threshold to 512 MiB.
    Process-wide and permanent; a no-op off glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl has no mallopt knobs)  # noqa: B018
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 512 << 20)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _sync_threads(work: int) -> None:
    # small calls run on the calling thread: waking a second thread costs more than it saves,
    # and on a busy machine a parallel region waits for a time slice on every core it uses
    n = 1 if work < SERIAL_BELOW else torch.get_num_threads()
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


def to_numpy(t: torch.Tensor, dtype: torch.dtype | None = None) -> np.ndarray:
    """A contiguous numpy view (a copy only where needed) of a CPU tensor, in `dtype`."""
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t.detach().contiguous().numpy()


@functools.lru_cache(maxsize=64)
def _centres(n: int, dtype: torch.dtype) -> np.ndarray:
    c = np.arange(2, n + 2, dtype=np.float32 if dtype == torch.float32 else np.float64)
    c.flags.writeable = False
    return c


def basis6_forward(
    x: torch.Tensor, t0: torch.Tensor, inv_h: torch.Tensor, num_features: int
) -> torch.Tensor:
    """6·B_m(x): x (batch, in), t0/inv_h (in,) → (batch, in, num_features)."""
    _sync_threads(x.numel() * num_features)
    out = torch.empty(x.shape[0], x.shape[1], num_features, dtype=x.dtype)
    c = _centres(num_features, x.dtype)
    _basis6_fwd(to_numpy(x), to_numpy(t0, x.dtype), to_numpy(inv_h, x.dtype), c, out.numpy())
    return out


def basis6_backward(
    x: torch.Tensor, t0: torch.Tensor, inv_h: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """∂L/∂x (batch, in) from ∂L/∂(6B) (batch, in, K)."""
    _sync_threads(grad.numel())
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    c = _centres(grad.shape[2], x.dtype)
    t0n, inv_hn = to_numpy(t0, x.dtype), to_numpy(inv_h, x.dtype)
    _basis6_bwd(to_numpy(x), t0n, inv_hn, c, to_numpy(grad), out.numpy())
    return out


# The layer wrappers below take numpy arrays (`kan_core.spline_layer` converts each tensor once
# per pass; at small batches that conversion is a real part of the cost).


def layer_forward(
    x: np.ndarray, sig: np.ndarray, knots: np.ndarray, w_base: np.ndarray, coef: np.ndarray,
    mask: np.ndarray, feats: np.ndarray, w: np.ndarray, uniform: bool = True,
) -> None:  # fmt: skip
    """Fill feats (batch, K+1, in) with [silu(x); basis] and w (out, K+1, in) with
    [w_base·mask; coef·mask·s], for x, sig = sigmoid(x) (batch, in) and knots (in, M). On a
    uniform grid the basis is 6·B (branch-free form) and s = 1/6; otherwise B and s = 1.
    All arrays contiguous and in x's dtype."""
    _sync_threads(feats.size)
    if uniform:
        c = _centres(coef.shape[2], torch.float32 if x.dtype == np.float32 else torch.float64)
        _layer_fwd(x, sig, knots, w_base, coef, mask, c, feats, w)
    else:
        _layer_fwd_knots(x, sig, knots, w_base, coef, mask, feats, w)


def layer_input_grad(
    x: np.ndarray, sig: np.ndarray, knots: np.ndarray, grad: np.ndarray,
    w: np.ndarray | None = None, uniform: bool = True,
) -> torch.Tensor:  # fmt: skip
    """∂L/∂x (batch, in) from ∂L/∂features (batch, K+1, in); or, for a one-output layer, from
    ∂L/∂y (batch, 1) and the weights w (1, K+1, in), without building ∂L/∂features."""
    out = torch.empty(x.shape, dtype=torch.float32 if x.dtype == np.float32 else torch.float64)
    if w is None:
        k1, gn, wn = grad.shape[1], grad, np.empty((0, 0, 0), x.dtype)
    else:
        k1, gn, wn = w.shape[1], grad.reshape(-1, 1, 1), w
    _sync_threads(x.size * k1)
    if uniform:
        c = _centres(k1 - 1, out.dtype)
        _layer_bwd(x, sig, knots, c, gn, wn, out.numpy())
    else:
        _layer_bwd_knots(x, sig, knots, gn, wn, out.numpy())
    return out


def layer_param_grads(
    gw: np.ndarray, mask: np.ndarray, uniform: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂w_base, ∂L/∂coef) from ∂L/∂w (out, K+1, in), w as `layer_forward` built it."""
    n_out, k1, n_in = gw.shape
    dt = torch.float32 if gw.dtype == np.float32 else torch.float64
    g_base = torch.empty(n_out, n_in, dtype=dt)
    g_coef = torch.empty(n_out, n_in, k1 - 1, dtype=dt)
    scale = 1.0 / 6.0 if uniform else 1.0
    _layer_param_grads(gw, mask, scale, g_base.numpy(), g_coef.numpy())
    return g_base, g_coef


def basis_knots_forward(x: torch.Tensor, knots: torch.Tensor, num_features: int) -> torch.Tensor:
    """Cubic B-spline basis on arbitrary knots (in, M): x (batch, in) → (batch, in, K)."""
    _sync_threads(x.numel() * num_features)
    out = torch.empty(x.shape[0], x.shape[1], num_features, dtype=x.dtype)
    _basis_knots_fwd(to_numpy(x), to_numpy(knots, x.dtype), out.numpy())
    return out


def basis_knots_backward(x: torch.Tensor, knots: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """∂L/∂x (batch, in) from ∂L/∂basis (batch, in, K) on arbitrary knots."""
    _sync_threads(grad.numel())
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _basis_knots_bwd(to_numpy(x), to_numpy(knots, x.dtype), to_numpy(grad), out.numpy())
    return out
