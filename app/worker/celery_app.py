"""The Celery application: Redis broker and result backend, one ``gpu`` queue, one task.

Start a worker with ``kanscope worker`` (or ``celery -A app.worker.celery_app worker -Q gpu``).
The queue carries run ids only; the database is the source of truth. The task re-fetches and
claims the run inside :func:`run_training`, so a duplicate delivery (Redis redelivers any
unacknowledged task after the visibility timeout, see Celery issue #5935) finds the run already
claimed or finished and returns without training.

Settings for long jobs: late acks (a task is acknowledged when it ends, so a worker that dies
mid-run does not lose it), reject-on-worker-lost (a killed child process puts the message back),
prefetch 1 (a busy worker does not hoard queued runs) and soft/hard time limits.

Configuration is read from :func:`app.config.get_settings` lazily, when Celery first needs it,
never at import.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue

if TYPE_CHECKING:
    from app.config import Settings

GPU_QUEUE = "gpu"
TRAIN_TASK = "kanscope.train_run"

PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.5,
                        "interval_max": 1.0}  # fmt: skip

celery_app = Celery("kanscope", set_as_current=False)


def celery_config(redis_url: str, settings: Settings | None = None) -> dict[str, Any]:
    """Celery settings for ``redis_url``, time limits and the visibility timeout from
    ``settings`` (``KANSCOPE_TASK_SOFT_TIME_LIMIT_S``, ``KANSCOPE_TASK_TIME_LIMIT_S``,
    ``KANSCOPE_VISIBILITY_TIMEOUT_S``; read from the environment when None)."""
    if settings is None:
        from app.config import Settings

        settings = Settings()
    soft = settings.task_soft_time_limit_s
    hard = max(settings.task_time_limit_s, soft + 1)
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "task_default_queue": GPU_QUEUE,
        "task_queues": (Queue(GPU_QUEUE),),
        "task_routes": {TRAIN_TASK: {"queue": GPU_QUEUE}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": soft,
        "task_time_limit": hard,
        # JSON only: a message can never carry pickled objects.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
        },
        "broker_connection_timeout": 3.0,
        "broker_connection_retry_on_startup": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        # A Redis blip must not throw away hours of GPU work: the running task keeps training
        # and stores its result in the database; if Redis later redelivers its message, the
        # duplicate finds the run finished and is skipped.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


class SettingsConfig(Mapping[str, Any]):
    """Celery configuration computed from :func:`app.config.get_settings` the first time Celery
    reads it (``config_from_object`` is lazy), so importing this module reads no settings."""

    @cached_property
    def _values(self) -> dict[str, Any]:
        from app.config import get_settings

        settings = get_settings()
        return celery_config(settings.redis_url, settings)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


celery_app.config_from_object(SettingsConfig())


def worker_owner_id(hostname: str | None, task_id: str | None) -> str:
    """The owner recorded on a claimed run: which worker process, which delivery."""
    host = hostname or f"celery@{socket.gethostname()}"
    return f"{host}:pid{os.getpid()}:{task_id or 'direct'}"


@celery_app.task(
    name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def train_run(self: Any, run_id: int) -> str:
    """Train run ``run_id`` unless another delivery already claimed it; returns the outcome."""
    from app.services.training import run_training

    owner = worker_owner_id(self.request.hostname, self.request.id)
    outcome = run_training(int(run_id), owner)
    return str(getattr(outcome, "value", outcome))


@worker_process_init.connect
def limit_pool_child_memory(**_: Any) -> None:
    """Each pool child (the process that trains) runs under the local trainers' data limit
    (app.services.memory.limit_trainer_memory, RLIMIT_DATA): what it holds when it starts plus
    max(2 × KANSCOPE_MAX_RUN_MEMORY_MB, that + 1024 MB). An allocation beyond it fails the run
    with the message naming the setting, instead of swapping the host or waking the kernel's
    OOM killer. The limit stays with the child for every run it takes; none on CUDA hosts."""
    from app.config import get_settings
    from app.services.memory import limit_trainer_memory

    limit_trainer_memory(get_settings().max_run_memory_mb)


def worker_argv(extra: list[str] | None = None) -> list[str]:
    """argv for ``celery worker``: the gpu queue, one task at a time, late acks honoured."""
    argv = ["worker", "--queues", GPU_QUEUE, "--concurrency", "1", "--loglevel", "INFO",
            "--hostname", "kanscope@%h", "--without-gossip", "--without-mingle"]  # fmt: skip
    return argv + list(extra or [])


def run_worker(extra: list[str] | None = None) -> None:
    """Entry point of ``kanscope worker``: blocks until the worker stops.

    The training stack (torch, kan_core, services) is imported here, before the pool forks, so
    each pool child starts training at once instead of importing torch per child.
    """
    import app.services.training  # noqa: F401  (preload for the pool children)
    from app.services.memory import tune_trainer_allocator

    tune_trainer_allocator()  # inherited by the pool children

    celery_app.worker_main(worker_argv(extra))
