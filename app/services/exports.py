"""Exports of a run: formula as LaTeX / Python (NumPy) / sympy srepr, the model file
(safetensors + JSON metadata), predictions as CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.services.errors import ConflictError, InvalidInputError
from app.services.inspection import model_bytes, predictions, require_model
from app.services.symbolic import formula_result

EXPORT_KINDS = ("latex", "python", "sympy", "model", "predictions")


@dataclass
class ExportFile:
    content: bytes
    media_type: str
    filename: str


def export(session: Session, run_id: int, kind: str, timeout_s: float = 60.0) -> ExportFile:
    if kind not in EXPORT_KINDS:
        raise InvalidInputError(f"Unknown export {kind!r}. Available: {list(EXPORT_KINDS)}")
    if kind == "model":
        require_model(session, run_id)
        return ExportFile(
            model_bytes(session, run_id), "application/octet-stream", f"run-{run_id}.safetensors"
        )
    if kind == "predictions":
        return _predictions_csv(session, run_id)
    res = formula_result(session, run_id, timeout_s)
    if res["numeric_edges"]:  # a partial formula is shown, not exported
        from kan_core.symbolic import FormulaIncompleteError

        raise FormulaIncompleteError([tuple(e) for e in res["numeric_edges"]])
    if kind == "latex":
        body = "\n".join(o["latex"] for o in res["outputs"]) + "\n"
        return ExportFile(body.encode(), "text/x-tex; charset=utf-8", f"run-{run_id}-formula.tex")
    if kind == "python":
        return ExportFile(
            res["python"].encode(), "text/x-python; charset=utf-8", f"run_{run_id}_formula.py"
        )
    lines = [f"# {o['name']}\n{o['srepr']}" for o in res["outputs"]]
    return ExportFile(
        ("\n".join(lines) + "\n").encode(),
        "text/plain; charset=utf-8",
        f"run-{run_id}-formula.srepr.txt",
    )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_START):
        return "'" + cell
    return cell


def _predictions_csv(session: Session, run_id: int) -> ExportFile:
    buf = io.StringIO()
    w = csv.writer(buf)
    header_written = False
    for split in ("train", "validation"):
        try:
            p = predictions(session, run_id, split)
        except ConflictError:
            if split == "train":  # baselines keep validation predictions only
                continue
            raise
        names = p["output_names"]
        if not header_written:
            if p["metric_name"] == "accuracy":
                w.writerow(
                    [
                        "row",
                        "split",
                        *(spreadsheet_safe(f"{names[0]}_{s}") for s in ("true", "pred")),
                    ]
                )
            else:
                w.writerow(
                    [
                        "row",
                        "split",
                        *[spreadsheet_safe(f"{n}_true") for n in names],
                        *[spreadsheet_safe(f"{n}_pred") for n in names],
                        *interval_header(p, names),
                    ]
                )
            header_written = True
        for k, row in enumerate(p["rows"]):
            t, q = p["y_true"][k], p["y_pred"][k]
            if isinstance(t, list):
                w.writerow(
                    [
                        row,
                        split,
                        *["" if v is None else v for v in t],
                        *["" if v is None else v for v in q],
                        *interval_cells(p, k),
                    ]
                )
            else:
                w.writerow([row, split, spreadsheet_safe(t), spreadsheet_safe(q)])
    return ExportFile(
        buf.getvalue().encode(), "text/csv; charset=utf-8", f"run-{run_id}-predictions.csv"
    )


def interval_header(p: dict, names: list[str]) -> list[object]:
    """An ensemble run's extra columns: members' mean, interval ends, the nominal level, and
    which model they describe (``interval_of``: the trained one once the run was edited)."""
    if p.get("lower") is None:
        return []
    cells = [f"{n}_{part}" for part in ("ensemble_mean", "lower", "upper") for n in names]
    return [*(spreadsheet_safe(c) for c in cells), "interval_level", "interval_of"]


def interval_cells(p: dict, k: int) -> list[object]:
    if p.get("lower") is None:
        return []
    values = [*p["y_mean"][k], *p["lower"][k], *p["upper"][k]]
    model = "current model" if p.get("interval_current", True) else "trained model (before edits)"
    return [*("" if v is None else v for v in values), p["level"], model]
