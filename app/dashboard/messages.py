"""Pure text helpers for the run pages' messages: the API's words turned into the buttons'
words, long messages shortened at a word boundary, the auto-symbolic report counted right
(fixed / already symbolic / pruned / left as splines), and the Runs table's compact cells."""

from __future__ import annotations

import re
from typing import Any

#: API names in messages from the server → what the run page calls them.
UI_WORDS = (
    (re.compile(r"\bauto_symbolic\b"), "Auto-symbolic"),
    (re.compile(r"\br2_threshold\b"), "R² threshold"),
    (re.compile(r"\bFix them \(fix or\b"), "Fix them (Fix or"),
    (re.compile(r"\bcomplexity_weight\b"), "complexity weight"),
    (re.compile(r"\bPOST /api/runs/\{id\}/prune\b"), "Prune"),
    (re.compile(r"\bPOST /api/runs/\{id\}/reset-edits\b"), "Reset edits"),
)


def ui_words(text: str) -> str:
    for pattern, words in UI_WORDS:
        text = pattern.sub(words, text)
    return text


def shorten(text: str, limit: int = 600) -> str:
    """``text`` if it fits, else cut at the last space before ``limit`` with "…" (never
    mid-word)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip(" ,;:") + " …"


def _edges(n: int) -> str:
    return f"{n} edge" if n == 1 else f"{n} edges"


def auto_symbolic_text(result: dict[str, Any], threshold: float) -> str:
    """What one Auto-symbolic click did, each edge counted once."""
    fixed = int(result.get("n_fixed") or 0)
    numeric = int(result.get("n_numeric") or 0)
    already = int(result.get("n_already_symbolic") or 0)
    inactive = int(result.get("n_inactive") or 0)
    late = int(result.get("n_out_of_time") or 0)
    total = int(result.get("n_edges") or fixed + numeric + already + inactive + late)
    parts = [f"Auto-symbolic fixed {fixed} of {total} edges"]
    if already:
        parts.append(f"{_edges(already)} already symbolic")
    if inactive:
        parts.append(f"{_edges(inactive)} pruned or unused")
    if numeric:
        parts.append(f"{_edges(numeric)} left as splines (best R² below {threshold:g})")
    elif not fixed and not already and not late:
        parts.append("no edge left to fit")
    if late:
        parts.append(f"{_edges(late)} left as splines: time ran out (click again to continue)")
    return "; ".join(parts) + "."


def sampled_rows_note(answer: Any, what: str = "Computed") -> str | None:
    """``Computed on 2,048 of 10,000 training rows.`` for an inspection answer whose rows were
    sampled (``rows_used`` < ``rows_total``); None when it used them all."""
    if not isinstance(answer, dict):
        return None
    used, total = answer.get("rows_used"), answer.get("rows_total")
    if not isinstance(used, int) or not isinstance(total, int) or used >= total:
        return None
    return f"{what} on {used:,} of {total:,} training rows."


def rows_used(summary: dict[str, Any]) -> str:
    """``415 (1,130 dropped)``: a run's rows after dropping missing values."""
    used, dropped = summary.get("n_rows_used"), summary.get("n_rows_dropped")
    if used is None:
        return ""
    return f"{used:,}" + (f" ({dropped:,} dropped)" if dropped else "")


def settings_text(config: dict[str, Any]) -> str:
    """The hyperparameters that most often differ between runs, in one cell."""
    if config.get("steps") is None:
        return ""
    patience = config.get("early_stopping_patience")
    stop = f"early stop {patience}" if patience else "all steps"
    return f"{config['steps']:,} · {config.get('lr', '?')} · {stop}"
