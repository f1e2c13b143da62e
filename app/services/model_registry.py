"""The model kinds a run (and a leaderboard entry) can name, built explicitly: the torch trainer's
``kan`` and ``mlp``, the scikit-learn baselines, formula discovery, then the modules named in
``KANSCOPE_MODEL_PLUGINS`` (imported once per process, so a spawned or remote trainer knows the
same kinds), which call :func:`register_model`."""

from __future__ import annotations

import importlib
import logging

from app.config import get_settings
from app.services.baselines import BASELINE_SPECS
from app.services.design import DESIGN_SPEC
from app.services.discovery import DISCOVERY_SPEC
from app.services.errors import InvalidInputError
from app.services.model_contract import ModelSpec
from app.services.rbf_trainer import RBF_SUBSPACE_SPEC
from app.services.torch_trainer import KAN_SPEC, MLP_SPEC

log = logging.getLogger("kanscope.training")

MODEL_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        KAN_SPEC,
        MLP_SPEC,
        RBF_SUBSPACE_SPEC,
        *BASELINE_SPECS,
        DISCOVERY_SPEC,
        DESIGN_SPEC,
    )
}
_plugins_loaded = False


def register_model(spec: ModelSpec) -> None:
    """Add a model kind (a ``KANSCOPE_MODEL_PLUGINS`` module calls this when imported)."""
    MODEL_REGISTRY[spec.name] = spec


def _load_plugins() -> None:
    """Import the ``KANSCOPE_MODEL_PLUGINS`` modules, once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in (m.strip() for m in get_settings().model_plugins.split(",")):
        if not module:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            log.warning("model plugin %s not loaded: %s", module, exc)


def available_models() -> dict[str, ModelSpec]:
    _load_plugins()
    return dict(MODEL_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    models = available_models()
    if name not in models:
        raise InvalidInputError(f"Unknown model {name!r}. Available models: {sorted(models)}")
    return models[name]
