import pytest
import torch

from kan_core.grid import refine
from kan_core.io import ModelFileError, load_model, model_from_bytes, model_to_bytes, save_model
from kan_core.model import KAN, MLP


@pytest.mark.parametrize("basis", ["bspline", "rbf", "chebyshev", "relu_kan", "rational"])
def test_round_trip_is_bit_exact(basis, tmp_path):
    model = KAN([3, 4, 2], grid=6, basis=basis, seed=4)
    x = torch.randn(40, 3)
    if basis == "bspline":
        refine(model, 9, x)
    model.layers[0].set_symbolic(2, 1, "gaussian", 0.3, 0.1, 2.0, -0.5)
    model.layers[1].mask[1, 3] = 0
    save_model(model, tmp_path / "m.safetensors", {"inputs": ["a", "b", "c"]})
    again, meta = load_model(tmp_path / "m.safetensors")
    assert meta == {"inputs": ["a", "b", "c"]}
    for (k1, v1), (k2, v2) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)
    assert torch.equal(model(x), again(x))
    assert again.layers[0].sym_names[1][2] == "gaussian"


def test_mlp_round_trip():
    mlp = MLP([2, 5, 1], seed=3)
    again, _ = model_from_bytes(model_to_bytes(mlp))
    x = torch.randn(5, 2)
    assert torch.equal(mlp(x), again(x))


@pytest.mark.parametrize("blob", [b"", b"\x00" * 7, b"garbage garbage garbage", b"\xff" * 64])
def test_garbage_is_a_clear_error(blob):
    with pytest.raises(ModelFileError):
        model_from_bytes(blob)
