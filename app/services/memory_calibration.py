"""Measure the real peak memory of small fits and inspection calls and compare it with
:func:`app.services.memory.estimate_run_memory_bytes` / ``estimate_inspection_bytes``
(``python -m app.services.memory_calibration [name …]``; a test runs two configurations).

Each configuration runs in a fresh interpreter: imports, data and model first (with one tiny
forward/backward so kernels are loaded), then the peak resident set is reset
(``/proc/self/clear_refs``) and ``kan_core.train.fit`` runs a few steps with the settings the
trainer uses (or the inspection call runs); the measurement is the growth of ``VmHWM`` over the
resident set before. Training estimates are compared without their "data" part (the
calibration builds tensors only, no pandas frame).

Result on the development machine (2 cores, torch 2.13 CPU, native operators built), MB::

    cubic bspline      measured   83.8  estimate  159.1  ratio 1.90   (native: features
    cardinal k=2       measured  382.0  estimate  490.5  ratio 1.28    recomputed; small)
    cox-de-boor k=5    measured  324.2  estimate  739.7  ratio 2.28   (heap regime: the
    cox-de-boor k=4    measured  249.2  estimate  534.3  ratio 2.14    slack is an upper bound)
    rbf                measured  197.6  estimate  286.2  ratio 1.45
    relu_kan           measured  264.3  estimate  394.7  ratio 1.49
    chebyshev          measured  180.6  estimate  301.3  ratio 1.67
    rational           measured  293.4  estimate  435.2  ratio 1.48
    grid update        measured 1213.2  estimate 1381.9  ratio 1.14
    lamb > 0           measured  465.8  estimate  630.4  ratio 1.35
    lbfgs params       measured  266.9  estimate  432.6  ratio 1.62
    mlp                measured  348.9  estimate  415.6  ratio 1.19
    traces: features   measured  643.6  estimate  826.0  ratio 1.28   (inspection: prune)
    traces: edges      measured 1922.9  estimate 2008.8  ratio 1.04
    traces: k=5        measured  972.5  estimate 1238.7  ratio 1.27
    network            measured  281.9  estimate  426.5  ratio 1.51
    edge               measured 2293.6  estimate 2766.2  ratio 1.21
    suggest            measured  481.3  estimate  574.2  ratio 1.19
    auto_symbolic      measured  530.9  estimate  636.5  ratio 1.20

The per-layer constants in ``app.services.memory`` come from pairs of runs at R and 2R rows
(the slope per row, in the regime where buffers exceed 32 MiB and are mmapped).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

#: configurations that make one term of the estimate dominate (rows × in × K buffers of one
#: basis path, grid updates, L-BFGS state, the sparsity penalty, an MLP)
CONFIGS: list[dict[str, Any]] = [
    {"name": "cubic bspline", "n_in": 200, "hidden": [32], "grid": 50, "k": 3, "rows": 8000},
    {"name": "cardinal k=2", "n_in": 100, "hidden": [16], "grid": 30, "k": 2, "rows": 4000},
    {"name": "cox-de-boor k=5", "n_in": 100, "hidden": [8], "grid": 30, "k": 5, "rows": 2000},
    {"name": "cox-de-boor k=4", "n_in": 60, "hidden": [8], "grid": 40, "k": 4, "rows": 2000},
    {"name": "rbf", "n_in": 100, "hidden": [16], "grid": 30, "basis": "rbf", "rows": 4000},
    {"name": "relu_kan", "n_in": 100, "hidden": [16], "grid": 30, "basis": "relu_kan",
     "rows": 4000},
    {"name": "chebyshev", "n_in": 100, "hidden": [16], "grid": 30, "basis": "chebyshev",
     "rows": 4000},
    {"name": "rational", "n_in": 100, "hidden": [16], "grid": 5, "k": 4, "basis": "rational",
     "rows": 20000},
    {"name": "grid update", "n_in": 200, "hidden": [64], "grid": 50, "k": 3, "rows": 8000,
     "update_grid_every": 1},
    {"name": "lamb > 0", "n_in": 100, "hidden": [64], "grid": 10, "k": 3, "rows": 4000,
     "lamb": 0.01},
    {"name": "lbfgs params", "n_in": 300, "hidden": [64], "grid": 50, "k": 3, "rows": 200,
     "optimizer": "lbfgs"},
    {"name": "mlp", "model": "mlp", "n_in": 100, "hidden": [512, 512], "rows": 20000},
]  # fmt: skip

_DEFAULTS: dict[str, Any] = {
    "model": "kan", "grid": 5, "k": 3, "basis": "bspline", "steps": 3, "lr": 1e-3,
    "update_grid_every": 0, "optimizer": "adam", "lamb": 0.0,
}  # fmt: skip


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure_here(spec: dict[str, Any]) -> dict[str, Any]:
    import gc

    import torch

    from app.services.memory import estimate_run_memory_bytes
    from app.services.torch_trainer import fit_config_from
    from kan_core.engine import Engine, enabled
    from kan_core.model import KAN, MLP
    from kan_core.train import TrainData, fit

    cfg = _DEFAULTS | spec
    n_val = cfg["rows"] // 5
    n_train = cfg["rows"] - n_val
    width = [cfg["n_in"], *cfg["hidden"], 1]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, cfg["n_in"], generator=gen)
    y = x[:, :1].sin() + 0.1 * torch.randn(n_train + n_val, 1, generator=gen)
    data = TrainData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    if cfg["model"] == "kan":
        model: torch.nn.Module = KAN(width, grid=cfg["grid"], k=cfg["k"], basis=cfg["basis"])
    else:
        model = MLP(width)
    model(x[:2]).sum().backward()  # load kernels / operators before the baseline
    model.zero_grad(set_to_none=True)
    fit_cfg = fit_config_from(cfg)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    base = _status_kb("VmRSS")
    result = fit(model, data, fit_cfg)
    measured = (_status_kb("VmHWM") - base) * 1024
    est = estimate_run_memory_bytes(
        model=cfg["model"],
        width=width,
        n_train=n_train,
        n_val=n_val,
        grid=cfg["grid"],
        k=cfg["k"],
        basis=cfg["basis"],
        batch_size=cfg.get("batch_size"),
        optimizer=cfg["optimizer"],
        lamb=cfg["lamb"],
        update_grid_every=cfg["update_grid_every"],
        cubic_engine="native" if enabled(Engine.NATIVE) else "numba",
    )
    estimate = est.total_bytes - est.parts["data"]
    return {
        "name": cfg.get("name", ""),
        "engine": result.engine,
        "measured_mb": round(measured / 2**20, 1),
        "estimate_mb": round(estimate / 2**20, 1),
        "ratio": round(estimate / max(1, measured), 2),
        "peak_phase": est.peak_phase,
    }


#: inspection calls on a KAN of ``width`` with ``rows`` sampled rows
INSPECTION_CONFIGS: list[dict[str, Any]] = [
    {"name": "traces: features", "operation": "prune", "width": [400, 2], "grid": 100,
     "rows": 2048},
    {"name": "traces: edges", "operation": "prune", "width": [400, 200, 1], "rows": 2048},
    {"name": "traces: k=5", "operation": "prune", "width": [300, 4, 1], "grid": 60, "k": 5,
     "rows": 2048},
    {"name": "network", "operation": "network", "width": [200, 200, 1], "rows": 512},
    {"name": "edge", "operation": "edge", "width": [400, 200, 1], "rows": 2048},
    {"name": "suggest", "operation": "suggest", "width": [400, 200, 1], "rows": 2048},
    {"name": "auto_symbolic", "operation": "auto_symbolic", "width": [60, 40, 1],
     "rows": 2048},
]  # fmt: skip


def _measure_inspection_here(spec: dict[str, Any]) -> dict[str, Any]:
    import gc
    from types import SimpleNamespace

    import torch

    from app.api.schemas import NetworkOut
    from app.services.inspection import _network
    from app.services.memory import InspectionShape, estimate_inspection_bytes
    from kan_core.inspect import edge_curve
    from kan_core.model import KAN
    from kan_core.prune import prune_edges
    from kan_core.symbolic import auto_symbolic, suggest

    torch.set_num_threads(1)  # as the API process (KANSCOPE_API_TORCH_THREADS)
    width, rows, op = spec["width"], spec["rows"], spec["operation"]
    model = KAN(width, grid=spec.get("grid", 5), k=spec.get("k", 3), basis=spec.get("basis",
                "bspline"))  # fmt: skip
    model.eval()
    x = torch.randn(rows, width[0], generator=torch.Generator().manual_seed(0))
    model.forward_with_activations(x[:2])
    n_points = max(
        2, min(32, 1_000_000 // sum(a * b for a, b in zip(width, width[1:], strict=False)))
    )
    loaded = SimpleNamespace(
        run_id=1, model=model, x_within_budget=lambda *_a, **_k: x,
        data=SimpleNamespace(feature_names=[f"x{i}" for i in range(width[0])], classes=None,
                             target_names=[f"y{i}" for i in range(width[-1])]),
    )  # fmt: skip
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kb("VmRSS")
    if op == "network":
        NetworkOut.model_validate(_network(loaded, n_points)).model_dump_json()  # type: ignore[arg-type]
    elif op == "edge":
        edge_curve(model, x, 0, 0, 0, n_points=200, max_data_points=1000)
    elif op == "suggest":
        suggest(model, x, 0, 0, 0, complexity_weight=0.0)
    elif op == "auto_symbolic":
        auto_symbolic(model, x)
    else:
        prune_edges(model, x, 1e-2)
    measured = (_status_kb("VmHWM") - base) * 1024
    estimate = estimate_inspection_bytes(InspectionShape.of(model), op, rows, n_points=n_points)
    return {
        "name": spec.get("name", op),
        "engine": op,
        "measured_mb": round(measured / 2**20, 1),
        "estimate_mb": round(estimate / 2**20, 1),
        "ratio": round(estimate / max(1, measured), 2),
        "peak_phase": op,
    }


def measure(spec: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; its measurement and estimate."""
    out = subprocess.run(
        [sys.executable, "-m", "app.services.memory_calibration", "--one", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        spec = json.loads(argv[1])
        run = _measure_inspection_here if "operation" in spec else _measure_here
        sys.stdout.write(json.dumps(run(spec)) + "\n")
        return
    names = set(argv)
    for spec in CONFIGS + INSPECTION_CONFIGS:
        if names and spec["name"] not in names:
            continue
        r = measure(spec)
        sys.stdout.write(
            f"{r['name']:<18} {r['engine']:<10} measured {r['measured_mb']:>8.1f} MB  "
            f"estimate {r['estimate_mb']:>8.1f} MB  ratio {r['ratio']:>5.2f}  ({r['peak_phase']})\n"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
