"""kanscope serve | worker | migrate | train — the command line.

``serve`` runs migrations, repairs runs left running by a dead process, loads the demo dataset
on first start, then serves the API (/api) and the dashboard (/) with uvicorn.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from typing import Any

log = logging.getLogger("kanscope.cli")


def _settings(**overrides: Any) -> Any:
    from app.config import Settings, get_settings

    base: Settings = get_settings()
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade

    settings = _settings(database_url=args.database_url)
    upgrade(settings.effective_database_url)
    print(f"database at {_redact(settings.effective_database_url)} is at the latest schema")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.db.session import Database
    from app.main import create_app
    from app.services.startup import load_demo_dataset, migrate

    settings = _settings(
        database_url=args.database_url,
        api_base_url=f"http://{_connect_host(args.host)}:{args.port}/api",
    )
    migrate(settings.effective_database_url)
    if settings.load_demo and not args.no_demo:
        db = Database(settings.effective_database_url, settings.sqlite_busy_timeout_ms)
        load_demo_dataset(db, settings.max_dataset_rows, settings.max_dataset_columns)
        db.dispose()
    # migrations and demo are done; the app's lifespan repairs and resubmits runs
    settings = settings.model_copy(update={"migrate_on_start": False, "load_demo": False})
    import torch

    torch.set_num_threads(settings.api_torch_threads)
    _warm_kernels_in_background(settings.warm_kernels)
    app = create_app(settings, mount_dashboard=not args.no_dashboard)
    print(f"kanscope on http://{args.host}:{args.port}/  (API docs: /api/docs)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _warm_kernels_in_background(wanted: bool) -> None:
    """Fill kan_core's numba kernel cache while the server starts, so the first small fit does
    not compile (~10-20 s on a machine's first use). A separate process: the OpenMP threads
    the kernels start must not exist in a parent that Celery's prefork pool forks. Off with
    KANSCOPE_WARM_KERNELS=false (where the caches are known to be filled)."""
    import subprocess

    if not wanted:
        print("kernel caches: not filled at start (KANSCOPE_WARM_KERNELS=false)", flush=True)
        return
    warm = subprocess.Popen(
        [sys.executable, "-m", "kan_core.fused"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    print(f"kernel caches: filling in the background (process {warm.pid})", flush=True)


def cmd_worker(args: argparse.Namespace) -> int:
    """Celery worker for KANSCOPE_EXECUTOR=celery (app.worker.celery_app)."""
    from app.config import get_settings
    from app.extras import require

    require("celery", "kanscope worker")
    from app.worker.celery_app import run_worker

    if args.database_url:  # the worker and its pool children read the settings themselves
        os.environ["KANSCOPE_DATABASE_URL"] = args.database_url
        get_settings.cache_clear()

    _warm_kernels_in_background(get_settings().warm_kernels)
    run_worker(args.celery_args)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Create a run and train it in this process with a tqdm progress bar."""
    from tqdm import tqdm

    from app.api.schemas import RunCreate
    from app.db.session import Database
    from app.services import datasets as ds_svc
    from app.services import runs as run_svc
    from app.services.startup import migrate
    from app.services.training import run_training

    settings = _settings(database_url=args.database_url)
    migrate(settings.effective_database_url)
    db = Database(settings.effective_database_url, settings.sqlite_busy_timeout_ms)
    with db.write() as s:
        if args.csv:
            with open(args.csv, "rb") as fh:
                ds = ds_svc.ingest_csv(
                    s,
                    fh.read(),
                    os.path.basename(args.csv),
                    args.name,
                    settings.max_dataset_rows,
                    settings.max_dataset_columns,
                )
            dataset_id = ds.id
        else:
            dataset_id = args.dataset_id
        config: dict[str, Any] = json.loads(args.config) if args.config else {}
        config |= {
            "dataset_id": dataset_id,
            "target_columns": args.target,
            "model": args.model,
            "steps": args.steps,
            "hidden": [int(h) for h in args.hidden.split(",") if h.strip()],
        }
        if args.features:
            config["feature_columns"] = args.features
        if args.task:
            config["task"] = args.task
        payload = RunCreate.model_validate(config).model_dump()
        run, _ = run_svc.create_run(s, payload, settings.max_parameters)
        run_id = run.id
    bar = tqdm(total=args.steps, desc=f"run {run_id}", unit="step")

    def show(p: Any) -> None:
        bar.n = p.step
        val = f"{p.val_loss:.4g}" if p.val_loss is not None else "-"
        bar.set_postfix(train=f"{p.train_loss:.4g}", val=val, refresh=False)
        bar.refresh()

    owner = f"cli@{socket.gethostname()}:pid{os.getpid()}"
    try:
        outcome = run_training(run_id, owner, db=db, on_progress=show)
    finally:
        bar.close()
    with db.read() as s:
        run = run_svc.get_run(s, run_id)
        print(
            json.dumps(
                {
                    "run_id": run_id,
                    "status": run.status,
                    "error": run.error,
                    "summary": run.summary,
                },
                indent=2,
            )
        )
    db.dispose()
    return 0 if outcome == "succeeded" else 1


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kanscope")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kanscope", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"kanscope {_version()}")
    p.add_argument("--database-url", default=None, help="overrides KANSCOPE_DATABASE_URL")
    # the same option after the subcommand (`kanscope migrate --database-url ...`); SUPPRESS
    # keeps a value given before the subcommand when it is not repeated after it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", default=argparse.SUPPRESS, help="overrides KANSCOPE_DATABASE_URL"
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="API + dashboard on 127.0.0.1")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8050)
    s.add_argument("--no-demo", action="store_true", help="do not load the demo dataset")
    s.add_argument("--no-dashboard", action="store_true")
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("migrate", parents=[common], help="bring the database schema up to date")
    m.set_defaults(func=cmd_migrate)

    w = sub.add_parser("worker", parents=[common], help="Celery worker (KANSCOPE_EXECUTOR=celery)")
    w.add_argument("celery_args", nargs=argparse.REMAINDER, help="extra celery worker options")
    w.set_defaults(func=cmd_worker)

    t = sub.add_parser("train", parents=[common], help="train one run headless (tqdm progress)")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="CSV file to upload as a new dataset")
    src.add_argument("--dataset-id", type=int)
    t.add_argument("--name", default=None, help="dataset name for --csv")
    t.add_argument("--target", nargs="+", required=True)
    t.add_argument("--features", nargs="+", default=None)
    t.add_argument("--task", choices=["regression", "classification"], default=None)
    t.add_argument("--model", default="kan")
    t.add_argument("--hidden", default="5", help="hidden widths, comma-separated")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--config", default=None, help="more run options as JSON")
    t.set_defaults(func=cmd_train)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``kanscope worker`` passes the options kanscope does not know on to Celery
    (``kanscope worker --database-url URL -c 2``: kanscope's own options first)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "worker":
        args.celery_args = [a for a in [*unknown, *args.celery_args] if a != "--"]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a user error: say it, no traceback
        from pydantic import ValidationError

        from app.services.errors import ServiceError
        from kan_core.errors import KanCoreError

        if isinstance(exc, (ServiceError, KanCoreError, ValidationError, FileNotFoundError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
