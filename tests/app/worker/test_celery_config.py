"""Celery settings, the submit path against a real (private) Redis, and the compose/Docker files."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import redis
import yaml
from celery import Celery

from app.config import Settings, get_settings
from app.worker.celery_app import (
    GPU_QUEUE,
    TRAIN_TASK,
    SettingsConfig,
    celery_config,
    worker_argv,
)
from app.worker.celery_executor import CeleryExecutor, QueueUnavailableError, redact_url
from tests.app.fixtures_services import PrivateRedis, free_port, private_redis  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


def test_settings_for_long_jobs() -> None:
    conf = celery_config("redis://example:6379/0")
    assert conf["broker_url"] == conf["result_backend"] == "redis://example:6379/0"
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert 0 < conf["task_soft_time_limit"] < conf["task_time_limit"]
    assert conf["accept_content"] == ["json"]  # never pickle
    assert conf["task_routes"][TRAIN_TASK]["queue"] == GPU_QUEUE
    assert [q.name for q in conf["task_queues"]] == [GPU_QUEUE]


def test_time_limits_follow_settings() -> None:
    # inconsistent: the hard limit is raised above the soft one
    settings = Settings(task_soft_time_limit_s=100, task_time_limit_s=50, visibility_timeout_s=7)
    conf = celery_config("redis://x", settings)
    assert conf["task_soft_time_limit"] == 100
    assert conf["task_time_limit"] == 101
    assert conf["broker_transport_options"]["visibility_timeout"] == 7


def test_environment_reaches_the_celery_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANSCOPE_TASK_SOFT_TIME_LIMIT_S", "1234")
    monkeypatch.setenv("KANSCOPE_TASK_TIME_LIMIT_S", "2345")
    monkeypatch.setenv("KANSCOPE_VISIBILITY_TIMEOUT_S", "345")
    get_settings.cache_clear()
    try:
        app = Celery("kanscope-test", set_as_current=False)
        app.config_from_object(SettingsConfig())  # as celery_app is configured
        assert app.conf.task_soft_time_limit == 1234
        assert app.conf.task_time_limit == 2345
        assert app.conf.broker_transport_options["visibility_timeout"] == 345
    finally:
        get_settings.cache_clear()


def test_worker_argv_listens_on_gpu_queue_one_task_at_a_time() -> None:
    argv = worker_argv(["--pool", "solo"])
    assert argv[0] == "worker"
    assert argv[argv.index("--queues") + 1] == GPU_QUEUE
    assert argv[argv.index("--concurrency") + 1] == "1"
    assert argv[-2:] == ["--pool", "solo"]


def test_submit_puts_only_the_run_id_on_the_gpu_queue(private_redis: PrivateRedis) -> None:  # noqa: F811
    CeleryExecutor(private_redis.url).submit(42)
    client = redis.Redis.from_url(private_redis.url)
    assert client.llen(GPU_QUEUE) == 1
    message = json.loads(client.lindex(GPU_QUEUE, 0))
    assert message["headers"]["task"] == TRAIN_TASK
    assert message["content-type"] == "application/json"
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == [42] and body[1] == {}


def test_submit_with_redis_down_raises_a_clear_typed_error_quickly() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    start = time.monotonic()
    with pytest.raises(QueueUnavailableError) as info:
        CeleryExecutor(url).submit(9)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "Run 9" in message and "queued" in message and "Redis" in message
    assert "hunter2" not in message  # the password never reaches a response
    assert info.value.run_id == 9


def test_submit_after_redis_comes_back(private_redis: PrivateRedis) -> None:  # noqa: F811
    executor = CeleryExecutor(private_redis.url, retry_interval_s=3600)  # no background resend
    private_redis.stop()
    with pytest.raises(QueueUnavailableError):
        executor.submit(1)
    private_redis.start()
    executor.submit(1)  # the same executor recovers: no cached broken connection
    assert redis.Redis.from_url(private_redis.url).llen(GPU_QUEUE) == 1
    assert executor.unsent == []
    executor.shutdown()


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://u:pw@h/0") == "redis://u:***@h/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_compose_file_describes_the_distributed_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "api", "worker"}
    for name in services:
        assert "healthcheck" in services[name], name
    api, worker = services["api"], services["worker"]
    assert api["command"][:2] == ["kanscope", "serve"] and "0.0.0.0" in api["command"]
    assert all(str(p).startswith("127.0.0.1:") for p in api["ports"])  # host side: loopback only
    assert worker["command"] == ["kanscope", "worker"]
    for env in (api["environment"], worker["environment"]):
        assert env["KANSCOPE_EXECUTOR"] == "celery"
        assert env["KANSCOPE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["KANSCOPE_REDIS_URL"].startswith("redis://redis:")
    assert worker["environment"]["KANSCOPE_DEVICE"] == "cuda"
    # the healthcheck pings the node name `kanscope worker` gives itself (kanscope@%h)
    assert "kanscope@" in worker["healthcheck"]["test"][1] and "kanscope@%h" in worker_argv()
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert {"pgdata", "redisdata"} <= set(compose["volumes"])
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


def test_dockerfile_runs_unprivileged_with_cpu_torch_by_default() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert "\nUSER kanscope" in text
    assert "HEALTHCHECK" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)


def test_ids_refused_by_redis_are_sent_when_it_comes_back(private_redis: PrivateRedis) -> None:  # noqa: F811
    executor = CeleryExecutor(private_redis.url, retry_interval_s=0.2)
    private_redis.stop()
    for run_id in (3, 4):
        with pytest.raises(QueueUnavailableError):
            executor.submit(run_id)
    assert executor.unsent == [3, 4]
    private_redis.start()
    client = redis.Redis.from_url(private_redis.url)
    deadline = time.monotonic() + 10
    while client.llen(GPU_QUEUE) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.llen(GPU_QUEUE) == 2
    assert executor.unsent == []
    executor.shutdown()


def test_the_celery_app_reads_its_configuration_from_settings() -> None:
    from app.worker.celery_app import celery_app

    conf = celery_app.conf  # loaded lazily, on first access, from app.config.get_settings()
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1 and conf.task_default_queue == GPU_QUEUE
    assert conf.accept_content == ["json"]
    assert str(conf.broker_url).startswith("redis://")


def test_resubmit_queued_sends_every_queued_run_once(
    private_redis: PrivateRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    from app.db.migrate import upgrade
    from app.db.models import Dataset, Run
    from app.db.session import Database

    url = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    upgrade(url)
    db = Database(url)
    try:
        with db.write() as s:
            ds = Dataset(name="d", n_rows=1, n_columns=1, size_bytes=1, columns=[], content=b"x")
            s.add(ds)
            s.flush()
            for status in ("queued", "running", "queued", "succeeded", "failed"):
                s.add(Run(dataset_id=ds.id, model="kan", task="regression", config={},
                          status=status, summary={}))  # fmt: skip
        executor = CeleryExecutor(private_redis.url, db=db)
        assert executor.resubmit_queued() == [1, 3]
        client = redis.Redis.from_url(private_redis.url)
        bodies = [json.loads(client.lindex(GPU_QUEUE, k)) for k in range(client.llen(GPU_QUEUE))]
        sent = sorted(json.loads(base64.b64decode(m["body"]))[0][0] for m in bodies)
        assert sent == [1, 3]
    finally:
        db.dispose()
