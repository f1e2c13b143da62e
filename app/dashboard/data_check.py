"""Pure helpers for the data check on the Datasets page: readable column headers, sensible
defaults on a raw table (which column to predict, which to leave out and why), and the text that
says how many rows a run keeps after dropping missing values and which column to untick."""

from __future__ import annotations

import re
from typing import Any

#: Below this many complete rows a run is refused in the dashboard (it would train on noise).
MIN_ROWS = 10
#: A column missing in more than this share of rows is left unticked by default.
MOSTLY_EMPTY = 0.5

_LATEX = (
    (r"^{\circ}", "°"),
    (r"^\circ", "°"),
    (r"\mu", "μ"),
    (r"\circ", "°"),
    (r"\alpha", "α"),
    (r"\beta", "β"),
    (r"\gamma", "γ"),
    (r"\delta", "δ"),
    (r"\Delta", "Δ"),
    (r"\sigma", "σ"),
    (r"\rho", "ρ"),
    (r"\Omega", "Ω"),
    (r"\chi", "χ"),
    (r"\cdot", "·"),
    (r"\times", "×"),
    (r"\%", "%"),
)
_SUPERSCRIPT = str.maketrans("0123456789+-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻")
_SUBSCRIPT = str.maketrans("0123456789+-", "₀₁₂₃₄₅₆₇₈₉₊₋")
_MATH = re.compile(r"\$([^$]*)\$")
_SCRIPT = re.compile(r"([\^_])\{?([0-9+\-]+)\}?")

#: The name of a column, once its prefix ("PROPERTY: ") and unit ("(MPa)") are taken off, that
#: marks it as something measured on the samples, i.e. a target rather than an input.
TARGET_WORDS = frozenset(
    {
        "target", "label", "hv", "hardness", "ys", "uts", "yield strength",
        "tensile strength", "strength", "elongation", "elongation plastic", "young modulus",
        "exp. young modulus", "ductility", "toughness",
    }
)  # fmt: skip
#: Names (case-sensitive) chosen as the target when present, most wanted first.
TARGET_NAMES = ("target", "Target", "TARGET", "label", "Label", "y", "class", "HV", "hardness")
_ID_LIKE = re.compile(
    r"(^|[\s_:.-])(id|ids|identifier|index|idx|row|doi|reference|ref|year|date|title|url|"
    r"source|citation)($|[\s_:.-])",
    re.IGNORECASE,
)


def readable_name(name: str) -> str:
    """``PROPERTY: grain size ($\\mu$m)`` → ``PROPERTY: grain size (μm)``; ``g/cm$^3$`` →
    ``g/cm³``; ``$^\\circ$C`` → ``°C``. Names without ``$`` are returned unchanged."""
    if "$" not in name:
        return name

    def math(match: re.Match[str]) -> str:
        text = match.group(1)
        for latex, symbol in _LATEX:
            text = text.replace(latex, symbol)
        text = _SCRIPT.sub(
            lambda m: m.group(2).translate(_SUPERSCRIPT if m.group(1) == "^" else _SUBSCRIPT), text
        )
        return text.replace("{", "").replace("}", "").replace("\\", "")

    return _MATH.sub(math, name)


def bare_name(name: str) -> str:
    """The column's own name: no ``PREFIX:``, no unit in brackets, lower case."""
    text = name.rsplit(":", 1)[-1] if ":" in name else name
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", "", text)
    return " ".join(text.split()).lower()


def is_id_like(stat: dict[str, Any], n_rows: int) -> bool:
    """An identifier, a year, a reference: named so, or an integer column unique in every row."""
    name = stat["name"]
    if _ID_LIKE.search(name) or name.upper().startswith(("IDENTIFIER", "REFERENCE")):
        return True
    return (
        stat.get("dtype", "").startswith("int")
        and n_rows > 20
        and stat.get("n_unique") == n_rows
        and not stat.get("n_missing")
    )


def is_target_like(name: str) -> bool:
    return bare_name(name) in TARGET_WORDS


def exclusion_reason(stat: dict[str, Any], n_rows: int) -> str | None:
    """Why a numeric column is left unticked by default (None: it is a feature)."""
    if is_id_like(stat, n_rows):
        return "identifier, year or reference"
    missing = int(stat.get("n_missing") or 0)
    if n_rows and missing > MOSTLY_EMPTY * n_rows:
        return f"empty in {missing:,} of {n_rows:,} rows"
    if is_target_like(stat["name"]):
        return "another measured property (a target, not an input)"
    if stat.get("n_unique") == 1:
        return "the same value in every row"
    return None


def default_target(stats: list[dict[str, Any]], n_rows: int = 0) -> str | None:
    """A column named like a target (case-sensitive, so the element ``Y`` is not ``y``; a
    ``PROPERTY: HV`` counts as ``HV``), else the last numeric column that is not an identifier,
    year or reference (the CSV convention)."""
    names = [s["name"] for s in stats]
    numeric = [s for s in stats if s.get("kind") == "numeric"]
    for candidate in TARGET_NAMES:
        if candidate in names:
            return candidate
    for candidate in TARGET_NAMES:
        for s in numeric:
            if bare_name(s["name"]) == candidate.lower() and ":" in s["name"]:
                return s["name"]
    usable = [s["name"] for s in numeric if not is_id_like(s, n_rows)]
    if usable:
        return usable[-1]
    return numeric[-1]["name"] if numeric else (names[-1] if names else None)


def default_features(
    stats: list[dict[str, Any]], target: str | None, n_rows: int
) -> tuple[list[str], dict[str, str]]:
    """(ticked features, {unticked numeric column: reason})."""
    features, reasons = [], {}
    for s in stats:
        if s.get("kind") != "numeric" or s["name"] == target:
            continue
        reason = exclusion_reason(s, n_rows)
        if reason:
            reasons[s["name"]] = reason
        else:
            features.append(s["name"])
    return features, reasons


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``1,545 rows`` (``many`` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def untick_advice(report: dict[str, Any], limit: int = 3) -> list[tuple[str, int, int]]:
    """Features whose removal keeps the most rows: (column, rows it misses, rows kept
    without it), best first, only those that would keep more rows than now."""
    now = int(report.get("n_complete") or 0)
    gains = [
        (c["name"], int(c["n_missing"]), int(c["n_complete_without"]))
        for c in report.get("columns") or []
        if c.get("role") == "feature" and int(c["n_complete_without"]) > now
    ]
    gains.sort(key=lambda g: (-g[2], -g[1]))
    return gains[:limit]


def row_check_text(report: dict[str, Any], min_rows: int = MIN_ROWS) -> tuple[str, str]:
    """(alert kind, sentence) for the data check: how many rows remain, which columns drop
    rows and, when too few remain, what to untick. Kind "danger" means: refuse the run."""
    n_rows, kept = int(report["n_rows"]), int(report["n_complete"])
    dropped = int(report["n_dropped"])
    if not dropped:
        return "success", f"Every row is complete: {plural(n_rows, 'row')} will be used."
    by_column = sorted(
        (c for c in report.get("columns") or [] if c["n_missing"]),
        key=lambda c: -int(c["n_missing"]),
    )
    named = ", ".join(
        f"{readable_name(c['name'])} ({c['n_missing']:,} missing)" for c in by_column[:4]
    )
    if len(by_column) > 4:
        named += f" and {len(by_column) - 4} more"
    text = (
        f"{plural(kept, 'row')} of {n_rows:,} will be used: {plural(dropped, 'row')} "
        f"dropped for missing values, in {named}."
    )
    if kept >= min_rows:
        return ("warning" if dropped > n_rows / 2 else "info"), text
    advice = untick_advice(report)
    if advice:
        hints = "; ".join(
            f"without {readable_name(name)} {plural(without, 'row')} remain"
            for name, _missing, without in advice
        )
        text += f" That is too few to train on (at least {min_rows} needed). Untick: {hints}."
    else:
        text += (
            f" That is too few to train on (at least {min_rows} needed), and no single feature "
            "is to blame: choose another target or fewer features."
        )
    return "danger", text
