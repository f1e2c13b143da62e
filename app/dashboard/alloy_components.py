"""Pure helpers of the alloy workflow's pages (no Dash callbacks, importable anywhere)."""

from __future__ import annotations

from typing import Any

#: ``group_by`` values: the detected alloy composition, or none (plain shuffled K-fold).
COMPOSITION = "composition"
NO_GROUPS = "__none__"


def group_options(column_names: list[str], composition_source: str | None) -> list[dict[str, str]]:
    """Dropdown options for "group folds by": composition (when one was detected), none, or any
    column."""
    options = []
    if composition_source:
        options.append({"label": f"composition ({composition_source})", "value": COMPOSITION})
    options.append({"label": "none — plain K-fold", "value": NO_GROUPS})
    return options + [{"label": n, "value": n} for n in column_names]


def split_body(group: str | None, folds: Any, seed: Any) -> dict[str, Any]:
    """The API's ``split`` object; ValueError says what to fix."""
    if folds is None or not 2 <= int(folds) <= 20:
        raise ValueError("Folds must be a whole number from 2 to 20.")
    return {
        "n_splits": int(folds),
        "group_by": None if group in (None, NO_GROUPS) else group,
        "seed": int(seed or 0),
    }


def build_request(
    target: str | None,
    features: list[str] | None,
    task: str | None,
    group: str | None,
    folds: Any,
    steps: Any,
    seed: Any,
) -> dict[str, Any]:
    """The ``POST /datasets/{id}/leaderboards`` body; ValueError says what to fix. The models
    are the API's default line-up (not sent: the API owns the defaults), ``steps`` their
    networks' step limit."""
    if not target:
        raise ValueError("Choose the target column.")
    features = [f for f in features or [] if f != target]
    if not features:
        raise ValueError("Choose at least one feature column.")
    if steps is not None and int(steps) < 1:
        raise ValueError("Network steps must be at least 1 (or empty for the default).")
    body = {
        "target_columns": [target],
        "feature_columns": features,
        "task": task or "regression",
        "split": split_body(group, folds, seed),
    }
    return body | ({"network_steps": int(steps)} if steps else {})


_NETWORK_PARAM_KEYS = {
    "kan": {"hidden", "grid", "k", "basis", "update_grid_every"},
    "mlp": {"hidden", "activation"},
}
_FIT_PARAM_KEYS = {
    "steps", "lr", "optimizer", "batch_size", "lamb", "early_stopping_patience", "val_fraction",
}  # fmt: skip


def cross_validated_run_request(
    run_payload: dict[str, Any], split: dict[str, Any]
) -> dict[str, Any]:
    """A Train-page run (the ``POST /runs`` body) evaluated by K-fold cross-validation instead:
    a one-model ``POST /datasets/{id}/leaderboards`` body with the same settings. Each fold
    holds out ``val_fraction`` of its training rows (grouped too) for early stopping."""
    kind = run_payload["model"]
    keys = _FIT_PARAM_KEYS | _NETWORK_PARAM_KEYS.get(kind, set())
    params = {k: v for k, v in run_payload.items() if k in keys and v is not None}
    if kind == "rbf_subspace":  # a leaderboard entry of a non-network kind: model_options only
        params = dict(run_payload.get("model_options") or {}) | {
            k: run_payload[k] for k in ("steps", "lr") if run_payload.get(k) is not None
        }
    return {
        "target_columns": run_payload["target_columns"],
        "feature_columns": run_payload.get("feature_columns"),
        "task": run_payload.get("task") or "regression",
        "split": split,
        "models": [
            {"name": run_payload.get("name") or kind.upper(), "kind": kind, "params": params}
        ],
    }
