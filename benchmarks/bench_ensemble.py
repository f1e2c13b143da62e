"""KAN ensembles (`kan_core.ensemble`) on the shipped HEA regression tables: interval
calibration on held-out groups, members side by side vs separate fits, per-edge bands, formula
stability.

    .venv/bin/python benchmarks/bench_ensemble.py                  # writes results/ensemble.md
    .venv/bin/python benchmarks/bench_ensemble.py --sets gorsse --members 4 --quick
    .venv/bin/python benchmarks/bench_ensemble.py --checkpoint-overhead  # its own section only

Same folds as benchmarks/bench_hea.py (`make_split`: 5-fold GroupKFold by composition /
formula, seed 0). Per fold: 20 % of the training groups are held back (`inner_validation_split`)
for early stopping and calibration; inputs and target standardised on the other 80 %; an
ensemble of `--members` KANs [d, 4, 1] (the leaderboard's KAN settings) is trained once per
bootstrap mode ("none": seeds only; "groups": each member on a bootstrap resample of the
training groups). The nominal 90 % interval is scored on the fold's test groups, pooled over
folds, three ways: the members' spread alone (mean ± z·std), with the residual-noise term,
and with the noise term and the split-conformal scale (both fitted on the held-back groups).
Timing (fold 0): the same ensemble as one vectorised `fit` and as `--members` separate `fit`
calls, back to back in this process. Formula stability and edge bands (fold 0): an additive
ensemble [d, 1] (y = Σ φ_i(x_i)), so every member's edge i is the same input's effect.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_hea import KAN_PARAMS, SETS, write_section  # noqa: E402

from app.services.evaluation import (  # noqa: E402
    SplitSpec,
    group_labels,
    inner_validation_split,
    make_split,
)
from kan_core.ensemble import (  # noqa: E402
    EnsembleConfig,
    KANEnsemble,
    edge_bands,
    fit_ensemble,
    formula_stability,
    interval_coverage,
    members_per_fit,
)
from kan_core.functions import resolve_library  # noqa: E402
from kan_core.io import checkpoint_to_bytes  # noqa: E402
from kan_core.metrics import r2_score  # noqa: E402
from kan_core.scaling import Standardizer  # noqa: E402
from kan_core.train import FitConfig, TrainData  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ensemble.md"
LEVEL = 0.9
VARIANTS = ("members", "+ noise", "+ noise, conformal")
SHAPES = [f.name for f in resolve_library(None) if f.name != "0"]  # which shape, not whether


def fit_config(steps: int, lamb: float) -> FitConfig:
    """The leaderboard KAN's training settings (`leaderboard.network_defaults` + KAN_PARAMS)."""
    return FitConfig(
        steps=steps, lr=1e-2, lamb=lamb, grid_eps=KAN_PARAMS["grid_eps"],
        update_grid_every=10, update_grid_until=100, early_stopping_patience=100,
    )  # fmt: skip


def tensor(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


class Fold:
    """One outer fold: fitting / held-back / test rows, standardised on the fitting rows."""

    def __init__(self, x, y, groups, train_rows, test_rows, seed):
        fit_rows, val_rows = inner_validation_split(train_rows, groups, 0.2, seed)
        x_scaler = Standardizer.fit(tensor(x[fit_rows]))  # a constant column keeps std 1
        self.y_mean, self.y_std = y[fit_rows].mean(), y[fit_rows].std()
        xs, ys = x_scaler.transform(tensor(x)), tensor((y - self.y_mean) / self.y_std)[:, None]
        self.data = TrainData(xs[fit_rows], ys[fit_rows], xs[val_rows], ys[val_rows])
        self.fit_groups = groups[fit_rows]
        self.x_test, self.y_test = xs[test_rows], ys[test_rows]


def variants(ensemble: KANEnsemble, fold: Fold) -> dict[str, KANEnsemble]:
    x_val, y_val = fold.data.x_val, fold.data.y_val
    assert x_val is not None and y_val is not None
    return {
        "members": ensemble,
        "+ noise": ensemble.calibrate(x_val, y_val, LEVEL, conformal=False),
        "+ noise, conformal": ensemble.calibrate(x_val, y_val, LEVEL, conformal=True),
    }


def run_set(bench, args) -> dict:
    out, (x, y, groups, split, features) = calibration(bench, args)
    width = [len(features), *KAN_PARAMS["hidden"], 1]
    options = {"grid": KAN_PARAMS["grid"]}
    fold0 = Fold(x, y, groups, *split.folds()[0], seed=0)
    out["timing"] = timing(width, options, fold0, args)
    out["stability"] = stability(features, options, fold0, args)
    return out


def calibration(bench, args, split_seed: int = 0) -> tuple[dict, tuple]:
    """Per bootstrap mode in `args.bootstrap`: an ensemble of `args.members` KANs per fold
    (`args.folds` grouped folds of `make_split`, seed `split_seed`, fold k seeded with
    `split_seed + k`; `args.steps`, `args.lamb`),
    its 90 % interval three ways (`VARIANTS`) scored on the test groups pooled over folds:
    coverage, fold range, mean width in the target's units, R² of the ensemble mean and of the
    members. Also returns (x, y, groups, split, features). bench_hea.py --models ensemble
    writes these rows into hea.md."""
    df = bench.frame()
    features = bench.features(df)
    x = df[features].to_numpy(dtype=float)
    y = df[bench.target].to_numpy(dtype=float)
    groups = group_labels(df, bench.group_by)
    spec = SplitSpec(n_splits=args.folds, group_by=bench.group_by, seed=split_seed)
    split = make_split(df, spec)
    width = [len(features), *KAN_PARAMS["hidden"], 1]
    options = {"grid": KAN_PARAMS["grid"]}
    out: dict = {"n_rows": len(df), "n_groups": split.n_groups, "d": len(features), "modes": {}}
    for mode in args.bootstrap:
        inside = {v: [] for v in VARIANTS}
        widths = {v: [] for v in VARIANTS}
        per_fold, r2_mean, r2_members, seconds = [], [], [], []
        for k, (train_rows, test_rows) in enumerate(split.folds()):
            fold = Fold(x, y, groups, train_rows, test_rows, seed=split_seed + k)
            config = EnsembleConfig(
                args.members, mode, seed=split_seed + k, fit=fit_config(args.steps, args.lamb)
            )
            start = time.perf_counter()
            ensemble = fit_ensemble(width, fold.data, config, groups=fold.fit_groups,
                                    model_options=options)  # fmt: skip
            seconds.append(time.perf_counter() - start)
            fold_cov = {}
            for name, calibrated in variants(ensemble, fold).items():
                pred = calibrated.predict(fold.x_test, LEVEL)
                y_t = fold.y_test
                inside[name].append(((y_t >= pred.lower) & (y_t <= pred.upper)).flatten())
                widths[name].append((pred.upper - pred.lower).flatten() * fold.y_std)
                fold_cov[name] = interval_coverage(pred, y_t)[0]
            pred = ensemble.predict(fold.x_test)
            r2_mean.append(r2_score(fold.y_test, pred.mean))
            r2_members.append(float(np.mean([r2_score(fold.y_test, p) for p in pred.members])))
            per_fold.append(fold_cov)
            print(f"  {mode:6s} fold {k}: {seconds[-1]:.1f} s, steps {ensemble.results[0].best_step}, "
                  f"R² {r2_mean[-1]:.3f}, coverage " +
                  ", ".join(f"{v} {c:.2f}" for v, c in fold_cov.items()), flush=True)  # fmt: skip
        out["modes"][mode] = {
            "coverage": {v: float(torch.cat(inside[v]).double().mean()) for v in VARIANTS},
            "width": {v: float(torch.cat(widths[v]).mean()) for v in VARIANTS},
            "fold_range": {
                v: (min(f[v] for f in per_fold), max(f[v] for f in per_fold)) for v in VARIANTS
            },
            "r2_mean": float(np.mean(r2_mean)),
            "r2_members": float(np.mean(r2_members)),
            "seconds": float(np.mean(seconds)),
            "y_std": float(y.std()),
        }
    return out, (x, y, groups, split, features)


def timing(width, options, fold: Fold, args) -> list[dict]:
    """The same ensemble (bootstrap over groups) with every member side by side in one `fit`,
    with the automatic `members_per_fit`, and as a `fit` per member, at the leaderboard's λ
    (the regularised step: numba/torch engines) and at λ = 0 (native/fused engines)."""
    rows = []
    for lamb in dict.fromkeys([args.lamb, 0.0]):
        cfg = EnsembleConfig(args.members, "groups", seed=0, fit=fit_config(args.steps, lamb))
        row: dict = {"lamb": lamb, "per_fit": members_per_fit(width, cfg, len(fold.data.x_train))}
        # the first run also warms up kernels compiled per shape
        for label, per_fit in (("warm-up", args.members), ("one fit", args.members),
                               ("auto", None), ("separate", 1)):  # fmt: skip
            cfg.members_per_fit = per_fit
            start = time.perf_counter()
            ensemble = fit_ensemble(width, fold.data, cfg, groups=fold.fit_groups,
                                    model_options=options)  # fmt: skip
            seconds = time.perf_counter() - start
            row[label] = {
                "seconds": seconds,
                "steps": sum(
                    len(r.history) * n
                    for r, n in zip(
                        ensemble.results, _blocks(cfg, width, len(fold.data.x_train)), strict=True
                    )
                ),
                "engine": ensemble.results[0].engine,
                "r2": r2_score(fold.y_test, ensemble.predict(fold.x_test).mean),
            }
            print(f"  timing λ={lamb:g} {label}: {seconds:.1f} s", flush=True)
        rows.append(row)
    return rows


def _blocks(cfg: EnsembleConfig, width, rows: int) -> list[int]:
    per_fit = members_per_fit(width, cfg, rows)
    return [min(per_fit, cfg.members - first) for first in range(0, cfg.members, per_fit)]


def stability(features, options, fold: Fold, args) -> dict:
    """Additive ensemble [d, 1]: best candidate per input edge across members; band widths."""
    cfg = EnsembleConfig(args.members, "groups", seed=0, fit=fit_config(args.steps, args.lamb))
    ensemble = fit_ensemble([len(features), 1], fold.data, cfg, groups=fold.fit_groups,
                            model_options=options)  # fmt: skip
    start = time.perf_counter()
    edges = formula_stability(ensemble, fold.data.x_train, library=SHAPES)
    seconds = time.perf_counter() - start
    (bands,) = edge_bands(ensemble, fold.data.x_train, level=LEVEL)
    # band width relative to the edge's own range (member mean), per input
    span = bands.mean.amax(0) - bands.mean.amin(0)  # (1, d)
    rel = ((bands.upper - bands.lower).mean(0) / span.clamp_min(1e-9))[0]
    rows = [
        {"feature": features[e.i], "top": e.top, "agree": e.agree, "best": e.best,
         "band": float(rel[e.i]), "span": float(span[0, e.i]) * fold.y_std,
         "r2": float(np.mean([r for r in e.r2 if r is not None]))}
        for e in edges
    ]  # fmt: skip
    return {
        "rows": rows,
        "seconds": seconds,
        "r2": r2_score(fold.y_test, ensemble.predict(fold.x_test).mean),
    }


def report(results: dict, args, total_s: float) -> str:
    lines = [
        "# KAN ensembles: calibration, vectorised training, formula stability",
        "",
        f"`benchmarks/bench_ensemble.py --members {args.members} --steps {args.steps} "
        f"--lamb {args.lamb:g}` · {args.folds}-fold grouped CV (the folds of bench_hea) · "
        f"{platform.machine()} CPU, torch {torch.__version__}, {args.threads} thread(s), shared "
        f"2-core machine under load from other jobs · {total_s / 60:.1f} min.",
        "",
        f"Ensembles of {args.members} KANs [d, 4, 1] (grid {KAN_PARAMS['grid']}, "
        f"grid_eps {KAN_PARAMS['grid_eps']}, Adam lr 1e-2, early stopping on the held-back "
        "groups). Coverage of the nominal 90 % interval on the test groups, pooled over folds "
        "(fold range in brackets); width = mean interval width in the target's units (HV; MPa "
        "for mpea_ys).",
        "",
        "| set | bootstrap | interval | coverage | width | ensemble R² | member R² | s / fold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for mode, m in res["modes"].items():
            for v in VARIANTS:
                lo, hi = m["fold_range"][v]
                lines.append(
                    f"| {name} | {mode} | {v} | {m['coverage'][v]:.3f} [{lo:.2f}–{hi:.2f}] | "
                    f"{m['width'][v]:.0f} | {m['r2_mean']:.3f} | {m['r2_members']:.3f} | "
                    f"{m['seconds']:.1f} |"
                )
    lines += [
        "",
        f"## Members side by side vs separate fits (fold 0, {args.members} members, bootstrap "
        "over groups)",
        "",
        "Wall time to train the ensemble: all members in one `fit` of the block-diagonal KAN, "
        "the automatic `members_per_fit` (rows × edges of the wide KAN within `WORK_BUDGET`), and one `fit` per member; "
        "same settings, back to back in one process after a warm-up run. Member-steps: steps "
        "each member took, summed (a block stops early on its members' mean validation loss).",
        "",
        "| set | λ | one fit s | auto s (members per fit) | separate s | separate / one fit | "
        "separate / auto | member-steps (one / auto / separate) | engine | test R² (one / auto / "
        "separate) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for t in res["timing"]:
            one, auto, sep = t["one fit"], t["auto"], t["separate"]
            lines.append(
                f"| {name} | {t['lamb']:g} | {one['seconds']:.1f} | {auto['seconds']:.1f} "
                f"({t['per_fit']}) | {sep['seconds']:.1f} | {sep['seconds'] / one['seconds']:.1f}× | "
                f"{sep['seconds'] / auto['seconds']:.1f}× | {one['steps']} / {auto['steps']} / "
                f"{sep['steps']} | {one['engine']} | {one['r2']:.3f} / {auto['r2']:.3f} / "
                f"{sep['r2']:.3f} |"
            )
    lines += [
        "",
        f"## Formula stability and edge bands (fold 0, additive ensemble [d, 1], {args.members} "
        "members)",
        "",
        "Per input: the most common best symbolic candidate across members (library without "
        '"0", so the question is which shape, not whether the edge matters) and how many members '
        "chose it, with the members' mean R² of their best fit to their own φ_i; band = mean width of the members' 90 % band of φ_i over its input range, "
        "relative to the φ_i's own span (member mean), span in the target's units.",
        "",
    ]
    for name, res in results.items():
        st = res["stability"]
        lines += [
            f"**{name}** (additive ensemble test R² {st['r2']:.3f}; stability computed in "
            f"{st['seconds']:.1f} s)",
            "",
            "| input | top candidate | members agreeing | mean R² of best | band / span | span "
            "| all members |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in st["rows"]:
            lines.append(
                f"| {r['feature']} | {r['top']} | {r['agree']}/{args.members} | {r['r2']:.2f} | "
                f"{r['band']:.2f} | {r['span']:.0f} | {', '.join(str(b) for b in r['best'])} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


CHECKPOINT_BEGIN = "<!-- checkpoint-overhead: begin -->"
CHECKPOINT_END = "<!-- checkpoint-overhead: end -->"
APP_STEPS = 2000


def checkpoint_overhead(bench, args) -> list[dict]:
    """Fold 0, `args.members` members, `args.checkpoint_steps` steps (no early stopping) at
    λ = 0 and `args.lamb`: the ensemble without checkpoints and with one offered every step
    (`fit_ensemble(on_checkpoint=)`: the state copied into an `EnsembleCheckpoint`), best of
    3 alternating runs, so the difference per step is the cost of one offer; and the median
    time and size of one stored checkpoint (`kan_core.io.checkpoint_to_bytes`)."""
    _, (x, y, groups, split, features) = calibration(bench, argparse.Namespace(
        members=0, steps=0, lamb=0.0, folds=args.folds, bootstrap=[]))  # fmt: skip
    fold = Fold(x, y, groups, *split.folds()[0], seed=0)
    width = [len(features), *KAN_PARAMS["hidden"], 1]
    rows = []
    for lamb in dict.fromkeys([0.0, args.lamb]):
        fit_cfg = fit_config(args.checkpoint_steps, lamb)
        fit_cfg.early_stopping_patience, fit_cfg.checkpoint_every = None, 1
        cfg = EnsembleConfig(args.members, "groups", seed=0, fit=fit_cfg)
        kw = {"groups": fold.fit_groups, "model_options": {"grid": KAN_PARAMS["grid"]}}
        ensemble = fit_ensemble(width, fold.data, cfg, **kw)  # warm-up
        seconds: dict[str, list[float]] = {"none": [], "every step": []}
        for _ in range(3):
            for label, hook in (("none", None), ("every step", lambda c: None)):
                start = time.perf_counter()
                ensemble = fit_ensemble(width, fold.data, cfg, on_checkpoint=hook, **kw)
                seconds[label].append(time.perf_counter() - start)
        stored: list[tuple[float, int]] = []

        def store(c, stored=stored) -> None:
            start = time.perf_counter()
            blob = checkpoint_to_bytes(c)
            stored.append((time.perf_counter() - start, len(blob)))

        fit_ensemble(width, fold.data, cfg, on_checkpoint=store, **kw)
        steps = sum(len(r.history) for r in ensemble.results)
        none, every = min(seconds["none"]), min(seconds["every step"])
        row = {
            "lamb": lamb, "blocks": len(ensemble.results), "engine": ensemble.results[0].engine,
            "steps": steps, "step_ms": 1e3 * none / steps, "offer_ms": 1e3 * (every - none) / steps,
            "store_ms": 1e3 * sorted(s for s, _ in stored)[len(stored) // 2],
            "kib": max(n for _, n in stored) / 1024,
        }  # fmt: skip
        print(f"  checkpoints λ={lamb:g}: {row}", flush=True)
        rows.append(row)
    return rows


def checkpoint_markdown(results: dict, args, total_s: float) -> str:
    lines = [
        CHECKPOINT_BEGIN,
        "## Checkpoint overhead (ensemble runs)",
        "",
        f"`benchmarks/bench_ensemble.py --checkpoint-overhead --members {args.members} "
        f"--checkpoint-steps {args.checkpoint_steps}` · fold 0, bootstrap over groups, early "
        f"stopping off · {args.threads} thread(s), shared 2-core machine, load average "
        f"{os.getloadavg()[1]:.1f} at the end · {total_s / 60:.1f} min.",
        "",
        "Offer: `fit_ensemble` builds an `EnsembleCheckpoint` (every member's weights, Adam's "
        "state, the best weights, the finished blocks) for `on_checkpoint`; measured as (time "
        "with one every step − time without) / steps, best of 3 alternating runs (negative: "
        "below the noise of the shared machine). Stored: "
        "`checkpoint_to_bytes` of one (median). A run offers one every steps/50 steps "
        "(`KANSCOPE_CHECKPOINT_MAX_PER_RUN`) and stores one at most every 10 s "
        "(`KANSCOPE_CHECKPOINT_INTERVAL_S`): the last column is 49 offers and one store against "
        f"the steps of a {APP_STEPS}-step block (the leaderboard KAN's step limit).",
        "",
        "| set | λ | blocks | engine | ms / step | ms / offer | ms / stored | KiB | overhead in "
        "a run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for r in rows:
            offers = APP_STEPS // -(-APP_STEPS // 50) - 1  # never after the last step
            extra = offers * max(r["offer_ms"], 0.0) + r["store_ms"]
            per_block = APP_STEPS * r["step_ms"]
            lines.append(
                f"| {name} | {r['lamb']:g} | {r['blocks']} | {r['engine']} | {r['step_ms']:.2f} | "
                f"{r['offer_ms']:.2f} | {r['store_ms']:.1f} | {r['kib']:.0f} | "
                f"{100 * extra / per_block:.1f} % |"
            )
    return "\n".join([*lines, CHECKPOINT_END]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="gorsse,mpea_hv,mpea_ys")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lamb", type=float, default=KAN_PARAMS["lamb"])
    parser.add_argument("--bootstrap", nargs="+", default=["none", "groups"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 folds, 150 steps: smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--checkpoint-overhead", action="store_true",
        help="only the cost of ensemble checkpoints, written as its own section of --out",
    )  # fmt: skip
    parser.add_argument("--checkpoint-steps", type=int, default=400)
    args = parser.parse_args()
    if args.quick:
        args.folds, args.steps = 2, 150
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    start = time.perf_counter()
    if args.checkpoint_overhead:
        chosen = [b for b in SETS if b.key in args.sets.split(",")]
        overhead = {b.key: checkpoint_overhead(b, args) for b in chosen}
        section = checkpoint_markdown(overhead, args, time.perf_counter() - start)
        print(section)
        write_section(args.out, section, CHECKPOINT_BEGIN, CHECKPOINT_END)
        return
    results = {}
    for bench in SETS:
        if bench.key in args.sets.split(","):
            print(bench.title, flush=True)
            results[bench.key] = run_set(bench, args)
    text = report(results, args, time.perf_counter() - start)
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(text)
    if CHECKPOINT_BEGIN in old and CHECKPOINT_END in old:  # --checkpoint-overhead's: kept
        kept = old[old.index(CHECKPOINT_BEGIN) : old.index(CHECKPOINT_END)] + CHECKPOINT_END
        write_section(args.out, kept + "\n", CHECKPOINT_BEGIN, CHECKPOINT_END)
    print(text)


if __name__ == "__main__":
    main()
