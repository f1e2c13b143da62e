from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from app.api.deps import IdPath, SessionDep, SettingsDep
from app.api.schemas import DatasetOut, DatasetPreviewOut, ErrorOut
from app.services import datasets as svc
from app.services.errors import PayloadTooLargeError

router = APIRouter(tags=["datasets"])
ERRORS = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    413: {"model": ErrorOut},
    422: {"model": ErrorOut},
}
CHUNK = 1024 * 1024


@router.post(
    "/datasets", response_model=DatasetOut, status_code=status.HTTP_201_CREATED, responses=ERRORS
)
def upload_dataset(
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV file with a header row")],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> DatasetOut:
    """Upload a CSV (multipart field ``file``). It is typed, validated and stored as Parquet."""
    limit = settings.max_upload_bytes
    chunks, size = [], 0
    while chunk := file.file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"The file is larger than the upload limit of {limit:,} bytes."
            )
        chunks.append(chunk)
    ds = svc.ingest_csv(
        session,
        b"".join(chunks),
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
