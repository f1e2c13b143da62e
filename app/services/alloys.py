"""Alloy compositions → normalised element fractions + the standard HEA descriptors.

Pure functions over pandas DataFrames (no database): :func:`detect_composition_source` finds the
composition in a table (a column of formula strings such as ``Al0.5CoCrFeNi`` or
``Al0.25 Co1 Fe1 Ni1``, or a set of element-amount columns such as ``Fe``/``x_Fe``), and
:func:`featurise` adds one ``x_<El>`` column per element (fractions summing to 1) plus

=================  ==========================================================  =========
column             descriptor                                                   unit
=================  ==========================================================  =========
``vec``            valence-electron concentration                              e/atom
``delta_pct``      atomic-size mismatch δ                                       %
``smix_J_molK``    ideal configurational mixing entropy ΔSmix                   J/(mol K)
``dhmix_kJ_mol``   Miedema mixing enthalpy ΔHmix                                kJ/mol
``tm_K``           rule-of-mixtures melting temperature Tm                      K
``delta_chi``      Pauling electronegativity mismatch Δχ                        —
``omega``          Yang–Zhang Ω = Tm·ΔSmix / |ΔHmix|                             —
=================  ==========================================================  =========

The column names are those of the shipped MPEA demo files, which were made with the same package.
Parsing and every element property come from the MIT-licensed ``hea-bench`` package; this module
holds no element table. A row that cannot be featurised (unparseable formula, element missing
from hea-bench's tables, negative amount, Ω undefined because ΔHmix = 0) is never dropped here:
it is reported as a :class:`RowError` with its row number and reason, its new cells are left
empty, and the caller decides (see :func:`apply_error_policy`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

import numpy as np
import pandas as pd

from app.extras import require
from app.services.errors import InvalidInputError

__all__ = [
    "DESCRIPTORS",
    "CompositionError",
    "CompositionSource",
    "FeaturisationResult",
    "RowError",
    "apply_error_policy",
    "composition_keys",
    "descriptors_for",
    "detect_composition_source",
    "element_symbol",
    "featurise",
    "parse_row_composition",
]

#: Output column → (hea-bench function name, unit, human label). Order is the output column order.
DESCRIPTORS: dict[str, tuple[str, str, str]] = {
    "vec": ("vec", "e/atom", "valence-electron concentration VEC"),
    "delta_pct": ("delta", "%", "atomic-size mismatch δ"),
    "smix_J_molK": ("smix", "J/(mol K)", "ideal mixing entropy ΔSmix"),
    "dhmix_kJ_mol": ("mixing_enthalpy", "kJ/mol", "Miedema mixing enthalpy ΔHmix"),
    "tm_K": ("melting_temperature", "K", "rule-of-mixtures melting point Tm"),
    "delta_chi": ("delta_chi", "Pauling", "electronegativity mismatch Δχ"),
    "omega": ("omega", "", "Yang–Zhang Ω"),
}


def _hea_bench() -> ModuleType:
    """hea-bench, from the ``[alloys]`` extra (imported on first use)."""
    return require("hea_bench", "Alloy featurisation (composition descriptors)")


FRACTION_PREFIX = "x_"
# Names users give a formula column, most specific first; matched case-insensitively.
_FORMULA_NAME_HINTS = ("formula", "composition", "alloy", "compound", "name")
# `Fe`, `x_Fe`, `X_Fe`, `Fe (at%)`, `Fe_at%`, `Fe at.%`, `Fe (at. frac)`.
_ELEMENT_COLUMN = re.compile(
    r"^(?:[xX]_)?(?P<el>[A-Z][a-z]?)(?:[ _]*\(?(?:at\.?\s*%|at\.?\s*frac(?:tion)?)\)?)?$"
)
_DETECT_SAMPLE = 200
_DETECT_MIN_SHARE = 0.8
_DETECT_MIN_SHARE_NAMED = 0.5  # a column called 'formula' may hold more bad rows


class CompositionError(InvalidInputError, ValueError):
    """The composition of a table cannot be used as asked (a user error, HTTP 422)."""


@dataclass(frozen=True)
class RowError:
    """One row that could not be featurised. ``row`` is 0-based (the dataset's row index);
    ``line`` is the line in the CSV file, counting the header as line 1."""

    row: int
    value: str
    reason: str

    @property
    def line(self) -> int:
        return self.row + 2

    def to_dict(self) -> dict[str, object]:
        return {"row": self.row, "line": self.line, "value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class CompositionSource:
    """Where a table's composition lives: one formula column, or element-amount columns."""

    kind: Literal["formula", "elements"]
    formula_column: str | None = None
    # element-amount column name → element symbol, in table order
    element_columns: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def formula(cls, column: str) -> CompositionSource:
        return cls(kind="formula", formula_column=column)

    @classmethod
    def elements(cls, columns: Mapping[str, str]) -> CompositionSource:
        return cls(kind="elements", element_columns=dict(columns))

    @property
    def columns(self) -> list[str]:
        if self.kind == "formula":
            return [str(self.formula_column)]
        return list(self.element_columns)

    def describe(self) -> str:
        if self.kind == "formula":
            return f"formula column {self.formula_column!r}"
        return f"{len(self.element_columns)} element columns ({', '.join(self.element_columns)})"

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "formula_column": self.formula_column,
            "element_columns": dict(self.element_columns),
        }


@dataclass
class FeaturisationResult:
    """``frame``: the input columns unchanged plus ``x_<El>`` and descriptor columns (rows with
    errors have empty new cells). ``errors``: one entry per row that failed."""

    frame: pd.DataFrame
    errors: list[RowError]
    source: CompositionSource
    fraction_columns: list[str]
    descriptor_columns: list[str]

    @property
    def new_columns(self) -> list[str]:
        return self.fraction_columns + self.descriptor_columns

    def summary(self, max_errors: int = 50) -> dict[str, object]:
        return {
            "source": self.source.to_dict(),
            "rows": len(self.frame),
            "rows_ok": len(self.frame) - len(self.errors),
            "fraction_columns": self.fraction_columns,
            "descriptor_columns": self.descriptor_columns,
            "n_errors": len(self.errors),
            "errors": [e.to_dict() for e in self.errors[:max_errors]],
        }


def element_symbol(text: str) -> str | None:
    """The element symbol a string is (``"Fe"`` → ``"Fe"``), else None; hea-bench decides."""
    try:
        parsed = _hea_bench().parse_formula(text)
    except ValueError:
        return None
    if len(parsed) == 1 and next(iter(parsed)) == text:
        return text
    return None


def _element_columns(df: pd.DataFrame) -> dict[str, str]:
    found: dict[str, str] = {}
    for column in df.columns:
        match = _ELEMENT_COLUMN.match(str(column).strip())
        if match is None or not pd.api.types.is_numeric_dtype(df[column]):
            continue
        symbol = element_symbol(match.group("el"))
        if symbol is not None and symbol not in found.values():
            found[str(column)] = symbol
    return found


def _parse_share(values: pd.Series) -> float:
    sample = values.dropna().astype(str).str.strip()
    sample = sample[sample != ""].head(_DETECT_SAMPLE)
    if sample.empty:
        return 0.0
    hea = _hea_bench()
    ok = 0
    for text in sample:
        try:
            parsed = hea.parse_formula(text)
            hea.vec(parsed)  # elements must be tabulated: "FCC" parses as F + C, but no
        except ValueError:
            continue
        # a lone symbol ("Fe") is not evidence of a formula column
        ok += len(parsed) >= 2
    return ok / len(sample)


def detect_composition_source(df: pd.DataFrame) -> CompositionSource:
    """Find the composition in ``df``: a text column whose values parse as multi-element
    formulas (≥80 % of a sample, ≥50 % if named like ``formula``/``composition``/``alloy``;
    the best share wins, then the name), else ≥2
    numeric element-amount columns. Raises :class:`CompositionError` when there is neither."""
    candidates: list[tuple[float, int, str]] = []
    for position, column in enumerate(df.columns):
        series = df[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        lowered = str(column).lower()
        hint = next(
            (rank for rank, h in enumerate(_FORMULA_NAME_HINTS) if h in lowered),
            len(_FORMULA_NAME_HINTS),
        )
        share = _parse_share(series)
        named = hint < len(_FORMULA_NAME_HINTS)
        if share >= (_DETECT_MIN_SHARE_NAMED if named else _DETECT_MIN_SHARE):
            candidates.append((-share, hint * 1000 + position, str(column)))
    if candidates:
        return CompositionSource.formula(min(candidates)[2])
    elements = _element_columns(df)
    if len(elements) >= 2:
        return CompositionSource.elements(elements)
    raise CompositionError(
        "No composition found: expected a text column of alloy formulas (e.g. 'Al0.5CoCrFeNi' or "
        "'Al0.25 Co1 Fe1 Ni1') or at least two numeric element columns named like 'Fe' or 'x_Fe'. "
        "Name the formula column explicitly if it has another form."
    )


def resolve_source(
    df: pd.DataFrame,
    formula_column: str | None = None,
    element_columns: Sequence[str] | None = None,
) -> CompositionSource:
    """The source the user named (validated), or the detected one when none is named."""
    if formula_column is not None and element_columns:
        raise CompositionError("Give either a formula column or element columns, not both.")
    if formula_column is not None:
        if formula_column not in df.columns:
            raise CompositionError(
                f"Column {formula_column!r} is not in the dataset; columns: {list(df.columns)}."
            )
        return CompositionSource.formula(formula_column)
    if element_columns:
        mapping: dict[str, str] = {}
        for column in element_columns:
            if column not in df.columns:
                raise CompositionError(f"Column {column!r} is not in the dataset.")
            if not pd.api.types.is_numeric_dtype(df[column]):
                raise CompositionError(f"Element column {column!r} must be numeric.")
            match = _ELEMENT_COLUMN.match(str(column).strip())
            symbol = element_symbol(match.group("el")) if match else None
            if symbol is None:
                raise CompositionError(
                    f"Column {column!r} does not name an element (use e.g. 'Fe' or 'x_Fe')."
                )
            if symbol in mapping.values():
                raise CompositionError(f"Element {symbol} is named by two columns.")
            mapping[column] = symbol
        if len(mapping) < 2:
            raise CompositionError("Element columns: name at least two.")
        return CompositionSource.elements(mapping)
    return detect_composition_source(df)


def _cell_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def parse_row_composition(row: Mapping[str, object], source: CompositionSource) -> dict[str, float]:
    """One row's composition as normalised mole fractions; ``ValueError`` says what is wrong."""
    if source.kind == "formula":
        text = _cell_text(row[str(source.formula_column)]).strip()
        if not text:
            raise ValueError("empty composition")
        return _hea_bench().parse_formula(text)
    amounts: dict[str, float] = {}
    for column, symbol in source.element_columns.items():
        value = row[column]
        if value is None or pd.isna(value):
            continue  # an empty cell in an element column means "not present"
        amount = float(value)  # type: ignore[arg-type]
        if not math.isfinite(amount) or amount < 0:
            raise ValueError(f"amount {value!r} in column {column!r} must be finite and ≥ 0")
        if amount > 0:
            amounts[symbol] = amount
    if not amounts:
        raise ValueError("all element amounts are zero or empty")
    return _hea_bench().normalize(amounts)


def descriptors_for(composition: Mapping[str, float]) -> dict[str, float]:
    """The seven descriptors of one normalised composition (``ValueError`` if not computable)."""
    hea = _hea_bench()
    values = {
        name: float(getattr(hea, fn)(dict(composition))) for name, (fn, _, _) in DESCRIPTORS.items()
    }
    bad = [name for name, v in values.items() if not math.isfinite(v)]
    if bad == ["omega"]:
        raise ValueError("Ω is undefined (infinite) because ΔHmix = 0, e.g. a single element")
    if bad:
        raise ValueError(f"non-finite descriptor(s) {bad}")
    return values


def _composition_key(composition: Mapping[str, float], decimals: int = 6) -> str:
    return " ".join(f"{el}{round(x, decimals):g}" for el, x in sorted(composition.items()))


def featurise(
    df: pd.DataFrame,
    source: CompositionSource | None = None,
    *,
    overwrite: bool = False,
) -> FeaturisationResult:
    """Add normalised ``x_<El>`` fractions and the :data:`DESCRIPTORS` to a copy of ``df``.

    ``source`` defaults to :func:`detect_composition_source`. Existing columns are kept as they
    are, with two exceptions: source element columns already named ``x_<El>`` are replaced by
    their normalised values, and any other column whose name a new column takes raises
    :class:`CompositionError` unless ``overwrite`` (then it is replaced). The input frame itself
    is never modified.
    """
    source = source or detect_composition_source(df)
    errors: list[RowError] = []
    compositions: dict[int, dict[str, float]] = {}
    descriptors: dict[int, dict[str, float]] = {}
    cache: dict[str, tuple[dict[str, float], dict[str, float]] | str] = {}
    records = df[source.columns].to_dict("records")
    for position, row in enumerate(records):
        raw = (
            _cell_text(row[str(source.formula_column)]).strip()
            if source.kind == "formula"
            else repr(tuple(row.values()))
        )
        cached = cache.get(raw)
        if cached is None:
            try:
                composition = parse_row_composition(row, source)
                cached = (composition, descriptors_for(composition))
            except ValueError as exc:
                cached = str(exc)
            cache[raw] = cached
        if isinstance(cached, str):
            shown = raw if source.kind == "formula" else _describe_element_row(row)
            errors.append(RowError(row=position, value=shown, reason=cached))
        else:
            compositions[position], descriptors[position] = cached

    elements = sorted({el for comp in compositions.values() for el in comp})
    fraction_columns = [FRACTION_PREFIX + el for el in elements]
    descriptor_columns = list(DESCRIPTORS)
    new_columns = fraction_columns + descriptor_columns
    taken = [c for c in new_columns if c in df.columns]
    clashing = [c for c in taken if c not in source.columns]
    if clashing and not overwrite:
        raise CompositionError(
            f"Columns {clashing} already exist; rename them or featurise with overwrite."
        )

    n = len(df)
    new = {c: np.full(n, np.nan) for c in new_columns}
    for position, composition in compositions.items():
        for el, x in composition.items():
            new[FRACTION_PREFIX + el][position] = x
        for name, value in descriptors[position].items():
            new[name][position] = value
    parsed_rows = np.zeros(n, dtype=bool)
    parsed_rows[list(compositions)] = True
    for column in fraction_columns:  # an absent element is 0 on rows that parsed
        values = new[column]
        values[parsed_rows & np.isnan(values)] = 0.0
    out = df.drop(columns=taken).copy() if taken else df.copy()
    out = pd.concat([out, pd.DataFrame(new, index=df.index)], axis=1)
    return FeaturisationResult(
        frame=out,
        errors=errors,
        source=source,
        fraction_columns=fraction_columns,
        descriptor_columns=descriptor_columns,
    )


def _describe_element_row(row: Mapping[str, object]) -> str:
    parts = [f"{k}={v}" for k, v in row.items() if not (v is None or pd.isna(v)) and v != 0]
    return ", ".join(parts) if parts else "(all empty or zero)"


ErrorPolicy = Literal["fail", "drop", "keep"]


def apply_error_policy(result: FeaturisationResult, on_error: ErrorPolicy) -> pd.DataFrame:
    """The table to store, as the user decided: ``fail`` raises :class:`CompositionError`
    listing the bad rows (when there are any), ``drop`` removes exactly those rows, ``keep``
    keeps them with empty descriptor cells."""
    if not result.errors or on_error == "keep":
        return result.frame
    if on_error == "drop":
        bad = [e.row for e in result.errors]
        return result.frame.drop(index=result.frame.index[bad]).reset_index(drop=True)
    if on_error != "fail":
        raise CompositionError(f"on_error must be 'fail', 'drop' or 'keep', not {on_error!r}.")
    listed = "; ".join(f"row {e.row} ({e.value!r}): {e.reason}" for e in result.errors[:10])
    more = f" … and {len(result.errors) - 10} more" if len(result.errors) > 10 else ""
    raise CompositionError(
        f"{len(result.errors)} of {len(result.frame)} rows cannot be featurised: {listed}{more}. "
        "Fix them, or choose to drop them or keep them with empty descriptors."
    )


def composition_keys(df: pd.DataFrame, source: CompositionSource | None = None) -> np.ndarray:
    """A canonical key per row (sorted elements, fractions rounded to 1e-6) so that
    ``Al0.5CoCrFeNi``, ``Al0.5 Co1 Cr1 Fe1 Ni1`` and ``CoCrFeNiAl0.5`` share one group.
    Rows that do not parse get the key ``"?<their text>"`` (a group of their own)."""
    source = source or detect_composition_source(df)
    keys = []
    for row in df[source.columns].to_dict("records"):
        try:
            keys.append(_composition_key(parse_row_composition(row, source)))
        except ValueError:
            keys.append("?" + repr(tuple(row.values())))
    return np.asarray(keys, dtype=object)


# ── dataset level (database) ───────────────────────────────────────────────────────────────


def composition_info(session: object, dataset_id: int) -> dict[str, object]:
    """What the Featurise dialog shows first: the detected source (or why none was found) and
    the candidates a user may pick instead (text columns, element-named numeric columns)."""
    from app.services.datasets import load_frame

    frame = load_frame(session, dataset_id)  # type: ignore[arg-type]
    detected: dict[str, object] | None
    problem = None
    try:
        detected = detect_composition_source(frame).to_dict()
    except CompositionError as exc:
        detected, problem = None, str(exc)
    text_columns = [
        str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
    ]  # fmt: skip
    return {
        "dataset_id": dataset_id,
        "detected": detected,
        "problem": problem,
        "text_columns": text_columns,
        "element_columns": _element_columns(frame),
        "descriptors": {
            name: {"unit": unit, "label": label} for name, (_, unit, label) in DESCRIPTORS.items()
        },
    }


def featurise_dataset(
    session: object,
    dataset_id: int,
    *,
    formula_column: str | None = None,
    element_columns: Sequence[str] | None = None,
    on_error: ErrorPolicy = "fail",
    overwrite: bool = False,
    name: str | None = None,
    dry_run: bool = False,
) -> tuple[object | None, dict[str, object]]:
    """Featurise a stored dataset into a new dataset version (``parent_id`` = the original).

    Returns (new dataset or None for ``dry_run``, report). The report lists every row that could
    not be featurised; with ``on_error="fail"`` (the default) such rows stop the action with a
    422 that lists them, ``drop`` leaves them out of the new version, ``keep`` keeps them with
    empty descriptors. The caller commits."""
    from app.services.datasets import create_dataset_from_frame, get_dataset, load_frame

    parent = get_dataset(session, dataset_id)  # type: ignore[arg-type]
    frame = load_frame(session, dataset_id)  # type: ignore[arg-type]
    source = resolve_source(frame, formula_column, element_columns)
    result = featurise(frame, source, overwrite=overwrite)
    report = result.summary(max_errors=200) | {"on_error": on_error}
    if dry_run:
        return None, report
    table = apply_error_policy(result, on_error)
    report["rows_written"] = len(table)
    new_name = (name or f"{parent.name} · featurised").strip()
    description = (
        f"{parent.name} featurised from {source.describe()} with hea-bench "
        f"{_hea_bench().__version__}: {len(result.fraction_columns)} element fractions + "
        f"{', '.join(result.descriptor_columns)}; {len(result.errors)} row(s) with errors "
        f"({on_error})."
    )
    dataset = create_dataset_from_frame(
        session,  # type: ignore[arg-type]
        table,
        new_name,
        filename=getattr(parent, "filename", None),
        description=description,
        parent_id=dataset_id,
    )
    return dataset, report
