"""Which torch devices the workers offer, so a run asking for one no worker has is refused when
it is created (422) instead of failing once a worker picks it up.

The local executor trains on this host: its devices are ``cpu`` and, with CUDA, ``cuda`` and
``cuda:0`` … ``cuda:N-1``. Celery workers may run elsewhere; ``KANSCOPE_WORKER_DEVICES`` says
what they offer (e.g. ``cpu,cuda``), and when it is unset the workers are assumed to be like
this host. A worker still checks the device when it starts the run.
"""

from __future__ import annotations

import re

from app.services.errors import InvalidInputError


def _host_devices() -> set[str]:
    import torch

    devices = {"cpu"}
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices |= {"cuda", *(f"cuda:{i}" for i in range(count))}
    return devices


def available_devices(executor: str, worker_devices: str) -> set[str]:
    """Devices a run may ask for (besides ``auto``, which every worker resolves itself)."""
    if executor == "celery" and worker_devices.strip():
        return {d.strip().lower() for d in worker_devices.split(",") if d.strip()} | {"cpu"}
    return _host_devices()


def check_device(requested: str | None) -> None:
    """A run's ``device``: unset and ``auto`` always work; ``cpu``, ``cuda`` and ``cuda:N`` only
    where a worker offers it (``cuda`` in KANSCOPE_WORKER_DEVICES covers every ``cuda:N``)."""
    if requested in (None, "", "auto", "cpu"):
        return
    from app.config import get_settings

    settings = get_settings()
    offered = available_devices(settings.executor, settings.worker_devices)
    base = re.sub(r":\d+$", "", requested)
    if requested in offered or (
        base != requested and base in offered and settings.executor == "celery"
    ):
        return
    where = (
        "the Celery workers (KANSCOPE_WORKER_DEVICES)"
        if settings.executor == "celery" and settings.worker_devices.strip()
        else "this host"
    )
    raise InvalidInputError(
        f"device {requested!r} is not available on any worker: {where} offers "
        f"{sorted(offered)}. Use 'cpu', or 'auto' (a GPU where the worker has one)"
        + (
            "; Celery workers with a GPU on other hosts are announced with "
            "KANSCOPE_WORKER_DEVICES=cpu,cuda."
            if settings.executor == "celery"
            else "."
        )
    )
