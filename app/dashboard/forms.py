"""Pure helpers behind the forms: parse and check what the user typed, before calling the API."""

from __future__ import annotations

from typing import Any

from app.dashboard.data_check import default_features, default_target


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def upload_warnings(dataset: dict[str, Any]) -> list[str]:
    """Problems the API stores without complaint but that make a dataset useless for training."""
    columns = dataset.get("columns") or []
    warnings = []
    if len(columns) == 1:
        name = columns[0]["name"]
        for sep, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
            if sep in name:
                warnings.append(
                    f"Only one column was found, named “{name[:60]}”: the file seems to use "
                    f"{label} between values. Save it as comma-separated CSV and upload again."
                )
                break
    for column in columns:
        if column.get("kind") != "categorical":
            continue
        top = column.get("top_values") or []
        numbers = [v for v in top if _looks_numeric(v)]
        texts = [v for v in top if not _looks_numeric(v)]
        if numbers and texts and len(numbers) >= len(texts):
            warnings.append(
                f"Column “{column['name']}” mixes numbers and text (e.g. “{texts[0][:30]}”), so "
                "it is treated as text and cannot be a feature or regression target. Fix those "
                "cells or leave the column out."
            )
    if columns and not any(c.get("kind") == "numeric" for c in columns):
        warnings.append("No column is numeric: there is nothing a model can learn from.")
    return warnings


def initial_selection(
    stats: list[dict[str, Any]], selection: dict[str, Any] | None, dataset_id: Any, n_rows: int = 0
) -> tuple[str | None, list[str], str]:
    """(target, features, task) for a dataset's picker: the user's remembered choice for this
    dataset when it still fits its columns, else the default target, the numeric columns that
    are not identifiers, mostly empty or other measured properties (``data_check``), and the
    task the target's kind suggests."""
    names = [s["name"] for s in stats]
    numeric = [s["name"] for s in stats if s.get("kind") == "numeric"]
    remembered = selection or {}
    if remembered.get("dataset_id") == dataset_id and remembered.get("target") in names:
        target = remembered["target"]
        features = [f for f in remembered.get("features") or [] if f in numeric and f != target]
        return target, features, remembered.get("task", "regression")
    target = default_target(stats, n_rows)
    features, _reasons = default_features(stats, target, n_rows)
    return target, features, "regression" if target in numeric else "classification"


def parse_hidden(text: str | None) -> list[int]:
    """``"8, 4"`` → ``[8, 4]``; raises ValueError with a message that says what to fix."""
    text = (text or "").strip().strip("[]")
    if not text:
        return []
    widths = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not (part.isascii() and part.isdigit()) or int(part) < 1:
            raise ValueError(
                f"Hidden layers: {part!r} is not a positive whole number. Write widths like '5' "
                "or '8, 4'."
            )
        widths.append(int(part))
    return widths


def estimate_parameters(model: str, width: list[int], grid: int, k: int) -> int:
    """Rough count before the run exists (B-spline KAN: grid+k coefficients + a base weight)."""
    pairs = list(zip(width, width[1:], strict=False))
    if model == "mlp":
        return sum(a * b + b for a, b in pairs)
    return sum(a * b * (grid + k + 1) + b for a, b in pairs)


def build_payload(selection: dict, values: dict[str, Any]) -> dict[str, Any]:
    """The ``RunCreate`` body; raises ValueError with a readable message."""
    payload: dict[str, Any] = {
        "dataset_id": selection["dataset_id"],
        "target_columns": [selection["target"]],
        "feature_columns": selection.get("features") or None,
        "task": selection.get("task") or "regression",
        "model": values["model"],
        "hidden": parse_hidden(values["hidden"]),
        "optimizer": values["optimizer"] or "adam",
    }
    required = {"steps": "Steps", "lr": "Learning rate", "seed": "Seed", "val": "Validation"}
    for key, label in required.items():
        if values.get(key) is None:
            raise ValueError(f"{label} is empty or out of range: enter a valid number.")
    payload.update(
        steps=int(values["steps"]),
        lr=float(values["lr"]),
        seed=int(values["seed"]),
        val_fraction=float(values["val"]),
        lamb=float(values["lamb"] or 0.0),
    )
    if values.get("batch"):
        payload["batch_size"] = int(values["batch"])
    # sent either way: the API's own default (unset) is patience 100 with validation rows
    stop = bool(values.get("patience")) and payload["val_fraction"] > 0  # none without val rows
    payload["early_stopping_patience"] = int(values["patience"]) if stop else None
    if values["model"] == "kan":
        if values.get("grid") is None or values.get("k") is None:
            raise ValueError("Grid and spline order must be whole numbers (grid ≥ 1, 1 ≤ k ≤ 5).")
        payload.update(
            grid=int(values["grid"]),
            k=int(values["k"]),
            basis=values["basis"] or "bspline",
            update_grid_every=int(values.get("update_grid") or 0),
        )
    elif values["model"] == "rbf_subspace":
        dim, centres = values.get("rbf_dim"), values.get("rbf_centres")
        if dim is None or centres is None:
            raise ValueError("Subspace dimension (1–16) and centres (2–256) must be whole numbers.")
        payload["model_options"] = {"subspace_dim": int(dim), "centres": int(centres)}
    else:
        payload["activation"] = values["activation"] or "silu"
    if values.get("name"):
        payload["name"] = str(values["name"])[:200]
    return payload
