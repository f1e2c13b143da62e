import pytest
import torch

from kan_core.ensemble import (
    EnsembleConfig,
    KANEnsemble,
    _permute_node,
    align_hidden_units,
    edge_bands,
    ensemble_from_bytes,
    ensemble_to_bytes,
    fit_ensemble,
    formula_stability,
    interval_coverage,
    members_per_fit,
    resample_rows,
    stack_members,
    unstack_members,
)
from kan_core.errors import ConfigError
from kan_core.io import ModelFileError, model_to_bytes
from kan_core.model import KAN
from kan_core.train import FitConfig, TrainData


def _data(n=240, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    y = torch.sin(torch.pi * x[:, :1]) + x[:, 1:] ** 2 + noise * torch.randn(n, 1, generator=g)
    return x, y


def test_stacked_members_compute_each_member_side_by_side():
    members = [KAN([3, 4, 2], seed=s) for s in range(3)]
    wide = stack_members(members)
    x = torch.rand(50, 3) * 2 - 1
    with torch.no_grad():
        side_by_side = torch.cat([m(x) for m in members], dim=1)
        assert torch.allclose(wide(x.repeat(1, 3)), side_by_side, atol=1e-5)
        # member 1's outputs depend on member 1's input columns only
        x_wide = x.repeat(1, 3)
        x_wide[:, 3:6] = 0.0
        changed = wide(x_wide) - side_by_side
        assert changed[:, 2:4].abs().max() > 1e-3
        assert changed[:, [0, 1, 4, 5]].abs().max() < 1e-5
    back = unstack_members(wide, 3, [0, 1, 2])
    for original, recovered in zip(members, back, strict=True):
        recovered_state = recovered.state_dict()
        for key, value in original.state_dict().items():
            assert torch.equal(value, recovered_state[key]), key


def test_members_side_by_side_follow_their_separate_fits():
    x, y = _data(noise=0.05)
    fit_cfg = FitConfig(steps=60, lr=1e-2, update_grid_every=10, update_grid_until=40)
    config = EnsembleConfig(members=3, bootstrap="rows", seed=4, fit=fit_cfg)
    assert members_per_fit([2, 3, 1], config, 240) == 3  # 9 edges: all side by side
    together = fit_ensemble([2, 3, 1], TrainData(x, y), config)
    config.members_per_fit = 2
    blocks = fit_ensemble([2, 3, 1], TrainData(x, y), config)
    config.members_per_fit = 1
    separate = fit_ensemble([2, 3, 1], TrainData(x, y), config)
    assert [len(e.results) for e in (together, blocks, separate)] == [1, 2, 3]
    a = together.member_predictions(x)
    assert a.shape == (3, 240, 1)
    for other in (blocks, separate):
        assert (a - other.member_predictions(x)).abs().max() < 2e-3 * y.std()
    assert (a[0] - a[1]).abs().max() > 1e-2  # different seeds and rows: different members


def test_auto_members_per_fit_keeps_the_wide_kan_within_the_work_budget():
    regularised = EnsembleConfig(members=8, fit=FitConfig(lamb=1e-3))
    plain = EnsembleConfig(members=8)
    assert members_per_fit([10, 4, 1], regularised, 153) == 4  # measured best: 4 per fit
    assert members_per_fit([10, 4, 1], plain, 153) == 8
    assert members_per_fit([38, 4, 1], regularised, 319) == 2
    assert members_per_fit([38, 4, 1], plain, 319) == 4  # two even blocks
    assert members_per_fit([200, 20, 1], plain, 10_000) == 1
    assert members_per_fit([200, 20, 1], EnsembleConfig(members=8, members_per_fit=3), 9) == 3


def test_group_bootstrap_draws_whole_groups():
    groups = [r // 4 for r in range(40)]  # 10 groups of 4 rows
    rows = resample_rows(40, EnsembleConfig(members=5, bootstrap="groups", seed=1), groups)
    assert all(len(r) == 40 for r in rows)
    counts = [torch.bincount(torch.tensor([groups[i] for i in r]), minlength=10) for r in rows]
    assert any((c == 0).any() for c in counts)  # some groups left out of some members
    assert len({tuple(c.tolist()) for c in counts}) > 1
    same = resample_rows(40, EnsembleConfig(members=5, bootstrap="groups", seed=1), groups)
    assert all(torch.equal(a, b) for a, b in zip(rows, same, strict=True))
    assert all(torch.equal(r, torch.arange(40)) for r in resample_rows(40, EnsembleConfig()))


def test_alignment_undoes_a_permutation_of_hidden_nodes():
    x = torch.rand(100, 3) * 2 - 1
    member = KAN([3, 4, 1], seed=0)
    shuffled = KAN([3, 4, 1], seed=0)
    _permute_node(shuffled, 0, torch.tensor([2, 0, 3, 1]))
    with torch.no_grad():
        assert torch.allclose(shuffled(x), member(x), atol=1e-5)  # same function
        assert not torch.allclose(shuffled.layers[0].coef, member.layers[0].coef)
        aligned = align_hidden_units([member, shuffled], x)[1]
        assert torch.allclose(aligned.layers[0].coef, member.layers[0].coef)
        assert torch.allclose(aligned(x), member(x), atol=1e-5)


def test_calibrated_interval_covers_fresh_rows_at_about_the_nominal_level():
    x, y = _data(n=300, noise=0.2, seed=1)
    x_cal, y_cal = _data(n=300, noise=0.2, seed=2)
    x_new, y_new = _data(n=2000, noise=0.2, seed=3)
    config = EnsembleConfig(members=4, bootstrap="rows", fit=FitConfig(steps=150))
    ensemble = fit_ensemble([2, 1], TrainData(x, y), config)
    raw = interval_coverage(ensemble.predict(x_new), y_new)
    calibrated = ensemble.calibrate(x_cal, y_cal, level=0.9)
    assert 0.12 < float(calibrated.noise_std) < 0.28  # the noise added to y
    coverage, width = interval_coverage(calibrated.predict(x_new, level=0.9), y_new)
    assert 0.85 <= coverage <= 0.95
    assert raw[0] < 0.6 and width > raw[1]  # the members' spread alone is far too narrow

    loaded, metadata = ensemble_from_bytes(ensemble_to_bytes(calibrated, {"target": "y"}))
    assert metadata == {"target": "y"}
    before, after = calibrated.predict(x_new), loaded.predict(x_new)
    assert torch.allclose(before.lower, after.lower) and torch.allclose(before.upper, after.upper)
    with pytest.raises(ModelFileError, match="ensemble"):
        ensemble_from_bytes(model_to_bytes(KAN([2, 1])))


def test_bands_and_formula_stability_of_an_additive_ensemble():
    x, y = _data(n=200)
    config = EnsembleConfig(members=3, fit=FitConfig(steps=150))
    ensemble = fit_ensemble([2, 1], TrainData(x, y), config)
    (bands,) = edge_bands(ensemble, x, points=32, level=0.8)
    assert bands.values.shape == (3, 32, 1, 2) and bands.x.shape == (32, 2)
    assert (bands.lower <= bands.mean + 1e-6).all() and (bands.mean <= bands.upper + 1e-6).all()
    assert torch.allclose(bands.x[[0, -1], 0], torch.stack([x[:, 0].min(), x[:, 0].max()]))
    stability = formula_stability(ensemble, x, library=["x", "x^2", "sin", "exp"])
    assert [(s.layer, s.i, s.j) for s in stability] == [(0, 0, 0), (0, 1, 0)]
    assert (stability[0].top, stability[0].share) == ("sin", 1.0)


def test_formula_stability_counts_members_that_disagree():
    x = torch.rand(200, 2) * 2 - 1
    members = [KAN([2, 1], seed=s) for s in range(3)]
    for m, member in enumerate(members):
        member.layers[0].set_symbolic(0, 0, "sin" if m == 0 else "x^2", 2.0, 0.3, 1.5, 0.0)
        member.layers[0].set_symbolic(1, 0, "x", 1.0, 0.0, -2.0, 0.5)
    stability = formula_stability(KANEnsemble(members, []), x, library=["x", "x^2", "sin"])
    assert stability[0].best == ["sin", "x^2", "x^2"]
    assert (stability[0].top, stability[0].agree) == ("x^2", 2)
    assert (stability[1].top, stability[1].agree) == ("x", 3)


def test_ensemble_config_errors_name_the_problem():
    x, y = _data(n=20)
    with pytest.raises(ConfigError, match="regression only"):
        fit_ensemble([2, 1], TrainData(x, y), EnsembleConfig(fit=FitConfig(task="classification")))
    with pytest.raises(ConfigError, match="group label per training row"):
        fit_ensemble([2, 1], TrainData(x, y), EnsembleConfig(bootstrap="groups"))
    with pytest.raises(ConfigError, match="Available"):
        EnsembleConfig(bootstrap="cases").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="members_per_fit"):
        EnsembleConfig(members_per_fit=0).validate()
    with pytest.raises(ConfigError, match="model_options"):
        fit_ensemble([2, 1], TrainData(x, y), model_options={"seed": 3})


def test_ensemble_file_keeps_members_built_with_other_options():
    x, y = _data(n=40, noise=0.0, seed=4)
    config = EnsembleConfig(members=3, fit=FitConfig(steps=3))
    ensemble = fit_ensemble([2, 2, 1], TrainData(x, y), config, model_options={"grid": 7, "k": 2})
    loaded, _ = ensemble_from_bytes(ensemble_to_bytes(ensemble))
    assert loaded.members[1].config()["grid"] == 7 and loaded.members[1].k == 2
    assert torch.allclose(loaded.predict(x).mean, ensemble.predict(x).mean, atol=1e-6)


@pytest.mark.parametrize("engine", ["fused-cpu", "torch"])
def test_ensemble_resumed_from_a_stored_checkpoint_is_bit_exact(engine):
    from kan_core.io import checkpoint_from_bytes, checkpoint_to_bytes
    from kan_core.train import EnsembleCheckpoint

    x, y = _data(noise=0.05)
    data = TrainData(x[:200], y[:200], x[200:], y[200:])
    fit_cfg = FitConfig(steps=30, lr=1e-2, batch_size=64, update_grid_every=10,
                        update_grid_until=20, early_stopping_patience=100,
                        checkpoint_every=7, engine=engine)  # fmt: skip
    # 5 members, 2 per fit: blocks of 2, 2, 1, so a checkpoint may follow finished blocks
    config = EnsembleConfig(members=5, bootstrap="rows", seed=2, members_per_fit=2, fit=fit_cfg)
    straight = fit_ensemble([2, 3, 1], data, config)

    stored: list[bytes] = []
    seen: list[int] = []
    fit_ensemble([2, 3, 1], data, config, callback=lambda p: seen.append(p.step),
                 on_checkpoint=lambda c: stored.append(checkpoint_to_bytes(c)))  # fmt: skip
    restored = [checkpoint_from_bytes(b) for b in stored]
    assert all(isinstance(c, EnsembleCheckpoint) for c in restored)
    # 4 per block (steps 7, 14, 21, 28 of 30), counted over the blocks one after another
    assert [c.step for c in restored] == [b * 30 + s for b in range(3) for s in (7, 14, 21, 28)]
    assert [len(c.finished_states) for c in restored] == [0] * 4 + [1] * 4 + [2] * 4

    for ckpt in (restored[1], restored[6]):  # inside block 0; inside block 1, block 0 done
        assert isinstance(ckpt, EnsembleCheckpoint)
        progress: list = []
        resumed = fit_ensemble([2, 3, 1], data, config, callback=progress.append, resume=ckpt)
        steps = [p.step for p in progress]
        assert steps[0] == ckpt.current.step + 1 and len(steps) == 90 - ckpt.step
        assert [r.best_step for r in resumed.results] == [r.best_step for r in straight.results]
        for a, b in zip(straight.members, resumed.members, strict=True):
            for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
                assert torch.equal(va, vb), key

    config.members = 6  # another ensemble: refused, naming both
    with pytest.raises(ConfigError, match="checkpoint is of an ensemble of 5 members"):
        fit_ensemble([2, 3, 1], data, config, resume=restored[1])  # type: ignore[arg-type]
