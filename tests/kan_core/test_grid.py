import pytest
import torch

from kan_core.errors import ConfigError
from kan_core.grid import refine, update_grid, update_grid_from_samples
from kan_core.model import KAN


def _trained_like(seed: int = 0) -> KAN:
    model = KAN([2, 3, 1], grid=5, seed=seed).double()
    with torch.no_grad():
        for layer in model.layers:
            layer.coef.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    return model


def test_refine_keeps_the_function():
    model = _trained_like()
    x = torch.rand(500, 2, dtype=torch.float64) * 2 - 1
    update_grid(model, x)  # as during training: the grids cover the data
    before = model(x)
    refine(model, 20, x)  # 20 is a multiple of 5: the old spline space is nested in the new
    assert model.layers[0].coef.shape[-1] == 23
    assert (model(x) - before).abs().max() < 1e-6


def test_refine_to_any_grid_stays_close():
    model = _trained_like(3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 2, dtype=torch.float64, generator=g) * 2 - 1
    before = model(x)
    refine(model, 13, x)
    # 13 is not a multiple of 5, so this is a least-squares projection, not an exact one: over 40
    # samples of x the largest error was 0.6-1.1 % of the output's range (the old bound of 1 %
    # on an unseeded sample failed about one time in three); a broken refit is off by O(1)
    assert (model(x) - before).abs().max() < 2e-2 * before.abs().max()


@pytest.mark.parametrize("grid_eps", [1.0, 0.0, 0.5])
def test_update_grid_covers_samples_and_keeps_function_inside_old_range(grid_eps):
    model = _trained_like(1)
    layer = model.layers[0]
    x = torch.rand(400, 2, dtype=torch.float64) * 1.6 - 0.8  # inside the old grid (-1, 1)
    before = layer.spline_values(x)
    update_grid_from_samples(layer, x, grid_eps)
    knots = layer.basis.knots
    assert torch.all(knots[:, 3] <= x.min(0).values + 1e-9) and torch.all(
        knots[:, -4] >= x.max(0).values - 1e-9
    )
    assert layer.basis._uniform == (grid_eps == 1.0)
    # a cubic spline on 5 intervals cannot reproduce the old one exactly on new knots; close fit
    assert (layer.spline_values(x) - before).abs().max() < 0.05 * before.abs().max()


def test_update_grid_model_level_and_refine_validation():
    model = _trained_like(2)
    x = torch.randn(300, 2, dtype=torch.float64) * 3
    update_grid(model, x)
    assert model.layers[0].basis.knots[:, 3].max() <= x.min(0).values.max() + 1e-9
    with pytest.raises(ConfigError):
        refine(model, 0, x)
    with pytest.raises(ConfigError):
        update_grid_from_samples(model.layers[0], x, grid_eps=2.0)
