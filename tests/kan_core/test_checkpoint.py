"""Checkpoints: a fit stopped at a checkpoint and resumed follows the uninterrupted trajectory."""

import pytest
import torch

from kan_core.errors import ConfigError
from kan_core.io import ModelFileError, checkpoint_from_bytes, checkpoint_to_bytes
from kan_core.model import KAN
from kan_core.train import FitCheckpoint, FitConfig, TrainData, fit


def _data(n: int = 300) -> TrainData:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    y = torch.sin(torch.pi * x[:, :1]) + x[:, 1:] ** 2
    return TrainData.split(x, y, 0.2, seed=1)


CONFIGS = {
    "adam-minibatch-early-stopping": FitConfig(
        steps=40, lr=0.02, batch_size=64, early_stopping_patience=100, checkpoint_every=7
    ),
    "lbfgs-full-batch-grid-updates": FitConfig(
        steps=12, optimizer="lbfgs", lr=1.0, update_grid_every=3, checkpoint_every=5
    ),
    "adam-regularised": FitConfig(steps=20, lr=0.02, lamb=1e-3, checkpoint_every=6),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_from_stored_checkpoint_is_bit_exact(name):
    cfg, data = CONFIGS[name], _data()
    straight = KAN([2, 3, 1], grid=5, seed=0)
    fit(straight, data, cfg)

    stored: list[bytes] = []
    first = KAN([2, 3, 1], grid=5, seed=0)
    fit(first, data, cfg, on_checkpoint=lambda c: stored.append(checkpoint_to_bytes(c)))
    expected_steps = [s for s in range(1, cfg.steps) if s % cfg.checkpoint_every == 0]
    restored = [checkpoint_from_bytes(b) for b in stored]
    assert [c.step for c in restored] == expected_steps

    # a fresh process would build the model anew from its config and resume from the database
    resumed = KAN([2, 3, 1], grid=5, seed=99)
    steps_seen: list[int] = []
    fit(resumed, data, cfg, lambda p: steps_seen.append(p.step), resume=restored[0])
    assert steps_seen[0] == restored[0].step + 1 and steps_seen[-1] == cfg.steps
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_round_trip_keeps_types_and_values():
    ckpt = FitCheckpoint(
        step=3,
        model_state={"w": torch.arange(4.0)},
        optimizer_state={"state": {0: {"old_dirs": [torch.ones(2)], "t": 0.5}}, "param_groups": []},
        rng_state=torch.Generator().manual_seed(1).get_state(),
        perm=torch.tensor([2, 0, 1]),
        cursor=1,
        first_loss=2.0,
        best_val=float("inf"),
        best_step=0,
        since_best=0,
    )
    back = checkpoint_from_bytes(checkpoint_to_bytes(ckpt))
    assert back.best_val == float("inf") and back.best_state is None
    assert list(back.optimizer_state["state"]) == [0]  # int keys survive
    assert torch.equal(back.optimizer_state["state"][0]["old_dirs"][0], torch.ones(2))
    assert torch.equal(back.rng_state, ckpt.rng_state) and back.perm.dtype == torch.int64


def test_checkpoint_errors_are_clear():
    with pytest.raises(ModelFileError, match="checkpoint"):
        checkpoint_from_bytes(b"\x00" * 4)
    model = KAN([2, 1], seed=0)
    data = _data(50)
    stored: list = []
    fit(model, data, FitConfig(steps=4, checkpoint_every=2), on_checkpoint=stored.append)
    with pytest.raises(ConfigError, match="outside"):
        fit(model, data, FitConfig(steps=1), resume=stored[0])
