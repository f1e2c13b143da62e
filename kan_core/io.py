"""Model files: safetensors tensors + JSON config in the header metadata. Never pickle.

`model_to_bytes` / `model_from_bytes` round-trip bit-exactly (weights, grids, masks, symbolic
edges). Extra JSON-serialisable metadata (scalers, column names, …) rides along.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from kan_core.errors import KanCoreError
from kan_core.model import KAN, MLP, build_model

FORMAT = "kanscope-model/1"


class ModelFileError(KanCoreError):
    """The bytes are not a kanscope model file."""


def model_to_bytes(model: nn.Module, metadata: dict[str, Any] | None = None) -> bytes:
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "config": json.dumps(model.config()),  # type: ignore[operator]
        "metadata": json.dumps(metadata or {}),
    }
    return st_save(tensors, metadata=header)


def read_header(data: bytes) -> dict[str, Any]:
    """The safetensors header's `__metadata__` (plain JSON; no code runs)."""
    if len(data) < 8:
        raise ModelFileError("not a model file: too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100_000_000:
        raise ModelFileError("not a model file: bad header length")
    try:
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"not a model file: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError("not a kanscope model file (format tag missing)")
    return meta


def model_from_bytes(
    data: bytes, device: str | torch.device | None = None
) -> tuple[KAN | MLP, dict[str, Any]]:
    meta = read_header(data)
    model = build_model(json.loads(meta["config"]))
    state = st_load(data)
    model.load_state_dict(state, strict=True)
    if device is not None:
        model.to(device)
    model.eval()
    return model, json.loads(meta.get("metadata", "{}"))


def save_model(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    Path(path).write_bytes(model_to_bytes(model, metadata))


def load_model(
    path: str | Path, device: str | torch.device | None = None
) -> tuple[KAN | MLP, dict[str, Any]]:
    return model_from_bytes(Path(path).read_bytes(), device)
