"""Settings from ``KANSCOPE_*`` environment variables (pydantic-settings).

Build them through :func:`get_settings` (cached) — never at import time — so tests and the CLI can
set the environment first, and pass a ``Settings`` explicitly where a test needs its own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the shortest KANSCOPE_API_TOKEN accepted
MIN_TOKEN_CHARS = 16


class Settings(BaseSettings):
    # an error never repeats the value it refuses (it may be the API token)
    model_config = SettingsConfigDict(
        env_prefix="KANSCOPE_", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Field(
        default=Path(".kanscope"),
        description="Directory for the default SQLite database and other local state.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: a SQLite file kanscope.sqlite3 in data_dir. "
        "SQLite serves one host; workers on other hosts need PostgreSQL.",
    )
    executor: Literal["local", "celery"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    task_soft_time_limit_s: float = Field(
        default=12 * 3600,
        gt=0,
        description="Celery: a training task gets SoftTimeLimitExceeded after this many "
        "seconds (the run ends failed).",
    )
    task_time_limit_s: float = Field(
        default=12 * 3600 + 300,
        gt=0,
        description="Celery: a training task's pool child is killed after this many seconds "
        "(raised to the soft limit + 1 s when below it).",
    )
    visibility_timeout_s: float = Field(
        default=3600,
        gt=0,
        description="Celery on Redis: an unacknowledged task (late acks: a running one) is "
        "delivered again after this many seconds; the duplicate finds the run claimed and "
        "returns without training.",
    )
    api_token: str | None = Field(
        default=None,
        description="If set, every request except /api/health, the API docs and the sign-in "
        "page needs 'Authorization: Bearer <token>' or the dashboard's session cookie (from "
        "signing in at /signin with this token).",
    )
    auth_failures_per_minute: int = Field(
        default=10,
        ge=0,
        description="With an API token: wrong tokens one client address may send in a minute "
        "(API header or sign-in form); after that its tokens get 429, not compared, until the "
        "oldest wrong one is a minute old. 0 = no limit.",
    )
    session_ttl_s: int = Field(
        default=12 * 3600,
        gt=0,
        description="How long a dashboard sign-in lasts (the session cookie's lifetime, s).",
    )
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_dataset_rows: int = Field(default=1_000_000, gt=0)
    max_dataset_columns: int = Field(default=2_000, gt=0)
    max_parameters: int = Field(default=2_000_000, gt=0, description="Cap on model parameters.")
    max_run_memory_mb: int = Field(
        default=2048,
        gt=0,
        description="Memory budget (MB) of one training run and of one inspection request, "
        "estimated before it starts (app.services.memory): a run that would need more is "
        "refused (422, saying which option to lower), an inspection samples fewer rows or is "
        "refused. Local trainers and Celery pool children are also limited (RLIMIT_DATA) to "
        "what they hold at start plus max(2 × this, this + 1024). Not counted: the interpreter "
        "and its libraries (about 0.5 GB per process). A fixed default rather than a share of "
        "the machine's RAM, so that what is accepted does not depend on the machine; with N "
        "concurrent runs "
        "(KANSCOPE_MAX_CONCURRENT_RUNS) allow N times this.",
    )
    max_concurrent_runs: int = Field(default=2, ge=1, description="Local executor processes.")
    warm_trainer: bool = Field(
        default=True,
        description="Local executor: keep one trainer process started ahead (torch and the "
        "trainer imported), so a run starts training within about a second instead of after "
        "an interpreter's start-up; costs one idle process (about 0.5 GB).",
    )
    warm_kernels: bool = Field(
        default=True,
        description="`kanscope serve` and `kanscope worker` fill kan_core's compiled-kernel "
        "caches in a background process at start (`python -m kan_core.fused`, ~5 s of CPU), so "
        "that the first small fit does not compile (~10-20 s on a machine's first use). Off "
        "where the caches are known to be filled (the test session fills them once).",
    )
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    lease_s: float = Field(
        default=60.0,
        gt=0,
        description="A running run whose heartbeat is "
        "older than this is considered dead by the reaper.",
    )
    reaper_interval_s: float = Field(default=10.0, gt=0)
    requeue_stale_runs: bool = Field(
        default=False, description="Reaper requeues a stale run once instead of failing it."
    )
    checkpoint_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="Least time between two training checkpoints of a run (weights, optimiser "
        "and RNG state, stored in the database) so that a requeued run resumes from the latest "
        "one instead of starting over; 0 = at every opportunity. Short runs write none.",
    )
    checkpoint_max_per_run: int = Field(
        default=50,
        ge=0,
        description="Checkpoint opportunities per run: every ceil(steps / N) steps (then "
        "thinned by checkpoint_interval_s); 0 turns checkpoints off.",
    )
    device: str = Field(default="cpu", description="Default torch device: cpu, cuda, auto.")
    worker_devices: str = Field(
        default="",
        description="Torch devices the Celery workers offer, comma-separated (e.g. 'cpu,cuda'); "
        "a run asking for another is refused when it is created. Empty: the workers are like "
        "this host. The local executor always uses this host's devices.",
    )
    api_torch_threads: int = Field(
        default=1,
        ge=1,
        description="Torch threads in the API process (edge curves, symbolic suggestions): small "
        "models answer fastest on one thread and leave the cores to the trainers.",
    )
    load_demo: bool = True
    formula_timeout_s: float = Field(
        default=60.0, gt=0, description="Time limit for simplifying a formula (sympy)."
    )
    auto_symbolic_timeout_s: float = Field(
        default=60.0,
        ge=0,
        description="Time budget of one auto-symbolic request: no further batch of edges starts "
        "once it is spent; the edges fixed by then are kept, the rest stay splines and the "
        "answer says how many (calling again continues). The dashboard waits this long plus "
        "a margin.",
    )
    model_plugins: str = Field(
        default="",
        description="Comma-separated modules that register more model kinds "
        "(app.services.model_registry.register_model); imported by the API and every trainer.",
    )
    migrate_on_start: bool = Field(
        default=True, description="Run Alembic migrations when the app starts."
    )
    api_base_url: str = Field(
        default="http://127.0.0.1:8050/api",
        description="Where the dashboard reaches the API (kanscope serve sets it from host/port).",
    )
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)

    @field_validator("api_token")
    @classmethod
    def _token_hard_to_guess(cls, value: str | None) -> str | None:
        if not value:
            return None  # unset or empty: no token needed
        if len(value) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"KANSCOPE_API_TOKEN has {len(value)} characters: use at least "
                f"{MIN_TOKEN_CHARS} (a short token can be guessed), e.g. what "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))' prints"
            )
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'kanscope.sqlite3').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
