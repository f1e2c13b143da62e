"""Datasets: CSV ingest (typed with pandas, stored as Parquet bytes), stats, preview, delete."""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, undefer

from app.db.models import FINISHED_STATUSES, Dataset, Run
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.services.numbers import finite_or_none
from app.services.safe_text import MAX_COLUMN_NAME_CHARS, forbidden_character, safe_filename

MAX_NAME = 200
#: longest single CSV cell (characters); a longer one is refused, naming its row and column
MAX_CELL_CHARS = 10_000
#: rows named in a message about bad cells
ROWS_NAMED = 5
#: an infinite value written as text ("inf" and "Infinity" pandas reads as inf itself)
NON_FINITE_TEXT = re.compile(r"[+-]?(?:∞|inf|infinity)", re.IGNORECASE)
_SEPARATORS = "' \u00a0\u202f\u2009"  # apostrophe, space, no-break and thin spaces
#: thousands groups of exactly three digits: 1,000  1 000  1'000.5  1.000,5  1 000,5
GROUPED_NUMBER = re.compile(
    rf"[+-]?\d{{1,3}}(?:(?:[,{_SEPARATORS}]\d{{3}})+(?:\.\d+)?|(?:[.{_SEPARATORS}]\d{{3}})+,\d+)"
)
#: a decimal comma: 1,5
DECIMAL_COMMA_NUMBER = re.compile(r"[+-]?\d+,\d+")


def _clean_cell(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (pd.Timestamp,)):
        return v.isoformat()
    return v


def parse_csv(raw: bytes, max_rows: int, max_columns: int) -> pd.DataFrame:
    """Bytes of a CSV file → a typed DataFrame, or InvalidInputError saying what is wrong."""
    if not raw.strip():
        raise InvalidInputError("The file is empty. Upload a CSV file with a header row.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"The file is not UTF-8 text (byte {exc.start}). Save the CSV as UTF-8 and retry."
        ) from None
    if "\x00" in text:
        raise InvalidInputError("The file contains NUL bytes; it does not look like a CSV file.")
    sep = detect_separator(text)
    try:
        header = next(csv.reader(io.StringIO(text), delimiter=sep), [])
    except csv.Error as exc:
        raise InvalidInputError(f"Could not read the CSV header: {exc}") from None
    names = [str(c).strip() for c in header]
    if len(names) > max_columns:
        raise InvalidInputError(
            f"The file has {len(names)} columns; at most {max_columns} are allowed."
        )
    if not names:
        raise InvalidInputError("The file has no header row. Upload a CSV file with a header.")
    if any(not n for n in names):
        raise InvalidInputError("Every column needs a name in the header row; some are empty.")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInputError(f"Column names must be unique; repeated: {dupes}.")
    check_column_names(names)
    try:
        df = pd.read_csv(
            io.StringIO(text),
            header=0,
            names=names,
            sep=sep,
            decimal="," if sep == ";" else ".",
            nrows=max_rows + 1,
            low_memory=False,
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise InvalidInputError(f"The CSV could not be parsed: {exc}") from None
    if len(df) > max_rows:
        raise InvalidInputError(f"The file has more than {max_rows} rows, the limit.")
    if len(df) == 0:
        raise InvalidInputError("The file has a header but no data rows.")
    check_cell_sizes(df)
    check_numbers(df, decimal="," if sep == ";" else ".")
    return type_frame(df)


def check_column_names(names: list[str]) -> None:
    """Column names are referred to by name in run requests: printable text, bounded length."""
    for position, name in enumerate(names, start=1):
        if len(name) > MAX_COLUMN_NAME_CHARS:
            raise InvalidInputError(
                f"Column {position}'s name has {len(name):,} characters; at most "
                f"{MAX_COLUMN_NAME_CHARS:,} are allowed."
            )
        problem = forbidden_character(name)
        if problem:
            raise InvalidInputError(f"Column {position}'s name {problem}.")


def _rows_text(rows: list[int]) -> str:
    """'data rows 2, 7 and 9' (1-based: row 1 is the first row under the header)."""
    shown = [str(r + 1) for r in rows[:ROWS_NAMED]]
    listed = ", ".join(shown[:-1]) + f" and {shown[-1]}" if len(shown) > 1 else shown[0]
    more = f" (and {len(rows) - ROWS_NAMED:,} more)" if len(rows) > ROWS_NAMED else ""
    return f"data row{'s' if len(rows) > 1 else ''} {listed}{more}"


def check_cell_sizes(df: pd.DataFrame) -> None:
    """A cell longer than MAX_CELL_CHARS is refused (it would be stored and previewed)."""
    for name in df.columns:
        col = df[name]
        if not (col.dtype == object or pd.api.types.is_string_dtype(col.dtype)):
            continue
        lengths = col.astype("string").str.len().fillna(0).to_numpy()
        too_long = np.flatnonzero(lengths > MAX_CELL_CHARS)
        if len(too_long):
            row = int(too_long[0])
            raise InvalidInputError(
                f"The cell in column {str(name)!r}, {_rows_text([row])} (counting from 1 "
                f"under the header), has "
                f"{int(lengths[row]):,} characters; a cell holds at most {MAX_CELL_CHARS:,}. "
                "Shorten it or leave that column out."
            )


def check_numbers(df: pd.DataFrame, decimal: str = ".") -> None:
    """Numbers that would silently turn a numeric column into text or missing values are
    refused (422) naming the column and rows: infinite values (inf, -inf, Infinity, ∞, a value
    beyond ±1.8e308) and numbers with thousands separators or a decimal comma (1,000  1 000
    1.000,5; a decimal comma is the convention of a ';'-separated file, ``decimal=","``), in a
    column whose other cells are all numbers. A column with other text in it is categorical, as
    before."""
    problems = [p for p in (_number_problem(str(n), df[n], decimal) for n in df.columns) if p]
    if problems:
        more = f" (And {len(problems) - 3} more columns.)" if len(problems) > 3 else ""
        raise InvalidInputError(
            " ".join(problems[:3]) + more + " Data rows count from 1, the row under the header."
        )


def _number_problem(name: str, col: pd.Series, decimal: str) -> str | None:
    if pd.api.types.is_float_dtype(col.dtype):
        values = col.to_numpy(dtype=float, na_value=np.nan)
        infinite_rows = np.flatnonzero(np.isinf(values)).tolist()
        if not infinite_rows:
            return None
        return _non_finite_message(name, infinite_rows, str(values[infinite_rows[0]]))
    if not (col.dtype == object or pd.api.types.is_string_dtype(col.dtype)):
        return None
    text = col.astype("string").str.strip()
    present = (text.notna() & (text != "")).to_numpy(dtype=bool)
    readable = text.str.replace(",", ".", regex=False) if decimal == "," else text
    numbers = pd.to_numeric(readable, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    cells = text.fillna("").to_numpy(dtype=object)
    infinite_text: list[int] = []
    grouped: list[int] = []
    decimal_comma: list[int] = []
    for row in np.flatnonzero(present & np.isnan(numbers)).tolist():  # cells that are no number
        cell = cells[row]
        if NON_FINITE_TEXT.fullmatch(cell):
            infinite_text.append(row)
        elif GROUPED_NUMBER.fullmatch(cell):
            grouped.append(row)
        elif DECIMAL_COMMA_NUMBER.fullmatch(cell):
            decimal_comma.append(row)
        else:
            return None  # other text: a categorical column
    infinite = sorted(infinite_text + np.flatnonzero(present & np.isinf(numbers)).tolist())
    if infinite:
        return _non_finite_message(name, infinite, str(cells[infinite[0]]))
    localised = sorted(grouped + decimal_comma)
    # a column of decimal commas alone ("3,4") may be text (pairs, codes); with plain numbers
    # or thousands groups beside them they are numbers
    if localised and (grouped or (present & np.isfinite(numbers)).any()):
        first = str(cells[localised[0]])
        how = (
            "with ',' as the decimal point and no thousands separators (1000,5, not 1.000,5)"
            if decimal == ","
            else "with '.' as the decimal point and no separators (1000.5, not 1,000.5 or 1 000,5)"
        )
        return (
            f"Column {name!r} holds numbers written with thousands separators or a decimal "
            f"comma, in {_rows_text(localised)} (first: {first!r}). Write plain numbers {how}."
        )
    return None


def _non_finite_message(name: str, rows: list[int], first: str) -> str:
    return (
        f"Column {name!r} holds values that are not finite numbers (inf, -inf, Infinity, ∞ or "
        f"beyond ±1.8e308) in {_rows_text(rows)} (first: {first!r}). Replace them with finite "
        "numbers, or leave those cells empty to mark them missing."
    )


def detect_separator(text: str) -> str:
    """Comma, unless the header row has no comma but splits on ';', tab or '|'."""
    first = text.split("\n", 1)[0]
    if "," in first:
        return ","
    counts = {sep: first.count(sep) for sep in (";", "\t", "|")}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] > 0 else ","


def type_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric-looking text columns become numbers; other text stays categorical strings."""
    out = {}
    for name in df.columns:
        col = df[name]
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            stripped = col.astype("string").str.strip()
            as_num = pd.to_numeric(stripped, errors="coerce")
            if as_num.notna().sum() == stripped.replace("", pd.NA).notna().sum():
                col = as_num.astype("float64")
            else:
                col = stripped.astype(object).where(stripped.notna(), None)
        elif pd.api.types.is_integer_dtype(col.dtype) or pd.api.types.is_float_dtype(col.dtype):
            col = col.astype("float64") if pd.api.types.is_float_dtype(col.dtype) else col
        out[name] = col
    return pd.DataFrame(out)


def is_numeric(series: pd.Series) -> bool:
    return bool(
        pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series)
    ) or pd.api.types.is_bool_dtype(series.dtype)


def column_stats(df: pd.DataFrame) -> list[dict[str, Any]]:
    stats = []
    for name in df.columns:
        col = df[name]
        numeric = is_numeric(col)
        info: dict[str, Any] = {
            "name": str(name),
            "dtype": str(col.dtype),
            "kind": "numeric" if numeric else "categorical",
            "n_missing": int(col.isna().sum()),
            "n_unique": int(col.nunique(dropna=True)),
        }
        if numeric:
            values = pd.to_numeric(col, errors="coerce").astype("float64")
            finite = values[np.isfinite(values)]
            if len(finite):
                info.update(
                    mean=finite_or_none(finite.mean()),
                    std=finite_or_none(finite.std(ddof=0)),
                    min=finite_or_none(finite.min()),
                    max=finite_or_none(finite.max()),
                )
        else:
            top = col.dropna().astype(str).value_counts().head(10)
            info["top_values"] = [str(v) for v in top.index]
        stats.append(info)
    return stats


def frame_to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def create_dataset_from_frame(
    session: Session,
    df: pd.DataFrame,
    name: str,
    filename: str | None = None,
    description: str | None = None,
    parent_id: int | None = None,
) -> Dataset:
    """Store a typed DataFrame as a new dataset (caller commits). Used by uploads and alloys."""
    name = (name or "").strip()[:MAX_NAME] or "dataset"
    df = df.reset_index(drop=True)
    df.columns = [str(c) for c in df.columns]
    content = frame_to_parquet(df)
    ds = Dataset(
        name=name,
        filename=filename,
        description=description,
        parent_id=parent_id,
        n_rows=int(len(df)),
        n_columns=int(df.shape[1]),
        size_bytes=len(content),
        columns=column_stats(df),
        content=content,
    )
    session.add(ds)
    session.flush()
    return ds


def ingest_csv(
    session: Session,
    raw: bytes,
    filename: str | None,
    name: str | None,
    max_rows: int,
    max_columns: int,
) -> Dataset:
    """A CSV upload → a stored dataset. The file's name is kept only as a safe base name (no
    path, no control characters, ≤ 255 characters); the default dataset name derives from it."""
    df = parse_csv(raw, max_rows, max_columns)
    filename = safe_filename(filename)
    default = (filename or "dataset").removesuffix(".csv")
    return create_dataset_from_frame(session, df, name or default, filename=filename)


def get_dataset(session: Session, dataset_id: int, with_content: bool = False) -> Dataset:
    stmt = select(Dataset).where(Dataset.id == dataset_id)
    if with_content:
        stmt = stmt.options(undefer(Dataset.content))
    ds = session.scalars(stmt).one_or_none()
    if ds is None:
        raise NotFoundError(f"Dataset {dataset_id} does not exist.")
    return ds


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.id)))


def load_frame(session: Session, dataset_id: int) -> pd.DataFrame:
    ds = get_dataset(session, dataset_id, with_content=True)
    return pd.read_parquet(io.BytesIO(ds.content), engine="pyarrow")


def frame_from_bytes(content: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(content), engine="pyarrow")


def preview(session: Session, dataset_id: int, limit: int = 20) -> dict[str, Any]:
    ds = get_dataset(session, dataset_id, with_content=True)
    df = frame_from_bytes(ds.content).head(limit)
    rows = [[_clean_cell(v) for v in row] for row in df.itertuples(index=False, name=None)]
    return {
        "id": ds.id,
        "columns": [str(c) for c in df.columns],
        "rows": rows,
        "n_rows": ds.n_rows,
        "stats": ds.columns,
    }


def delete_dataset(session: Session, dataset_id: int, cascade: bool = False) -> int:
    """Delete a dataset. Rule: refused while any run uses it, unless ``cascade`` — then its
    finished runs are deleted with it; queued or running runs always block. Returns runs deleted.
    """
    ds = get_dataset(session, dataset_id)
    n_runs = session.scalar(select(func.count()).where(Run.dataset_id == ds.id)) or 0
    active = (
        session.scalar(
            select(func.count()).where(
                Run.dataset_id == ds.id, Run.status.not_in(FINISHED_STATUSES)
            )
        )
        or 0
    )
    if active:
        raise ConflictError(
            f"Dataset {dataset_id} is used by {active} queued or running run(s). "
            "Cancel them (POST /api/runs/{id}/cancel) and wait for them to stop first."
        )
    if n_runs and not cascade:
        raise ConflictError(
            f"Dataset {dataset_id} is used by {n_runs} run(s). Delete those runs first, or "
            "delete with ?cascade=true to remove the dataset together with its runs."
        )
    if n_runs:
        for run in session.scalars(select(Run).where(Run.dataset_id == ds.id)):
            session.delete(run)
        session.flush()
    session.delete(ds)
    session.flush()
    return int(n_runs)


def row_check(
    session: Session,
    dataset_id: int,
    target_columns: list[str],
    feature_columns: list[str],
    task: str = "regression",
) -> dict[str, Any]:
    """How many rows a run with these columns would train on: rows with a missing (or, for
    numeric roles, non-numeric) value in any chosen column are dropped, as training does.
    Per column: rows it alone misses, and the complete rows if it were left out."""
    frame = load_frame(session, dataset_id)
    chosen = list(dict.fromkeys([*target_columns, *feature_columns]))
    unknown = [c for c in chosen if c not in frame.columns]
    if unknown:
        raise InvalidInputError(
            f"Column(s) {unknown[:5]} are not in dataset {dataset_id}; its columns are "
            f"{[str(c) for c in frame.columns[:20]]}."
        )
    usable = np.ones((len(frame), len(chosen)), dtype=bool)  # (rows, chosen columns)
    for k, name in enumerate(chosen):
        if task == "classification" and name in target_columns:
            usable[:, k] = frame[name].notna().to_numpy()
        else:
            values = pd.to_numeric(frame[name], errors="coerce").astype("float64").to_numpy()
            usable[:, k] = np.isfinite(values)
    complete = usable.all(axis=1)
    columns = []
    for k, name in enumerate(chosen):
        others = np.delete(usable, k, axis=1).all(axis=1)
        columns.append(
            {
                "name": name,
                "role": "target" if name in target_columns else "feature",
                "n_missing": int((~usable[:, k]).sum()),
                "n_complete_without": int(others.sum()),
            }
        )
    return {
        "n_rows": len(frame),
        "n_complete": int(complete.sum()),
        "n_dropped": int((~complete).sum()),
        "columns": columns,
    }
