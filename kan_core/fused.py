"""Fused training of small B-spline KANs on the CPU (numba): loss, gradient and optimiser step
in compiled loops, with no per-operation dispatch.

Small interactive fits (a few hundred to a few thousand rows, tens of edges) spend almost all
their time in framework overhead: a [2,5,1] KAN evaluated on 1000 rows is ~100 kFLOP, yet one
PyTorch forward + backward + LBFGS bookkeeping costs about a millisecond. Here the whole network's
forward and backward pass is one compiled function over flat arrays, and L-BFGS (strong-Wolfe
line search) and Adam run in compiled code too, so one LBFGS step with its 20 inner iterations
is a single call.

Scope (engine "fused-cpu" in `kan_core.engine`): KAN, every layer the cubic B-spline basis on a
uniform grid, no symbolic edges, regression (MSE) or classification (cross-entropy), no
sparsity penalty, CPU, float32/float64, and a small enough job. Anything else trains on
another engine. Tests compare loss and gradients with autograd and the optimisers with
`torch.optim`.

Parameter layout: per layer, w_base (out·in), coef (out·in·K), bias (out), in that order, in one
flat vector (`theta`). While a `FusedOptimizer` is in use the model's parameters are views into
that vector (so grid updates and callbacks see, and may change, the model as usual);
`release()` (which `fit` calls when it ends) gives every parameter its own storage again.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from kan_core import cpu_kernels, native
from kan_core.basis import BSplineBasis
from kan_core.model import KAN

if cpu_kernels._HAVE_NUMBA:
    from numba import njit

    from kan_core.cpu_kernels import b6, db6_over_minus3

    @njit(cache=True, nogil=True)
    def _loss_grad(theta, grad, x, y, layout, t0, inv_h, mask, act, classify):  # pragma: no cover
        """Loss of the KAN at `theta` on (x, y); writes d loss/d theta into `grad`. MSE, or
        with `classify` cross-entropy of the logits against class indices y[:, 0].

        Feature-major layout so that every inner loop runs over the batch (contiguous, SIMD):
        act (Σ widths, batch) holds every layer's input and the output; a layer's features are
        6·B (in·K, batch) by `cpu_kernels.b6`, the layer kernels' form, with 1/6 in the weights;
        then BLAS products for the spline and base parts, forward and backward.
        layout[l] = (n_in, n_out, K, off_wbase, off_coef, off_bias, off_knots, off_mask, off_act).
        """
        n_layers = layout.shape[0]
        batch = x.shape[0]
        dt = theta.dtype
        one, minus3, sixth = dt.type(1.0), dt.type(-3.0), dt.type(1.0 / 6.0)
        act[: x.shape[1], :] = x.T
        # per-layer buffers kept for the backward pass (lists of one array type each)
        feats = [np.empty((1, 1), dt) for _ in range(n_layers)]
        silus = [np.empty((1, 1), dt) for _ in range(n_layers)]
        dsilus = [np.empty((1, 1), dt) for _ in range(n_layers)]
        grid_u = [np.empty((1, 1), dt) for _ in range(n_layers)]
        wspl = [np.empty((1, 1), dt) for _ in range(n_layers)]
        wbase = [np.empty((1, 1), dt) for _ in range(n_layers)]
        for li in range(n_layers):
            n_in, n_out, nk = layout[li, 0], layout[li, 1], layout[li, 2]
            owb, oc, ob = layout[li, 3], layout[li, 4], layout[li, 5]
            okn, om, oa = layout[li, 6], layout[li, 7], layout[li, 8]
            feat = np.empty((n_in * nk, batch), dt)  # 6·B_m(x_i), as the layer kernels
            s = np.empty((n_in, batch), dt)
            ds = np.empty((n_in, batch), dt)
            uu = np.empty((n_in, batch), dt)  # x in knot spacings from the first knot
            for i in range(n_in):
                a = act[oa + i]
                lo = dt.type(t0[okn + i])
                ih = dt.type(inv_h[okn + i])
                u_i = uu[i]
                for b in range(batch):
                    xi = a[b]
                    sig = one / (one + np.exp(-xi))
                    s[i, b] = xi * sig
                    ds[i, b] = sig * (one + xi * (one - sig))
                    u_i[b] = (xi - lo) * ih
                for m in range(nk):
                    row = feat[i * nk + m]
                    centre = dt.type(m + 2)  # basis m is centred 2 + m knot spacings in
                    for b in range(batch):
                        row[b] = b6(u_i[b] - centre, one)
            ws = np.empty((n_out, n_in * nk), dt)  # masked coefficients
            wb = np.empty((n_out, n_in), dt)
            for o in range(n_out):
                for i in range(n_in):
                    mk = mask[om + o * n_in + i]
                    wb[o, i] = theta[owb + o * n_in + i] * mk
                    for m in range(nk):
                        ws[o, i * nk + m] = theta[oc + (o * n_in + i) * nk + m] * (mk * sixth)
            z = np.dot(ws, feat) + np.dot(wb, s)  # (out, batch)
            for o in range(n_out):
                bo = theta[ob + o]
                out = act[oa + n_in + o]
                zo = z[o]
                for b in range(batch):
                    out[b] = zo[b] + bo
            feats[li], silus[li], dsilus[li], grid_u[li] = feat, s, ds, uu
            wspl[li], wbase[li] = ws, wb
        last = n_layers - 1
        n_out_last = layout[last, 1]
        la = layout[last, 8] + layout[last, 0]
        g = np.empty((n_out_last, batch), dt)
        loss = 0.0
        if classify:  # mean over rows of logsumexp(z) - z[label]
            for b in range(batch):
                zmax = -np.inf
                for o in range(n_out_last):
                    zmax = max(zmax, float(act[la + o, b]))
                total = 0.0
                for o in range(n_out_last):
                    total += math.exp(float(act[la + o, b]) - zmax)
                label = int(y[b, 0])
                loss += zmax + math.log(total) - float(act[la + label, b])
                for o in range(n_out_last):
                    p = math.exp(float(act[la + o, b]) - zmax) / total
                    g[o, b] = (p - (1.0 if o == label else 0.0)) / batch
            loss_scale = batch
        else:
            scale = 2.0 / (batch * n_out_last)
            for o in range(n_out_last):
                pred = act[la + o]
                for b in range(batch):
                    diff = float(pred[b]) - float(y[b, o])
                    loss += diff * diff
                    g[o, b] = scale * diff
            loss_scale = batch * n_out_last
        for li in range(n_layers - 1, -1, -1):
            n_in, n_out, nk = layout[li, 0], layout[li, 1], layout[li, 2]
            owb, oc, ob = layout[li, 3], layout[li, 4], layout[li, 5]
            okn, om = layout[li, 6], layout[li, 7]
            g_ws = np.dot(g, feats[li].T)  # (out, in·K)
            g_wb = np.dot(g, silus[li].T)  # (out, in)
            for o in range(n_out):
                grad[ob + o] = g[o].sum()
                for i in range(n_in):
                    mk = mask[om + o * n_in + i]
                    grad[owb + o * n_in + i] = g_wb[o, i] * mk
                    for m in range(nk):
                        grad[oc + (o * n_in + i) * nk + m] = g_ws[o, i * nk + m] * (mk * sixth)
            if li == 0:
                break  # the network's input needs no gradient
            g_feat = np.dot(wspl[li].T, g)  # (in·K, batch)
            g_s = np.dot(wbase[li].T, g)  # (in, batch)
            uu, ds = grid_u[li], dsilus[li]
            g_in = np.empty((n_in, batch), dt)
            for i in range(n_in):
                du = minus3 * dt.type(inv_h[okn + i])  # d(6B)/dx = -3·inv_h·db6_over_minus3
                gi = g_in[i]
                for b in range(batch):
                    gi[b] = g_s[i, b] * ds[i, b]
                u_i = uu[i]
                for m in range(nk):
                    gf = g_feat[i * nk + m]
                    centre = dt.type(m + 2)
                    for b in range(batch):
                        gi[b] += gf[b] * db6_over_minus3(u_i[b] - centre, one) * du
            g = g_in
        return loss / loss_scale

    @njit(cache=True, nogil=True)
    def _eval_at(
        theta0, d, t, theta, grad, x, y, layout, t0, inv_h, mask, act, classify
    ):  # pragma: no cover
        for p in range(theta.shape[0]):
            theta[p] = theta0[p] + t * d[p]
        loss = _loss_grad(theta, grad, x, y, layout, t0, inv_h, mask, act, classify)
        gtd = 0.0
        for p in range(theta.shape[0]):
            gtd += float(grad[p]) * float(d[p])
        return loss, gtd

    @njit(cache=True, nogil=True)
    def _cubic_min(x1, f1, g1, x2, f2, g2, lo, hi):  # pragma: no cover
        """Minimiser of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to [lo, hi]."""
        d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
        disc = d1 * d1 - g1 * g2
        if disc >= 0.0:
            d2 = math.sqrt(disc)
            if x1 > x2:
                d2 = -d2
            den = g2 - g1 + 2.0 * d2
            if den != 0.0:
                xm = x2 - (x2 - x1) * ((g2 + d2 - d1) / den)
                if xm == xm:
                    return min(max(xm, lo), hi)
        return 0.5 * (lo + hi)

    @njit(cache=True, nogil=True)
    def _lbfgs_step(
        theta,
        x,
        y,
        layout,
        t0,
        inv_h,
        mask,
        act,
        classify,
        s_hist,
        y_hist,
        rho,
        hist_meta,
        vec_state,
        scal_state,
        lr,
        max_iter,
        max_eval,
        tol_grad,
        tol_change,
        history_size,
    ):  # pragma: no cover
        """One L-BFGS `step` (up to max_iter iterations, strong-Wolfe line search), in place.

        State kept between steps (as torch.optim.LBFGS keeps it): s/y history ring buffers,
        hist_meta = [count, head, n_iter]; vec_state rows = [d, prev_grad]; scal_state =
        [t, H_diag, prev_loss]. Returns (loss at the start of the step, evaluations, ok).
        """
        n = theta.shape[0]
        grad = np.empty_like(theta)
        loss = _loss_grad(theta, grad, x, y, layout, t0, inv_h, mask, act, classify)
        orig_loss = loss
        evals = 1
        if not math.isfinite(loss):
            return orig_loss, evals, False
        gmax = 0.0
        for p in range(n):
            gmax = max(gmax, abs(float(grad[p])))
        if not math.isfinite(gmax):
            return orig_loss, evals, False
        if gmax <= tol_grad:
            return orig_loss, evals, True
        d = vec_state[0]
        prev_g = vec_state[1]
        theta0 = np.empty_like(theta)
        trial = np.empty_like(theta)
        g_new = np.empty_like(theta)
        g_prev = np.empty_like(theta)
        g_lo = np.empty_like(theta)
        g_hi = np.empty_like(theta)
        q = np.empty(n, np.float64)
        alpha = np.empty(history_size, np.float64)
        c1, c2 = 1e-4, 0.9
        it = 0
        while it < max_iter:
            it += 1
            hist_meta[2] += 1
            if hist_meta[2] == 1:
                for p in range(n):
                    d[p] = -grad[p]
                scal_state[1] = 1.0
            else:
                t_prev_step = scal_state[0]
                ys = 0.0
                yy = 0.0
                for p in range(n):
                    yv = float(grad[p]) - float(prev_g[p])
                    sv = float(d[p]) * t_prev_step
                    ys += yv * sv
                    yy += yv * yv
                if ys > 1e-10:
                    count, head = hist_meta[0], hist_meta[1]
                    slot = (head + count) % history_size
                    if count == history_size:
                        hist_meta[1] = (head + 1) % history_size
                    else:
                        hist_meta[0] = count + 1
                    for p in range(n):
                        y_hist[slot, p] = float(grad[p]) - float(prev_g[p])
                        s_hist[slot, p] = float(d[p]) * t_prev_step
                    rho[slot] = 1.0 / ys
                    scal_state[1] = ys / yy
                count, head = hist_meta[0], hist_meta[1]
                for p in range(n):
                    q[p] = -float(grad[p])
                for k in range(count - 1, -1, -1):  # newest to oldest
                    slot = (head + k) % history_size
                    a = 0.0
                    for p in range(n):
                        a += float(s_hist[slot, p]) * q[p]
                    a *= rho[slot]
                    alpha[k] = a
                    for p in range(n):
                        q[p] -= a * float(y_hist[slot, p])
                for p in range(n):
                    q[p] *= scal_state[1]
                for k in range(count):  # oldest to newest
                    slot = (head + k) % history_size
                    bb = 0.0
                    for p in range(n):
                        bb += float(y_hist[slot, p]) * q[p]
                    bb *= rho[slot]
                    for p in range(n):
                        q[p] += float(s_hist[slot, p]) * (alpha[k] - bb)
                for p in range(n):
                    d[p] = q[p]
            for p in range(n):
                prev_g[p] = grad[p]
            prev_loss = loss
            scal_state[2] = prev_loss
            if hist_meta[2] == 1:
                gsum = 0.0
                for p in range(n):
                    gsum += abs(float(grad[p]))
                t = min(1.0, 1.0 / gsum) * lr
            else:
                t = lr
            gtd0 = 0.0
            dmax = 0.0
            for p in range(n):
                gtd0 += float(grad[p]) * float(d[p])
                dmax = max(dmax, abs(float(d[p])))
            if gtd0 > -tol_change:
                break
            # ---- strong-Wolfe line search along d from theta0 ----
            for p in range(n):
                theta0[p] = theta[p]
            f0 = loss
            ls = 0
            t_prev, f_prev, gtd_prev = 0.0, f0, gtd0
            for p in range(n):
                g_prev[p] = grad[p]
            found = False
            bracketed = False
            t_lo, f_lo, gtd_lo = 0.0, f0, gtd0
            t_hi, f_hi, gtd_hi = 0.0, f0, gtd0
            f_new, gtd_new = f0, gtd0
            while ls < 25:
                f_new, gtd_new = _eval_at(
                    theta0, d, t, trial, g_new, x, y, layout, t0, inv_h, mask, act, classify
                )
                ls += 1
                if not math.isfinite(f_new):
                    f_new = math.inf
                if f_new > f0 + c1 * t * gtd0 or (ls > 1 and f_new >= f_prev):
                    t_lo, f_lo, gtd_lo = t_prev, f_prev, gtd_prev
                    t_hi, f_hi, gtd_hi = t, f_new, gtd_new
                    g_lo[:] = g_prev
                    g_hi[:] = g_new
                    bracketed = True
                    break
                if abs(gtd_new) <= -c2 * gtd0:
                    found = True
                    break
                if gtd_new >= 0.0:
                    t_lo, f_lo, gtd_lo = t, f_new, gtd_new
                    t_hi, f_hi, gtd_hi = t_prev, f_prev, gtd_prev
                    g_lo[:] = g_new
                    g_hi[:] = g_prev
                    bracketed = True
                    break
                lo_b = t + 0.01 * (t - t_prev)
                hi_b = t * 10.0
                t_next = _cubic_min(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, lo_b, hi_b)
                t_prev, f_prev, gtd_prev = t, f_new, gtd_new
                g_prev[:] = g_new
                t = t_next
            if not found and not bracketed:  # out of evaluations while extrapolating
                t_lo, f_lo, gtd_lo = t, f_new, gtd_new
                g_lo[:] = g_new
                if f_new > f0:
                    t_lo, f_lo = 0.0, f0
                    g_lo[:] = grad
            while bracketed and not found and ls < 25:
                width = abs(t_hi - t_lo)
                if width * dmax < tol_change:
                    break
                lo_b, hi_b = min(t_lo, t_hi), max(t_lo, t_hi)
                t = _cubic_min(t_lo, f_lo, gtd_lo, t_hi, f_hi, gtd_hi, lo_b, hi_b)
                margin = 0.1 * (hi_b - lo_b)
                t = min(max(t, lo_b + margin), hi_b - margin)
                f_new, gtd_new = _eval_at(
                    theta0, d, t, trial, g_new, x, y, layout, t0, inv_h, mask, act, classify
                )
                ls += 1
                if not math.isfinite(f_new):
                    f_new = math.inf
                if f_new > f0 + c1 * t * gtd0 or f_new >= f_lo:
                    t_hi, f_hi, gtd_hi = t, f_new, gtd_new
                    g_hi[:] = g_new
                else:
                    if abs(gtd_new) <= -c2 * gtd0:
                        found = True
                    elif gtd_new * (t_hi - t_lo) >= 0.0:
                        t_hi, f_hi, gtd_hi = t_lo, f_lo, gtd_lo
                        g_hi[:] = g_lo
                    t_lo, f_lo, gtd_lo = t, f_new, gtd_new
                    g_lo[:] = g_new
            if found:
                t_lo, f_lo = t, f_new
                g_lo[:] = g_new
            t = t_lo
            loss = f_lo
            for p in range(n):
                theta[p] = theta0[p] + t * d[p]
                grad[p] = g_lo[p]
            scal_state[0] = t
            evals += ls
            if not math.isfinite(loss):
                return orig_loss, evals, False
            if it == max_iter or evals >= max_eval:
                break
            gmax = 0.0
            smax = 0.0
            for p in range(n):
                gmax = max(gmax, abs(float(grad[p])))
                smax = max(smax, abs(float(d[p]) * t))
            if gmax <= tol_grad or smax <= tol_change or abs(loss - prev_loss) < tol_change:
                break
        return orig_loss, evals, True

    @njit(cache=True, nogil=True)
    def _adam_step(
        theta,
        x,
        y,
        layout,
        t0,
        inv_h,
        mask,
        act,
        classify,
        exp_avg,
        exp_avg_sq,
        step,
        lr,
        b1,
        b2,
        eps,
    ):  # pragma: no cover
        """One Adam step (torch.optim.Adam's update, no weight decay). Returns (loss, ok)."""
        grad = np.empty_like(theta)
        loss = _loss_grad(theta, grad, x, y, layout, t0, inv_h, mask, act, classify)
        for p in range(theta.shape[0]):
            if not math.isfinite(grad[p]):
                return loss, False
        if not math.isfinite(loss):
            return loss, False
        bc1 = 1.0 - b1**step
        bc2_sqrt = math.sqrt(1.0 - b2**step)
        step_size = lr / bc1
        for p in range(theta.shape[0]):
            g = grad[p]
            exp_avg[p] = exp_avg[p] * b1 + (1.0 - b1) * g
            exp_avg_sq[p] = exp_avg_sq[p] * b2 + (1.0 - b2) * g * g
            denom = math.sqrt(exp_avg_sq[p]) / bc2_sqrt + eps
            theta[p] = theta[p] - step_size * exp_avg[p] / denom
        return loss, True


def _layer_params(model: KAN) -> list[nn.Parameter]:
    out: list[nn.Parameter] = []
    for layer in model.layers:
        out += [layer.w_base, layer.coef, layer.bias]
    return out


class FusedOptimizer:
    """L-BFGS or Adam over a small KAN, with loss and gradient computed by `_loss_grad`.

    The model's parameters are re-pointed into one flat buffer that the compiled code updates
    in place. `step(x, y)` runs one optimiser step and returns the loss at the start of the step
    (as `torch.optim` does); y holds class indices for classification.
    """

    def __init__(
        self, model: KAN, kind: str, lr: float, history_size: int = 10, task: str = "regression"
    ) -> None:
        self.model, self.kind, self.lr, self.history_size = model, kind, lr, history_size
        self.classify = task == "classification"
        self.params = _layer_params(model)
        self.dtype = np.float32 if model.layers[0].coef.dtype == torch.float32 else np.float64
        n = sum(p.numel() for p in self.params)
        self.n = n
        self.state: dict[str, Any] = {}
        self.reset()
        layout, off_p, off_k, off_m, off_a = [], 0, 0, 0, 0
        for layer in model.layers:
            n_in, n_out, nk = layer.in_dim, layer.out_dim, layer.basis.num_features
            layout.append([n_in, n_out, nk, off_p, off_p + n_out * n_in])
            layout[-1] += [off_p + n_out * n_in * (nk + 1), off_k, off_m, off_a]
            off_p += n_out * n_in * (nk + 1) + n_out
            off_k += n_in
            off_m += n_in * n_out
            off_a += n_in
        self.layout = np.asarray(layout, dtype=np.int64)
        self.act_width = off_a + model.layers[-1].out_dim
        self._knots_key: tuple = ()
        self._knots_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._act = np.empty((self.act_width, 0), self.dtype)
        self._flatten()

    def release(self) -> None:
        """Give the model's parameters their own storage again (ordinary tensors, as before
        this optimiser), with their current values."""
        for p in self.params:
            if p.data_ptr() in self._ptrs:
                p.data = p.data.clone()
        self._ptrs: list[int] = []

    def _flatten(self) -> None:
        """Re-point the parameters into one flat buffer that the compiled code updates in
        place (no gather/scatter per step)."""
        flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        i = 0
        for p in self.params:
            p.data = flat[i : i + p.numel()].view_as(p)
            i += p.numel()
        self._flat = flat
        self._theta = flat.numpy()
        self._ptrs = [p.data_ptr() for p in self.params]

    # ---- state (torch.optim-like, for checkpoints and grid-update resets) --------------------

    def reset(self) -> None:
        n, m, dt = self.n, self.history_size, self.dtype
        if self.kind == "lbfgs":
            self.state = {
                "s_hist": np.zeros((m, n), dt),
                "y_hist": np.zeros((m, n), dt),
                "rho": np.zeros(m, np.float64),
                "hist_meta": np.zeros(3, np.int64),  # count, head, n_iter
                "vec_state": np.zeros((2, n), dt),  # d, previous gradient
                "scal_state": np.zeros(3, np.float64),  # t, H_diag, previous loss
            }
        else:
            self.state = {
                "exp_avg": np.zeros(n, dt),
                "exp_avg_sq": np.zeros(n, dt),
                "step": np.zeros(1, np.int64),
            }

    def state_dict(self) -> dict[str, Any]:
        tensors = {k: torch.from_numpy(v.copy()) for k, v in self.state.items()}
        return {"fused": self.kind, **tensors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fused") != self.kind:
            raise ValueError("checkpoint optimiser state is not this fused optimiser's")
        for k in self.state:
            self.state[k] = np.ascontiguousarray(state[k].numpy()).copy()

    # ---- stepping ----------------------------------------------------------------------------

    def _gather(self) -> np.ndarray:
        """The flat parameter vector, shared with the model's tensors."""
        if [p.data_ptr() for p in self.params] != self._ptrs:  # replaced meanwhile (refine…)
            self.params = _layer_params(self.model)
            self._flatten()
        return self._theta

    def _knots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = tuple(
            (id(layer.basis.knots), layer.basis.knots._version, layer.mask._version)
            for layer in self.model.layers
        )
        if key != self._knots_key or self._knots_cache is None:
            self._knots_cache, self._knots_key = self._compute_knots(), key
        return self._knots_cache

    def _compute_knots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t0s, ihs, masks = [], [], []
        for layer in self.model.layers:
            knots: torch.Tensor = layer.basis.knots  # type: ignore[assignment]
            t0s.append(knots[:, 0].double())
            ihs.append(1.0 / (knots[:, 1] - knots[:, 0]).double())
            masks.append(layer.mask.reshape(-1).double())
        return (torch.cat(t0s).numpy(), torch.cat(ihs).numpy(), torch.cat(masks).numpy())

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, bool]:
        """(loss at the start of the step, all finite). Parameters are left unchanged when a
        non-finite value shows up, so the model keeps its last finite weights."""
        theta = self._gather()
        before = theta.copy()
        xn = x.detach().contiguous().numpy()
        yn = _targets(y, x.shape[0], self.dtype)
        t0, inv_h, mask = self._knots()
        if self._act.shape[1] != x.shape[0]:
            self._act = np.empty((self.act_width, x.shape[0]), self.dtype)
        act = self._act
        st = self.state
        if self.kind == "lbfgs":
            loss, _, ok = _lbfgs_step(
                theta, xn, yn, self.layout, t0, inv_h, mask, act, self.classify,
                st["s_hist"], st["y_hist"], st["rho"], st["hist_meta"], st["vec_state"],
                st["scal_state"], float(self.lr), 20, 25, 1e-32, 1e-32, self.history_size,
            )  # fmt: skip
        else:
            st["step"][0] += 1
            loss, ok = _adam_step(
                theta, xn, yn, self.layout, t0, inv_h, mask, act, self.classify, st["exp_avg"],
                st["exp_avg_sq"], int(st["step"][0]), float(self.lr), 0.9, 0.999, 1e-8,
            )  # fmt: skip
        ok = ok and bool(np.isfinite(theta).all())
        if not ok:
            theta[:] = before
        return float(loss), ok


def _targets(y: torch.Tensor, n: int, dtype: Any) -> np.ndarray:
    """(n, outputs) regression targets, or (n, 1) class indices, in the parameters' dtype."""
    return np.ascontiguousarray(y.detach().reshape(n, -1).numpy(), dtype=dtype)


def loss_and_grad(
    model: KAN, x: torch.Tensor, y: torch.Tensor, task: str = "regression"
) -> tuple[float, torch.Tensor]:
    """Loss and its gradient (flat, layout as `FusedOptimizer`), for tests."""
    opt = FusedOptimizer(model, "adam", 1.0, task=task)
    theta = opt._gather().copy()
    grad = np.empty_like(theta)
    t0, inv_h, mask = opt._knots()
    act = np.empty((opt.act_width, x.shape[0]), opt.dtype)
    yn = _targets(y, x.shape[0], opt.dtype)
    xn = x.contiguous().numpy()
    loss = _loss_grad(theta, grad, xn, yn, opt.layout, t0, inv_h, mask, act, opt.classify)
    return float(loss), torch.from_numpy(grad)


def warm_up() -> bool:
    """Build (first time on a machine, ~15-25 s) or load `kan_core.native`'s C++ operators, and
    compile (~10 s) or load from numba's on-disk cache (~1 s) every numba kernel, so the first
    interactive fit does not wait. Returns whether the numba kernels are usable."""
    native.warm_up()
    if not cpu_kernels.available():
        return False
    x = torch.linspace(-1, 1, 16).reshape(8, 2)
    for optimizer in ("lbfgs", "adam"):  # the whole-fit kernels, as `fit` calls them
        opt = FusedOptimizer(KAN([2, 2, 1], seed=0), optimizer, 1.0)
        opt.step(x, x[:, :1] * x[:, 1:])
        opt.release()
    x_grad = x.clone().requires_grad_()
    KAN([2, 1], seed=0)(x_grad).sum().backward()  # the layer kernels' forward and backward
    adaptive = KAN([2, 2, 1], seed=0)
    for layer in adaptive.layers:  # non-uniform knots: the de Boor kernels
        basis = layer.basis
        assert isinstance(basis, BSplineBasis)
        basis.set_knots(basis.knots * (1.0 + 0.1 * torch.linspace(0, 1, basis.knots.shape[1])))
    adaptive(x_grad).sum().backward()
    adaptive.layers[0].basis(x_grad).sum().backward()  # basis-only kernels (regularisation…)
    return True


if __name__ == "__main__":  # python -m kan_core.fused: fill the kernel cache (image builds, CI)
    import sys
    import time

    start = time.perf_counter()
    state = "ready" if warm_up() else "unavailable"
    native_state = "ready" if native.available() else f"unavailable ({native.unavailable_reason()})"
    sys.stdout.write(
        f"kan_core CPU kernels {state}, native operators {native_state}, "
        f"in {time.perf_counter() - start:.1f} s\n"
    )
