"""KAN and MLP models with the same training API.

Constructors have no side effects: seeding uses a local `torch.Generator` (the global RNG is
untouched) and the `width` list given is copied, never rewritten.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kan_core import spline_layer
from kan_core.engine import Engine, layer_engine
from kan_core.errors import ConfigError
from kan_core.layers import KANLayer

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def _check_width(width: Sequence[int]) -> list[int]:
    w = list(width)
    if len(w) < 2:
        raise ConfigError(f"width needs at least an input and an output size, got {w}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in w):
        raise ConfigError(f"every width entry must be an integer ≥ 1, got {w}")
    return w


class KANLayers(nn.ModuleList):
    """A ModuleList of KANLayers (typed for the checker)."""

    if TYPE_CHECKING:

        def __getitem__(self, idx: int) -> KANLayer: ...  # type: ignore[override]

        def __len__(self) -> int: ...

        def __iter__(self) -> Iterator[KANLayer]: ...


@dataclass
class LayerTrace:
    """What one layer saw and produced on a batch (returned, never cached on the model)."""

    inputs: torch.Tensor  # (batch, in)
    edge_values: torch.Tensor  # (batch, out, in)
    outputs: torch.Tensor  # (batch, out)


class KAN(nn.Module):
    """Kolmogorov–Arnold Network: a stack of KANLayers, width = [n_in, hidden…, n_out]."""

    kind = "kan"

    def __init__(
        self,
        width: Sequence[int],
        grid: int = 5,
        k: int = 3,
        basis: str = "bspline",
        grid_range: tuple[float, float] = (-1.0, 1.0),
        seed: int = 0,
        noise_scale: float = 0.3,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.width = _check_width(width)
        self.grid, self.k, self.basis_name = grid, k, basis
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        self.seed, self.noise_scale = seed, noise_scale
        g = torch.Generator().manual_seed(seed)
        self.layers = KANLayers(
            KANLayer(a, b, grid, k, basis, self.grid_range, noise_scale, generator=g)
            for a, b in zip(self.width[:-1], self.width[1:], strict=True)
        )
        self.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        engine = self.forward_engine(x)
        if engine is not Engine.TORCH:  # the whole stack as one fused autograd node
            return spline_layer.spline_network(x, list(self.layers), engine)
        for layer in self.layers:  # layer by layer (each may still fuse its numeric part)
            x = layer(x)
        return x

    def forward_engine(self, x: torch.Tensor) -> Engine:
        """The kernels that compute the whole network on x as one node (`engine.layer_engine`),
        TORCH when any layer has symbolic edges."""
        if any(layer.has_symbolic for layer in self.layers):
            return Engine.TORCH
        return layer_engine(list(self.layers), x)

    def forward_with_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, list[LayerTrace]]:
        traces = []
        for layer in self.layers:
            values = layer.edge_values(x)
            out = values.sum(-1) + layer.bias
            traces.append(LayerTrace(inputs=x, edge_values=values, outputs=out))
            x = out
        return x, traces

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "width": list(self.width),
            "grid": self.layers[0].basis.spec().get("grid", self.grid),
            "k": self.k,
            "basis": self.basis_name,
            "grid_range": list(self.grid_range),
            "seed": self.seed,
            "noise_scale": self.noise_scale,
            "sym_names": [layer.sym_names for layer in self.layers],
        }

    def num_parameters(self) -> int:
        """Trainable numbers that shape the function: numeric edges (coefficients + base
        weight), the four affine constants of each symbolic edge, biases and basis parameters."""
        total = 0
        for layer in self.layers:
            numeric = int((layer.numeric_mask() > 0).sum())
            symbolic = int(((layer.sym_mask > 0) & (layer.mask > 0)).sum())
            total += numeric * (layer.coef.shape[-1] + 1) + 4 * symbolic + layer.bias.numel()
            total += sum(p.numel() for p in layer.basis.parameters())
        return total


class MLP(nn.Module):
    """Plain multi-layer perceptron baseline with the KAN's training API."""

    kind = "mlp"

    def __init__(
        self,
        width: Sequence[int],
        activation: str = "silu",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.width = _check_width(width)
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"Unknown activation {activation!r}. Available: {sorted(ACTIVATIONS)}"
            )
        self.activation, self.seed = activation, seed
        g = torch.Generator().manual_seed(seed)
        mods: list[nn.Module] = []
        for n, (a, b) in enumerate(zip(self.width[:-1], self.width[1:], strict=True)):
            lin = torch.nn.utils.skip_init(nn.Linear, a, b)  # no global-RNG init
            bound = 1.0 / a**0.5  # PyTorch's default init, drawn from our own generator
            with torch.no_grad():
                lin.weight.copy_((torch.rand(b, a, generator=g) * 2 - 1) * bound)
                lin.bias.copy_((torch.rand(b, generator=g) * 2 - 1) * bound)
            mods.append(lin)
            if n < len(self.width) - 2:
                mods.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*mods)
        self.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "width": list(self.width),
            "activation": self.activation,
            "seed": self.seed,
        }

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def build_model(config: dict[str, Any], device: str | torch.device | None = None) -> KAN | MLP:
    """Rebuild a model (untrained weights) from `model.config()`."""
    kind = config.get("kind")
    if kind == "kan":
        model = KAN(
            config["width"],
            grid=int(config["grid"]),
            k=int(config["k"]),
            basis=config["basis"],
            grid_range=tuple(config.get("grid_range", (-1.0, 1.0))),  # type: ignore[arg-type]
            seed=int(config.get("seed", 0)),
            noise_scale=float(config.get("noise_scale", 0.3)),
            device=device,
        )
        for layer, names in zip(model.layers, config.get("sym_names") or [], strict=False):
            layer.load_sym_names(names)
        return model
    if kind == "mlp":
        return MLP(
            config["width"],
            activation=config.get("activation", "silu"),
            seed=int(config.get("seed", 0)),
            device=device,
        )
    if kind == "rbf_subspace":
        from kan_core.rbf_subspace import RBFSubspaceNet  # noqa: PLC0415 (kept out of import)

        n_in, n_out = (int(n) for n in config["width"])
        return RBFSubspaceNet(  # type: ignore[return-value]
            n_in,
            n_out,
            subspace_dim=int(config["subspace_dim"]),
            centres=int(config["centres"]),
            seed=int(config.get("seed", 0)),
            device=device,
        )
    raise ConfigError(f"Unknown model kind {kind!r}. Available: ['kan', 'mlp', 'rbf_subspace']")
