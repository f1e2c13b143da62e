"""``from kan_core import KAN, fit``: the public names resolve, lazily."""

from __future__ import annotations

import subprocess
import sys
from importlib import import_module

import kan_core
from kan_core import KAN, FitConfig, TrainData, fit
from kan_core import model as model_module


def test_every_public_name_resolves_to_its_module_object():
    assert sorted(kan_core.__all__) == sorted(kan_core._PUBLIC)
    for name, module in kan_core._PUBLIC.items():
        assert getattr(kan_core, name) is getattr(import_module(f"kan_core.{module}"), name)
    assert KAN is model_module.KAN and set(kan_core.__all__) <= set(dir(kan_core))


def test_unknown_name_is_an_attribute_error():
    try:
        kan_core.NotAThing  # noqa: B018
    except AttributeError as exc:
        assert "NotAThing" in str(exc)
    else:
        raise AssertionError("kan_core.NotAThing resolved")


def test_top_level_imports_train_a_kan():
    import torch

    x = torch.rand(64, 2) * 2 - 1
    model = KAN([2, 2, 1], seed=0)
    result = fit(model, TrainData(x, x[:, :1] * x[:, 1:]), FitConfig(steps=3))
    assert len(result.history) == 3


def test_import_kan_core_loads_neither_torch_nor_scikit_learn():
    code = "import sys, kan_core; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
