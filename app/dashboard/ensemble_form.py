"""The Train form's ensemble option (KAN runs): members, bootstrap, the group column for a group
bootstrap; turned into the run's ``model_options`` (``ensemble_members``, …)."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, callback, dcc, html

from app.dashboard import api_client
from app.dashboard.api_client import ApiError
from app.dashboard.components import field
from app.dashboard.validation import positive_int

BOOTSTRAPS = [
    {"label": "none (seeds only)", "value": "none"},
    {"label": "rows", "value": "rows"},
    {"label": "groups", "value": "groups"},
]
HELP = {
    "members": "1 = a single KAN. 2–32: an ensemble of KANs trained side by side; predictions "
    "get an interval (calibrated on the validation rows), edges a band across members. The "
    "run's model (edges, formula) is member 0.",
    "bootstrap": "What varies between members besides the seed: nothing, a resample of the "
    "rows, or a resample of whole groups (e.g. all rows of one alloy).",
    "group": "The column naming each row's group (group bootstrap only).",
}
KEEP: dict[str, Any] = {"persistence": True, "persistence_type": "session"}


def fields() -> list[html.Div]:
    """The ensemble's fields, cells of the Train page's KAN options grid."""
    return [
        field(
            "Ensemble members",
            dcc.Input(id="tr-ens-members", type="number", value=1, min=1, max=32, **KEEP),
            HELP["members"],
        ),
        field(
            "Bootstrap",
            dcc.Dropdown(
                id="tr-ens-bootstrap", options=BOOTSTRAPS, value="none", clearable=False, **KEEP
            ),
            HELP["bootstrap"],
        ),
        field("Group column", dcc.Dropdown(id="tr-ens-group", options=[]), HELP["group"]),
    ]


def with_ensemble(
    payload: dict[str, Any], members: Any, bootstrap: Any, group: Any, split_kind: Any
) -> dict[str, Any]:
    """``payload`` with the ensemble's model_options (unchanged for 1 member); ValueError with
    what to change."""
    if members in (None, "", 1):
        return payload
    if isinstance(members, float) and members.is_integer():
        members = int(members)
    if isinstance(members, bool) or not isinstance(members, int) or not 2 <= members <= 32:
        raise ValueError("Ensemble members must be a whole number from 1 (no ensemble) to 32.")
    if payload.get("model") != "kan":
        raise ValueError("Ensembles are for KAN runs: set Ensemble members to 1.")
    if split_kind == "kfold":
        raise ValueError(
            "An ensemble is calibrated on a hold-out split: choose 'random hold-out' or set "
            "Ensemble members to 1."
        )
    options: dict[str, Any] = {"ensemble_members": members}
    bootstrap = bootstrap if bootstrap in ("none", "rows", "groups") else "none"
    options["ensemble_bootstrap"] = bootstrap
    if bootstrap == "groups":
        if not isinstance(group, str) or not group:
            raise ValueError("Choose the group column for a group bootstrap.")
        options["group_column"] = group
    return payload | {"model_options": {**(payload.get("model_options") or {}), **options}}


@callback(
    Output("tr-ens-group", "options"),
    Input("selection-store", "data"),
)
def list_columns(selection: Any):
    dataset_id = positive_int(selection.get("dataset_id")) if isinstance(selection, dict) else None
    if dataset_id is None:
        return []
    try:
        preview = api_client.dataset_preview(dataset_id, limit=1)
    except ApiError:
        return []
    return [s["name"] for s in preview.get("stats") or [] if isinstance(s, dict) and "name" in s]
