"""Datasets: CSV ingest (typed with pandas, stored as Parquet bytes), stats, preview, delete."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, undefer

from app.db.models import FINISHED_STATUSES, Dataset, Run
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.services.numbers import finite_or_none

MAX_NAME = 200


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
    return type_frame(df)


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
    df = parse_csv(raw, max_rows, max_columns)
    default = (filename or "dataset").rsplit("/", 1)[-1].removesuffix(".csv")
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
