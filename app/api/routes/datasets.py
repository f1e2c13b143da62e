from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile, status
from starlette.datastructures import UploadFile as StarletteUploadFile

from app.api.deps import IdPath, SessionDep, SettingsDep
from app.api.schemas import (
    DatasetOut,
    DatasetPreviewOut,
    ErrorOut,
    Name,
    RowCheckIn,
    RowCheckOut,
)
from app.services import datasets as svc
from app.services.errors import InvalidInputError, PayloadTooLargeError

router = APIRouter(tags=["datasets"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    413: {"model": ErrorOut},
    422: {"model": ErrorOut},
}
CHUNK = 1024 * 1024
UPLOAD_FIELDS = ("file", "name")


async def one_file_part(request: Request) -> None:
    """An upload is exactly one file part ``file`` and at most one ``name``: a second file (which
    would be dropped silently), a repeated or unknown field is a 422. The form is the one FastAPI
    parsed for the route (Starlette keeps it on the request)."""
    form = await request.form()
    fields = [key for key, _ in form.multi_items()]
    files = [key for key, value in form.multi_items() if isinstance(value, StarletteUploadFile)]
    if len(files) > 1:
        raise InvalidInputError(
            f"The upload has {len(files)} file parts ({', '.join(repr(f) for f in files)}); send "
            "exactly one CSV file in the field 'file'."
        )
    unknown = sorted(set(fields) - set(UPLOAD_FIELDS))
    if unknown:
        raise InvalidInputError(
            f"Unknown form field(s) {unknown}; an upload has the fields 'file' (the CSV) and "
            "optionally 'name'."
        )
    repeated = sorted({key for key in fields if fields.count(key) > 1})
    if repeated:
        raise InvalidInputError(f"Form field(s) {repeated} given more than once; send each once.")
    if files and files[0] != "file":
        raise InvalidInputError(f"Send the CSV file in the field 'file', not {files[0]!r}.")


def read_upload(file: UploadFile, limit: int) -> bytes:
    """The uploaded file's bytes, read in chunks: 413 as soon as it passes ``limit``."""
    chunks, size = [], 0
    while chunk := file.file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"The file is larger than the upload limit of {limit:,} bytes."
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/datasets",
    response_model=DatasetOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
    dependencies=[Depends(one_file_part)],
)
def upload_dataset(
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV file with a header row")],
    name: Annotated[Name | None, Form()] = None,
) -> DatasetOut:
    """Upload a CSV (multipart field ``file``, exactly one; optional ``name``, printable text).
    It is typed, validated and stored as Parquet; the file's name is kept as a safe base name
    (no path, no control characters, at most 255 characters)."""
    ds = svc.ingest_csv(
        session,
        read_upload(file, settings.max_upload_bytes),
        file.filename,
        name,
        settings.max_dataset_rows,
        settings.max_dataset_columns,
    )
    session.commit()
    return DatasetOut.model_validate(ds)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: SessionDep) -> list[DatasetOut]:
    return [DatasetOut.model_validate(d) for d in svc.list_datasets(session)]


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, responses=ERRORS)
def get_dataset(dataset_id: IdPath, session: SessionDep) -> DatasetOut:
    return DatasetOut.model_validate(svc.get_dataset(session, dataset_id))


@router.get("/datasets/{dataset_id}/preview", response_model=DatasetPreviewOut, responses=ERRORS)
def preview_dataset(
    dataset_id: IdPath, session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> DatasetPreviewOut:
    return DatasetPreviewOut.model_validate(svc.preview(session, dataset_id, limit))


@router.post("/datasets/{dataset_id}/row-check", response_model=RowCheckOut, responses=ERRORS)
def check_rows(dataset_id: IdPath, body: RowCheckIn, session: SessionDep) -> RowCheckOut:
    """Rows a run with these columns would keep after dropping missing values, per column."""
    return RowCheckOut.model_validate(
        svc.row_check(session, dataset_id, body.target_columns, body.feature_columns, body.task)
    )


@router.delete("/datasets/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def delete_dataset(
    dataset_id: IdPath,
    session: SessionDep,
    cascade: Annotated[
        bool, Query(description="Also delete this dataset's finished runs.")
    ] = False,
) -> None:
    """Refused (409) while runs use the dataset, unless ``cascade=true`` (finished runs only)."""
    svc.delete_dataset(session, dataset_id, cascade=cascade)
    session.commit()
