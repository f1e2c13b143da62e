"""API load figure: N concurrent clients poll GET /api/runs/{id}/metrics?after_step= while two
runs train, against a real ``kanscope serve`` (uvicorn, local executor, SQLite or PostgreSQL).

    .venv/bin/python benchmarks/bench_api_load.py [--clients 20] [--seconds 30]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--interval 0]

Each client loops: GET metrics for one of the two runs with ``after_step`` = the last step it
saw (the dashboard's pattern), then sleeps ``--interval`` seconds (0 = back to back: the
worst case). Prints p50 / p95 / p99 latency and throughput, and writes a JSON file to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "app" / "demo_data" / "Gorsse2018ML_Data_RawHV.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, database_url: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANSCOPE_")}
    env.update(
        KANSCOPE_DATA_DIR=str(data_dir),
        KANSCOPE_LOAD_DEMO="false",
        KANSCOPE_MAX_CONCURRENT_RUNS="2",
    )
    if database_url:
        env["KANSCOPE_DATABASE_URL"] = database_url
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--no-dashboard",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit(f"server did not start:\n{(data_dir / 'server.log').read_text()[-2000:]}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def client_loop(
    base: str,
    run_ids: list[int],
    k: int,
    stop_at: float,
    interval: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    last: dict[int, int | None] = {r: None for r in run_ids}
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        n = k
        while time.monotonic() < stop_at:
            run_id = run_ids[n % len(run_ids)]
            n += 1
            params = {} if last[run_id] is None else {"after_step": last[run_id]}
            t0 = time.perf_counter()
            try:
                r = await c.get(f"/runs/{run_id}/metrics", params=params)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                else:
                    latencies.append(dt)
                    last[run_id] = r.json()["last_step"]
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            if interval:
                await asyncio.sleep(interval)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="kanscope-bench-"))
    proc, url = start_server(data_dir, args.database_url)
    try:
        with httpx.Client(base_url=f"{url}/api", timeout=60) as api:
            ds = api.post("/datasets", files={"file": (DEMO.name, DEMO.read_bytes())}).json()
            body = {
                "dataset_id": ds["id"],
                "target_columns": ["HV"],
                "hidden": [8, 4],
                "steps": 100_000,
                "update_grid_every": 0,
            }
            runs = [api.post("/runs", json=body | {"seed": s}).json()["id"] for s in (0, 1)]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                states = [api.get(f"/runs/{r}").json()["status"] for r in runs]
                if all(s == "running" for s in states):
                    break
                time.sleep(0.3)
            else:
                raise SystemExit(f"runs did not start: {states}")
            time.sleep(2.0)  # let both write some metrics first

            latencies: list[float] = []
            errors: list[str] = []
            stop_at = time.monotonic() + args.seconds
            t0 = time.monotonic()

            async def all_clients() -> None:
                await asyncio.gather(
                    *(
                        client_loop(
                            f"{url}/api", runs, k, stop_at, args.interval, latencies, errors
                        )
                        for k in range(args.clients)
                    )
                )

            asyncio.run(all_clients())
            wall = time.monotonic() - t0
            final = [api.get(f"/runs/{r}").json() for r in runs]
            for r in runs:
                api.post(f"/runs/{r}/cancel")
        backend = "postgresql" if args.database_url else "sqlite"
        ms = [v * 1000 for v in latencies]
        result = {
            "backend": backend,
            "clients": args.clients,
            "seconds": round(wall, 1),
            "interval_s": args.interval,
            "requests": len(ms),
            "errors": len(errors),
            "error_samples": errors[:5],
            "throughput_rps": round(len(ms) / wall, 1),
            "p50_ms": round(percentile(ms, 50), 1) if ms else None,
            "p95_ms": round(percentile(ms, 95), 1) if ms else None,
            "p99_ms": round(percentile(ms, 99), 1) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
            "runs_still_training": [f["status"] for f in final],
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        }
        print(json.dumps(result, indent=2))
        out = (
            Path(args.out)
            if args.out
            else REPO / "benchmarks" / "results" / (f"api_load_{backend}.json")
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
