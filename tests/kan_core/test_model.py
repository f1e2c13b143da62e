import pytest
import torch

from kan_core.errors import ConfigError
from kan_core.functions import UnknownFunctionError
from kan_core.model import KAN, MLP, build_model


def test_constructor_does_not_touch_global_rng_or_mutate_width():
    width = [3, 4, 2]
    state = torch.get_rng_state()
    KAN(width, seed=123)
    MLP(width, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    assert width == [3, 4, 2]


def test_same_seed_same_weights_different_seed_different():
    a, b, c = KAN([2, 3, 1], seed=5), KAN([2, 3, 1], seed=5), KAN([2, 3, 1], seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.layers[0].w_base, c.layers[0].w_base)


@pytest.mark.parametrize("width", [[], [3], [3, 0, 1], [2, -1], [2.5, 1]])
def test_bad_width_rejected(width):
    with pytest.raises(ConfigError):
        KAN(width)


def test_forward_equals_sum_of_edge_values_including_symbolic_edges():
    model = KAN([3, 4, 2], seed=1).double()
    model.layers[0].set_symbolic(1, 2, "sin", 1.5, 0.2, -0.7, 0.3)
    model.layers[1].set_symbolic(0, 1, "x^2", 0.5, 0.0, 2.0, -1.0)
    model.layers[0].mask[3, 0] = 0.0
    x = torch.randn(50, 3, dtype=torch.float64)
    y, traces = model.forward_with_activations(x)
    torch.testing.assert_close(model(x), y)
    t = traces[0]
    expected = -0.7 * torch.sin(1.5 * x[:, 1] + 0.2) + 0.3
    torch.testing.assert_close(t.edge_values[:, 2, 1], expected)
    assert torch.all(t.edge_values[:, 3, 0] == 0)


def test_symbolic_edge_gradients_reach_affine_parameters():
    model = KAN([2, 1], seed=0)
    model.layers[0].set_symbolic(0, 0, "exp", 1.0, 0.0, 1.0, 0.0)
    model(torch.randn(8, 2)).sum().backward()
    g = model.layers[0].sym_affine.grad
    assert g is not None and g[0, 0].abs().sum() > 0 and g[0, 1].abs().sum() == 0


def test_unknown_symbolic_name_and_bad_edge_rejected():
    layer = KAN([2, 1]).layers[0]
    with pytest.raises(UnknownFunctionError, match="Available functions"):
        layer.set_symbolic(0, 0, "exp(1)", 1, 0, 1, 0)
    with pytest.raises(ConfigError, match="does not exist"):
        layer.set_symbolic(5, 0, "sin", 1, 0, 1, 0)


def test_build_model_round_trips_config():
    model = KAN([2, 3, 1], grid=7, k=2, basis="rbf", seed=3)
    model.layers[1].set_symbolic(2, 0, "tanh", 1, 0, 1, 0)
    again = build_model(model.config())
    assert again.config() == model.config()
    assert build_model(MLP([2, 8, 1], activation="tanh").config()).config()["activation"] == "tanh"


def test_parameter_count_counts_active_edges():
    model = KAN([2, 3, 1], grid=5, k=3)
    full = model.num_parameters()
    assert full == 9 * (8 + 1) + 3 + 1
    model.layers[0].mask[0, 0] = 0
    assert model.num_parameters() == full - 9
    model.layers[1].set_symbolic(0, 0, "sin", 1, 0, 1, 0)
    assert model.num_parameters() == full - 9 - 9 + 4
