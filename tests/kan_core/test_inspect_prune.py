import torch

from kan_core.inspect import edge_curve, edge_curves, edge_scores, node_scores
from kan_core.model import KAN
from kan_core.prune import prune_edges
from kan_core.train import FitConfig, TrainData, fit


def trained_model():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 3, generator=g) * 2 - 1
    y = (torch.sin(2 * x[:, 0]) + x[:, 1] ** 2)[:, None]  # x2 is irrelevant
    model = KAN([3, 3, 1], seed=0)
    fit(model, TrainData(x, y), FitConfig(steps=300, lr=2e-2, lamb=1e-3))
    return model, x


def test_edge_curves_cover_every_edge_and_match_network():
    model, x = trained_model()
    curves = edge_curves(model, x, n_points=32, max_data_points=100)
    assert [len(c) for c in curves] == [9, 3]
    c = curves[0][0]
    assert c.x.shape == (32,) and c.y.shape == (32,) and c.data_x.shape == (100,)
    assert c.x.min() >= x[:, c.i].min().item() - 1e-6
    with torch.no_grad():
        direct = model.layers[0].edge_values(torch.tensor(c.x)[:, None].repeat(1, 3))[:, c.j, c.i]
    torch.testing.assert_close(torch.tensor(c.y), direct)
    one = edge_curve(model, x, 1, 2, 0)
    assert one.layer == 1 and one.x.shape == (200,)


def test_attribution_finds_irrelevant_input_and_pruning_drops_it():
    model, x = trained_model()
    inputs = node_scores(model, x)[0]
    assert inputs[2] < 0.2 * min(inputs[0], inputs[1])
    scores = edge_scores(model, x)
    assert scores[0].shape == (3, 3)
    result = prune_edges(model, x, threshold=0.05)
    assert result.pruned >= 1
    assert 2 not in result.kept_inputs and {0, 1} <= set(result.kept_inputs)
