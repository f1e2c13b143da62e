"""Column standardisation for tabular data; the statistics travel with the model for formulas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Standardizer:
    mean: torch.Tensor  # (n_cols,)
    std: torch.Tensor  # (n_cols,), never 0

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardizer:
        """Column means and standard deviations of x (rows, cols); a constant column gets std 1."""
        x2 = x.reshape(x.shape[0], -1).to(torch.float64)
        mean = x2.mean(0)
        std = x2.std(0, unbiased=False) if x2.shape[0] > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return cls(mean.to(x.dtype), std.to(x.dtype))

    @classmethod
    def fit_range(cls, x: torch.Tensor, lo: float = -1.0, hi: float = 1.0) -> Standardizer:
        """Maps each column of x (rows, cols) linearly onto [lo, hi] (a constant column is only
        shifted): a KAN's initial grid spans its ``grid_range``, so inputs in that range meet
        the spline from the first step."""
        x2 = x.reshape(x.shape[0], -1).to(torch.float64)
        xmin, xmax = x2.min(0).values, x2.max(0).values
        scale = (xmax - xmin) / (hi - lo)
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
        mean = (xmin + xmax) / 2 - scale * (lo + hi) / 2
        return cls(mean.to(x.dtype), scale.to(x.dtype))

    @classmethod
    def identity(cls, n_cols: int) -> Standardizer:
        return cls(torch.zeros(n_cols), torch.ones(n_cols))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.to(x) + self.mean.to(x)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        return cls(
            torch.tensor(d["mean"], dtype=torch.float64).float(),
            torch.tensor(d["std"], dtype=torch.float64).float(),
        )
