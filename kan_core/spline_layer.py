"""Cubic B-spline KAN layers (uniform or adaptive knots) as one autograd node on the CPU.

The PyTorch formulation of a layer is a basis tensor, two matmuls (spline and SiLU base part),
a SiLU, masks and adds: about fifteen dispatched operations forward and as many autograd nodes
backward, each a pass over memory. Here the base function is folded into the basis as feature 0,

    features(x) = [silu(x); 6·B_0(x); …; 6·B_{K-1}(x)]      (batch, K + 1, in)
    weights     = [w_base·mask; coef·mask/6]                 (out, K + 1, in)
    y           = features · weightsᵀ + bias                 one GEMM

and a whole KAN whose layers all qualify (no symbolic edges) is a single autograd
node (`spline_network`); a single layer uses the same code with one layer. Two engines compute
it, as `kan_core.engine.layer_engine` decides:

- `kan_core.native` (C++, the default wherever it builds): rows in cache-sized chunks, each
  chunk's features and its small GEMM in one parallel loop per layer, features recomputed in
  backward instead of stored. No per-layer Python.
- The numba kernels below (`cpu_kernels.layer_forward` etc.), where the native operators are
  unavailable: per layer one numba pass (features and weight assembly) and one BLAS product
  forward; backward one product for the weight gradient, one for the feature gradient
  (skipped for a one-output layer, whose input gradient the kernel forms directly) and one
  numba pass. Everything backward needs (sigmoids, features, weights, hidden activations)
  lives in one flat buffer: one allocation per forward and one saved tensor.

Eager code calls a `torch.autograd.Function`; under `torch.compile` the same code runs as
operators opaque to the compiler (`kan_core_native::spline_network`, or the numba engine's
`kan_core::spline_network_v3`), so a compiled KAN keeps the fused kernels (and `fullgraph=True`
works). Tests compare both engines' values and gradients with the PyTorch formulation
(`use_engine(Engine.TORCH)`), run `gradcheck` and `torch.library.opcheck`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kan_core import cpu_kernels, native
from kan_core.cpu_kernels import to_numpy
from kan_core.engine import Engine


def _layout(n: int, tensors: Sequence[Tensor]) -> list[tuple[int, ...]]:
    """Shapes in the flat state buffer, per layer: sigmoid(x) (n, in), features (n, K+1, in),
    weights (out, K+1, in), and for every layer but the last its output (n, out)."""
    shapes: list[tuple[int, ...]] = []
    for i in range(0, len(tensors), 5):
        n_out, n_in, n_feat = tensors[i + 1].shape
        shapes += [(n, n_in), (n, n_feat + 1, n_in), (n_out, n_feat + 1, n_in)]
        if i + 5 < len(tensors):
            shapes.append((n, n_out))
    return shapes


def _views(flat: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """numpy views into the flat buffer (a tenth of the cost of tensor views)."""
    out, offset = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return out


def _rows(a: np.ndarray) -> Tensor:
    """(n, a, b) array → (n, a·b) tensor sharing memory (n may be 0)."""
    return torch.from_numpy(a.reshape(a.shape[0], math.prod(a.shape[1:])))


def _network_forward(
    x: Tensor, tensors: list[Tensor], uniform: Sequence[bool]
) -> tuple[Tensor, Tensor]:
    """Run the layers given as (w_base, coef, bias, mask, knots) each on x, with `uniform[l]`
    whether layer l's knots are uniform; no autograd.
    Returns the output and one flat buffer with everything backward needs (`_layout`): a single
    allocation, and a single saved tensor, however deep the network."""
    x = x.detach().contiguous()
    dt = x.dtype
    shapes = _layout(x.shape[0], tensors)
    flat = x.new_empty(sum(math.prod(s) for s in shapes))
    views = _views(flat.numpy(), shapes)
    xn = x.numpy()
    for i in range(0, len(tensors), 5):
        w_base, coef, bias, mask, knots = tensors[i : i + 5]
        sig, feats, w = views[:3]
        torch.sigmoid(x, out=torch.from_numpy(sig))
        cpu_kernels.layer_forward(
            xn, sig, to_numpy(knots, dt), to_numpy(w_base), to_numpy(coef), to_numpy(mask, dt),
            feats, w, uniform[i // 5],
        )  # fmt: skip
        args = (bias.detach(), _rows(feats), _rows(w).t())
        if len(views) > 3:  # a hidden layer: its output goes into the buffer too
            xn = views[3]
            x = torch.addmm(*args, out=torch.from_numpy(xn))
            views = views[4:]
        else:
            x = torch.addmm(*args)
    return x, flat


def _layer_backward(
    g: Tensor, x: np.ndarray, sig: np.ndarray, feats: np.ndarray, w: np.ndarray,
    mask: np.ndarray, knots: np.ndarray, need_x: bool, uniform: bool,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:  # fmt: skip
    """(∂L/∂x or None, ∂L/∂w_base, ∂L/∂coef, ∂L/∂bias) from ∂L/∂y."""
    g = g.detach().contiguous()
    gx = None
    if need_x:
        if w.shape[0] == 1:  # the kernel forms ∂L/∂features = g·w itself
            gx = cpu_kernels.layer_input_grad(x, sig, knots, g.numpy(), w, uniform)
        else:
            g_feats = torch.mm(g, _rows(w)).numpy().reshape(feats.shape)
            gx = cpu_kernels.layer_input_grad(x, sig, knots, g_feats, None, uniform)
    gw = torch.mm(g.t(), _rows(feats)).numpy().reshape(w.shape)
    g_base, g_coef = cpu_kernels.layer_param_grads(gw, mask, uniform)
    return gx, g_base, g_coef, g.sum(0)


def _network_backward(
    g: Tensor, x: Tensor, tensors: list[Tensor], flat: Tensor, uniform: Sequence[bool],
    need_x: bool,
) -> list[Tensor | None]:  # fmt: skip
    """[∂L/∂x or None, then ∂L/∂w_base, ∂L/∂coef, ∂L/∂bias per layer] from ∂L/∂output."""
    n_layers = len(tensors) // 5
    dt = x.dtype
    views = _views(flat.detach().numpy(), _layout(x.shape[0], tensors))
    inputs = [to_numpy(x), *(views[4 * i + 3] for i in range(n_layers - 1))]
    grads: list[Tensor | None] = [None] * (1 + 3 * n_layers)
    g_in: Tensor | None = g
    for layer in reversed(range(n_layers)):
        sig, feats, w = views[4 * layer : 4 * layer + 3]
        _, _, _, mask, knots = tensors[5 * layer : 5 * layer + 5]
        assert g_in is not None
        g_in, *grads[1 + 3 * layer : 4 + 3 * layer] = _layer_backward(
            g_in, inputs[layer], sig, feats, w, to_numpy(mask, dt), to_numpy(knots, dt),
            layer > 0 or need_x, uniform[layer],
        )  # fmt: skip
    grads[0] = g_in
    return grads


class _SplineNetwork(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, uniform, *tensors):  # type: ignore[override]
        y, flat = _network_forward(x, list(tensors), uniform)
        ctx.save_for_backward(x, flat, *tensors)
        ctx.uniform = uniform
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable  # numba inside: no double backward
    def backward(ctx, g):  # type: ignore[override]
        x, flat, *tensors = ctx.saved_tensors
        grads = _network_backward(g, x, tensors, flat, ctx.uniform, ctx.needs_input_grad[0])
        return (grads[0], None, *native.per_tensor(grads, len(tensors)))


# ---- the same as custom operators, for torch.compile ------------------------------------------


# The version suffix changes whenever an operator's schema changes: inductor's on-disk graph
# cache recognises an operator by name, and a cached graph written for an older schema fails.
@torch.library.custom_op("kan_core::spline_network_v3", mutates_args=())
def _network_op(x: Tensor, tensors: list[Tensor], uniform: list[bool]) -> tuple[Tensor, Tensor]:
    return _network_forward(x, tensors, uniform)


@_network_op.register_fake
def _network_fake(x, tensors, uniform):  # type: ignore[no-untyped-def]
    size = sum(math.prod(s) for s in _layout(x.shape[0], tensors))
    return x.new_empty(x.shape[0], tensors[-4].shape[0]), x.new_empty(size)


@torch.library.custom_op("kan_core::spline_network_backward_v3", mutates_args=())
def _network_backward_op(
    g: Tensor, x: Tensor, tensors: list[Tensor], flat: Tensor, uniform: list[bool], need_x: bool
) -> list[Tensor]:
    grads = _network_backward(g, x, tensors, flat, uniform, need_x)
    first = grads[0] if grads[0] is not None else torch.zeros_like(x)
    return [first, *[t for t in grads[1:] if t is not None]]


@_network_backward_op.register_fake
def _network_backward_fake(g, x, tensors, flat, uniform, need_x):  # type: ignore[no-untyped-def]
    return native.gradients_like(x, tensors)


native.register_network_autograd(_network_op, _network_backward_op)


def spline_network(x: Tensor, layers: Sequence[Any], engine: Engine) -> Tensor:
    """The KAN layers `layers` applied in turn to x, fused on the CPU by `engine` (NATIVE or
    NUMBA, as `engine.layer_engine` chose): one autograd node for all of them. Each layer is
    y_j = Σ_i mask_ij·(w_base_ij·silu(x_i) + Σ_m coef_ijm·B_m(x_i)) + bias_j with mask = the
    layer's numeric mask."""
    tensors: list[Tensor] = []
    for layer in layers:
        tensors += [layer.w_base, layer.coef, layer.bias, layer.numeric_mask(), layer.basis.knots]
    uniform = [bool(layer.basis._uniform) for layer in layers]
    if engine is Engine.NATIVE:  # C++: chunked rows, no per-layer Python
        return native.spline_network(x, tensors, [int(u) for u in uniform])
    if torch.compiler.is_compiling():
        return _network_op(x, tensors, uniform)[0]
    y: Tensor = _SplineNetwork.apply(x, tuple(uniform), *tensors)
    return y
