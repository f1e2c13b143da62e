"""KANLayer: every edge (input i → output j) carries its own univariate function φ_ij.

Numeric edges:   φ_ij(x) = mask_ij · (w_base_ij · silu(x) + Σ_k c_ijk B_k(x))
Symbolic edges:  φ_ij(x) = mask_ij · (c · f(a·x + b) + d),  f chosen by name from
                 `kan_core.functions`, (a, b, c, d) = sym_affine[j, i] (trainable).
Output:          y_j = Σ_i φ_ij(x_i) + bias_j

The numeric part is computed the efficient way: one basis tensor `(batch, in, K)` and one
matmul with the coefficients `(out, in·K)`; on the CPU a uniform cubic layer is one fused node
(`kan_core.spline_layer`) with the SiLU base folded into the same matmul. Symbolic edges are
grouped by function name and evaluated only where set. Tensors indexed per edge are
`(out, in)` = `[j, i]`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kan_core import spline_layer
from kan_core.basis import Basis, make_basis
from kan_core.engine import Engine, layer_engine
from kan_core.errors import ConfigError
from kan_core.functions import get_function


class KANLayer(nn.Module):
    mask: torch.Tensor  # (out, in) buffer, 0 = pruned edge
    sym_mask: torch.Tensor  # (out, in) buffer, 1 = symbolic edge
    basis: Basis

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        grid: int = 5,
        k: int = 3,
        basis: str = "bspline",
        grid_range: tuple[float, float] = (-1.0, 1.0),
        noise_scale: float = 0.3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ConfigError(f"layer sizes must be ≥ 1, got in={in_dim}, out={out_dim}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.basis: Basis = make_basis(basis, in_dim, grid, k, grid_range)
        n_feat = self.basis.num_features
        g = generator
        # Base weights ~ U(-1, 1)/sqrt(in) (pykan's default); spline coefficients small noise.
        self.w_base = nn.Parameter(
            (torch.rand(out_dim, in_dim, generator=g) * 2 - 1) / math.sqrt(in_dim)
        )
        coef = (torch.rand(out_dim, in_dim, n_feat, generator=g) - 0.5) * (
            noise_scale / math.sqrt(in_dim)
        )
        if basis == "rational":
            coef = (torch.rand(out_dim, in_dim, 1, generator=g) * 2 - 1) / math.sqrt(in_dim)
        self.coef = nn.Parameter(coef)  # (out, in, K)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.register_buffer("mask", torch.ones(out_dim, in_dim))
        self.register_buffer("sym_mask", torch.zeros(out_dim, in_dim))
        affine = torch.zeros(out_dim, in_dim, 4)
        affine[..., 0] = 1.0  # a
        affine[..., 2] = 1.0  # c
        self.sym_affine = nn.Parameter(affine)  # (out, in, 4) = (a, b, c, d)
        self._sym_names: list[list[str]] = [["" for _ in range(in_dim)] for _ in range(out_dim)]
        self._sym_groups: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- symbolic edges ----------------------------------------------------------------------

    @property
    def sym_names(self) -> list[list[str]]:
        """[j][i] name of the symbolic function on edge i→j, "" for numeric edges (a copy)."""
        return [list(row) for row in self._sym_names]

    def set_symbolic(
        self, i: int, j: int, name: str, a: float, b: float, c: float, d: float
    ) -> None:
        self._check_edge(i, j)
        get_function(name)  # raises UnknownFunctionError with the options
        with torch.no_grad():
            self.sym_affine[j, i] = torch.tensor([a, b, c, d], dtype=self.sym_affine.dtype)
            self.sym_mask[j, i] = 1.0
        self._sym_names[j][i] = name
        self._rebuild_groups()

    def clear_symbolic(self, i: int, j: int) -> None:
        self._check_edge(i, j)
        with torch.no_grad():
            self.sym_mask[j, i] = 0.0
        self._sym_names[j][i] = ""
        self._rebuild_groups()

    def load_sym_names(self, names: list[list[str]]) -> None:
        """Restore symbolic names (from a saved config); sym_mask follows the names."""
        if len(names) != self.out_dim or any(len(r) != self.in_dim for r in names):
            raise ConfigError("symbolic names do not match the layer shape")
        for row in names:
            for n in row:
                if n:
                    get_function(n)
        self._sym_names = [list(r) for r in names]
        with torch.no_grad():
            self.sym_mask.copy_(torch.tensor([[1.0 if n else 0.0 for n in r] for r in names]))
        self._rebuild_groups()

    def _check_edge(self, i: int, j: int) -> None:
        if not (0 <= i < self.in_dim and 0 <= j < self.out_dim):
            raise ConfigError(
                f"edge ({i}→{j}) does not exist: inputs 0..{self.in_dim - 1}, "
                f"outputs 0..{self.out_dim - 1}"
            )

    def _rebuild_groups(self) -> None:
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for j, row in enumerate(self._sym_names):
            for i, name in enumerate(row):
                if name:
                    js, is_ = groups.setdefault(name, ([], []))
                    js.append(j)
                    is_.append(i)
        device = self.mask.device
        self._sym_groups = {
            n: (torch.tensor(js, device=device), torch.tensor(is_, device=device))
            for n, (js, is_) in groups.items()
        }

    def _apply(self, fn: Any, recurse: bool = True) -> KANLayer:  # keep index tensors on device
        super()._apply(fn, recurse)
        self._rebuild_groups()
        return self

    @property
    def has_symbolic(self) -> bool:
        """Whether any edge of this layer is symbolic (pruned ones included)."""
        return bool(self._sym_groups)

    def _symbolic_edge_values(self, x: torch.Tensor):  # yields (js, is_, values (batch, E))
        for name, (js, is_) in self._sym_groups.items():
            p = self.sym_affine[js, is_]  # (E, 4)
            z = p[:, 0] * x[:, is_] + p[:, 1]  # (batch, E)
            v = p[:, 2] * get_function(name).torch_fn(z) + p[:, 3]
            yield js, is_, v * self.mask[js, is_]

    # ---- forward -----------------------------------------------------------------------------

    def numeric_mask(self) -> torch.Tensor:
        if not self.has_symbolic:  # no symbolic edge: the mask itself (saves two ops per call)
            return self.mask
        return self.mask * (1.0 - self.sym_mask)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in) → (batch, out)."""
        num_mask = self.numeric_mask()
        engine = layer_engine([self], x)
        if engine is not Engine.TORCH:  # one fused node on the CPU
            y = spline_layer.spline_network(x, [self], engine)
        else:
            feats, scale, coef = self._features_and_coef(x)  # (batch, in, Kc), (out, in, Kc)
            weight = (coef * (num_mask * scale).unsqueeze(-1)).reshape(self.out_dim, -1)
            y = F.linear(feats.flatten(1), weight, self.bias)  # batch may be 0
            y = y + F.linear(F.silu(x), self.w_base * num_mask)
        for js, _, v in self._symbolic_edge_values(x):
            y = y.index_add(1, js, v)
        return y

    def edge_values(self, x: torch.Tensor) -> torch.Tensor:
        """Per-edge φ_ij(x_i): (batch, in) → (batch, out, in). Σ_i plus bias equals forward."""
        num_mask = self.numeric_mask()
        feats, scale, coef = self._features_and_coef(x)  # (batch, in, Kc), (out, in, Kc)
        feats = feats * scale if scale != 1.0 else feats
        spline = torch.einsum("bik,oik->boi", feats, coef)
        values = (spline + F.silu(x).unsqueeze(1) * self.w_base) * num_mask
        for js, is_, v in self._symbolic_edge_values(x):
            values = values.index_put(
                (torch.arange(x.shape[0], device=x.device)[:, None], js, is_), v
            )
        return values

    def _features_and_coef(self, x: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor]:
        """The basis's features / scale (batch, in, Kc), scale and their coefficients (out, in,
        Kc): all K, or the ones `Basis.compact_features` names (S-KAN: each node's family)."""
        feats, scale, index = self.basis.compact_features(x)
        if index is None:
            return feats, scale, self.coef
        return feats, scale, self.coef.gather(-1, index.expand(self.out_dim, -1, -1))

    def spline_values(self, x: torch.Tensor) -> torch.Tensor:
        """The basis part only, Σ_k c_ijk B_k(x_i): (batch, out, in) (used by grid updates)."""
        return torch.einsum("bik,oik->boi", self.basis(x), self.coef)

    def spec(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "basis": self.basis.spec()}
