"""Model files: safetensors tensors + JSON config in the header metadata. Never pickle.

`model_to_bytes` / `model_from_bytes` round-trip bit-exactly (weights, grids, masks, symbolic
edges). Extra JSON-serialisable metadata (scalers, column names, …) rides along.
Training checkpoints (`FitCheckpoint`: weights + optimiser + RNG state; `EnsembleCheckpoint`:
an ensemble's finished blocks and the `FitCheckpoint` of the one in progress) use the same
format: tensors in safetensors, structure as JSON.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from kan_core.errors import KanCoreError
from kan_core.model import KAN, MLP, build_model
from kan_core.train import EnsembleCheckpoint, FitCheckpoint

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


def _read_metadata(data: bytes, fmt: str, what: str) -> dict[str, Any]:
    """The safetensors header's `__metadata__` (plain JSON; no code runs), format-checked."""
    if len(data) < 8:
        raise ModelFileError(f"not a {what}: too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100_000_000:
        raise ModelFileError(f"not a {what}: bad header length")
    try:
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"not a {what}: {exc}") from None
    if meta.get("format") != fmt:
        raise ModelFileError(f"not a kanscope {what} (format tag missing)")
    return dict(meta)


def read_header(data: bytes) -> dict[str, Any]:
    """A model file's header metadata (format, config JSON, user metadata JSON)."""
    return _read_metadata(data, FORMAT, "model file")


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


# ---- training checkpoints ----------------------------------------------------------------------

CHECKPOINT_FORMAT = "kanscope-checkpoint/1"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of nested dicts/lists/numbers with tensors moved into `tensors`."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        # optimiser state dicts use int keys: keep the key type
        return {"__dict__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not math.isfinite(obj):
            return {"__float__": repr(obj)}
        return obj
    raise ModelFileError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
        if "__float__" in obj:
            return float(obj["__float__"])  # "inf", "-inf" or "nan" only: float() parses no code
        raise ModelFileError("corrupt checkpoint structure")
    return obj


def _values(ckpt: FitCheckpoint | EnsembleCheckpoint) -> dict[str, Any]:
    return {f.name: getattr(ckpt, f.name) for f in fields(ckpt)}


def checkpoint_to_bytes(ckpt: FitCheckpoint | EnsembleCheckpoint) -> bytes:
    """A `FitCheckpoint` or `EnsembleCheckpoint` as safetensors + a JSON skeleton (no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    values = _values(ckpt)
    kind = "fit"
    if isinstance(ckpt, EnsembleCheckpoint):
        values["current"], kind = _values(ckpt.current), "ensemble"
    skeleton = _flatten(values, tensors)
    header = {"format": CHECKPOINT_FORMAT, "kind": kind, "skeleton": json.dumps(skeleton)}
    return st_save(tensors, metadata=header)


def checkpoint_from_bytes(data: bytes) -> FitCheckpoint | EnsembleCheckpoint:
    """What `checkpoint_to_bytes` stored (the header's "kind" says which; none: a fit's)."""
    meta = _read_metadata(data, CHECKPOINT_FORMAT, "checkpoint")
    values = _unflatten(json.loads(meta["skeleton"]), st_load(data))
    kind = meta.get("kind", "fit")
    try:
        if kind == "ensemble":
            return EnsembleCheckpoint(**values | {"current": FitCheckpoint(**values["current"])})
        if kind == "fit":
            return FitCheckpoint(**values)
    except TypeError as exc:  # fields missing or unknown
        raise ModelFileError(f"corrupt checkpoint: {exc}") from None
    raise ModelFileError(f"unknown checkpoint kind {kind!r}")
