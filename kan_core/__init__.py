"""kan_core: interpretable Kolmogorov–Arnold Networks (PyTorch, sympy, compiled CPU kernels)
and formula discovery (`kan_core.discover`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The public API, importable from the top (``from kan_core import KAN, fit``; __all__ lists the
# same names). Loaded on first use (PEP 562), so ``import kan_core`` stays cheap and the
# scikit-learn estimators do not pull scikit-learn into a process that only trains. The
# function `discover` stays in `kan_core.discover`: a top-level name would be shadowed by the
# submodule of the same name once that is imported.
_PUBLIC = {
    "KAN": "model",
    "MLP": "model",
    "build_model": "model",
    "fit": "train",
    "fit_ensemble": "ensemble",
    "EnsembleConfig": "ensemble",
    "KANEnsemble": "ensemble",
    "FitConfig": "train",
    "FitProgress": "train",
    "FitResult": "train",
    "TrainData": "train",
    "auto_symbolic": "symbolic",
    "suggest": "symbolic",
    "fix": "symbolic",
    "unfix": "symbolic",
    "formula": "symbolic",
    "prune_edges": "prune",
    "edge_curves": "inspect",
    "edge_scores": "inspect",
    "model_to_bytes": "io",
    "model_from_bytes": "io",
    "save_model": "io",
    "load_model": "io",
    "DiscoveryResult": "discover",
    "KANRegressor": "sklearn",
    "KANClassifier": "sklearn",
    "Standardizer": "scaling",
    "KanCoreError": "errors",
    "ConfigError": "errors",
}
__all__ = [
    "ConfigError",
    "DiscoveryResult",
    "EnsembleConfig",
    "FitConfig",
    "FitProgress",
    "FitResult",
    "KAN",
    "KANClassifier",
    "KANEnsemble",
    "KANRegressor",
    "KanCoreError",
    "MLP",
    "Standardizer",
    "TrainData",
    "auto_symbolic",
    "build_model",
    "edge_curves",
    "edge_scores",
    "fit",
    "fit_ensemble",
    "fix",
    "formula",
    "load_model",
    "model_from_bytes",
    "model_to_bytes",
    "prune_edges",
    "save_model",
    "suggest",
    "unfix",
]

if TYPE_CHECKING:
    from kan_core.discover import DiscoveryResult
    from kan_core.ensemble import EnsembleConfig, KANEnsemble, fit_ensemble
    from kan_core.errors import ConfigError, KanCoreError
    from kan_core.inspect import edge_curves, edge_scores
    from kan_core.io import load_model, model_from_bytes, model_to_bytes, save_model
    from kan_core.model import KAN, MLP, build_model
    from kan_core.prune import prune_edges
    from kan_core.scaling import Standardizer
    from kan_core.sklearn import KANClassifier, KANRegressor
    from kan_core.symbolic import auto_symbolic, fix, formula, suggest, unfix
    from kan_core.train import FitConfig, FitProgress, FitResult, TrainData, fit


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'kan_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"kan_core.{_PUBLIC[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
