"""`kan_core.discover` on the shipped hardness tables, next to a KAN and an MLP on the same split.

    .venv/bin/python benchmarks/bench_discover_hea.py [--budget 60] [--seeds 0 1 2]

Per set and seed: one grouped 80/20 split (rows of the same composition stay together), the
formula discovered on the training rows only (its own 3:1 validation split inside), then test
R² of the chosen formula, of a KAN [d, 4, 1] (`KANRegressor`, L-BFGS 100 steps) and of an MLP
(scikit-learn, (64, 64), early stopping) — all three fitted on the same training rows.
Writes benchmarks/results/discover_hea.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kan_core.discover import discover
from kan_core.sklearn import KANRegressor

DATA = Path(__file__).resolve().parents[1] / "app" / "demo_data"
SETS = {
    "gorsse (10 descriptors → HV)": (
        "Gorsse2018ML_Data_RawHV.csv",
        ["Delta", "Gamma", "Enthalpy of Mixing", "Electronegativity", "VEC",
         "Configurational Entropy", "Weighted Melting Temperature", "Yang Parameter",
         "Asymmetry", "e/a"],
        "HV",
        "Li,B,C,Mg,Al,Si,Sc,Ti,V,Cr,Mn,Fe,Co,Ni,Cu,Zn,Y,Zr,Nb,Mo,Sn,Hf,Ta,W",
    ),
    "mpea hardness (7 descriptors → HV)": (
        "mpea_hardness.csv",
        ["vec", "delta_pct", "smix_J_molK", "dhmix_kJ_mol", "tm_K", "delta_chi", "omega"],
        "HV",
        "formula",
    ),
}  # fmt: skip


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    if not np.isfinite(pred).all():
        return float("nan")
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="benchmarks/results/discover_hea.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# Formula discovery on the shipped hardness tables",
        "",
        f"`kan_core.discover` (budget_s={args.budget:g}, one thread) on the training rows of a "
        "grouped 80/20 split; test R² on the held-out 20 % for the chosen formula, a KAN "
        "[d, 4, 1] and an MLP (64, 64) fitted on the same rows. "
        "`benchmarks/bench_discover_hea.py`.",
        "",
        "| set | seed | formula test R² | KAN test R² | MLP test R² | discover s | formula |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (file, features, target, group) in SETS.items():
        frame = pd.read_csv(DATA / file).dropna(subset=[*features, target])
        x = frame[features].to_numpy(np.float64)
        y = frame[target].to_numpy(np.float64)
        # rows of one composition stay on one side of the split
        groups = pd.util.hash_pandas_object(frame[group.split(",")].round(6), index=False)
        for seed in args.seeds:
            split = GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
            tr, te = next(split.split(x, y, groups))
            t0 = time.perf_counter()
            result = discover(x[tr], y[tr], features, budget_s=args.budget, seed=seed)
            seconds = time.perf_counter() - t0
            f_r2 = r2(result.predict(x[te]), y[te])
            kan = KANRegressor(
                hidden=[4],
                steps=500,
                optimizer="adam",
                lr=1e-2,
                lamb=1e-3,
                val_fraction=0.2,
                early_stopping_patience=50,
                seed=seed,
            ).fit(x[tr], y[tr])
            mlp = make_pipeline(
                StandardScaler(),
                MLPRegressor(
                    hidden_layer_sizes=(64, 64),
                    early_stopping=True,
                    max_iter=2000,
                    random_state=seed,
                ),
            ).fit(x[tr], (y[tr] - y[tr].mean()) / y[tr].std())
            mlp_pred = mlp.predict(x[te]) * y[tr].std() + y[tr].mean()
            row = (
                f"| {name} | {seed} | {f_r2:.3f} | {r2(kan.predict(x[te]), y[te]):.3f} | "
                f"{r2(mlp_pred, y[te]):.3f} | {seconds:.1f} | `{result.formula.text[:160]}` |"
            )
            print(row, flush=True)
            lines.append(row)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
