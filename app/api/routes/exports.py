from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Response, UploadFile

from app.api.deps import IdPath, SessionDep, SettingsDep
from app.api.routes.datasets import one_file_part, read_upload
from app.api.schemas import ErrorOut
from app.services import exports as svc
from app.services.predict_rows import predict_rows_csv

router = APIRouter(tags=["exports"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.get(
    "/runs/{run_id}/export/{kind}",
    responses=ERRORS
    | {
        200: {
            "content": {
                "text/x-tex": {},
                "text/x-python": {},
                "text/plain": {},
                "application/octet-stream": {},
                "text/csv": {},
            }
        }
    },
)
def export(
    run_id: IdPath,
    kind: Literal["latex", "python", "sympy", "model", "predictions"],
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """Download: formula as LaTeX / Python (NumPy) / sympy srepr, the model file
    (safetensors + JSON, never pickle), or predictions as CSV."""
    return download(svc.export(session, run_id, kind, settings.formula_timeout_s))


@router.post(
    "/runs/{run_id}/predict",
    responses=ERRORS | {413: {"model": ErrorOut}, 200: {"content": {"text/csv": {}}}},
    dependencies=[Depends(one_file_part)],
)
def predict_new_rows(
    run_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV with the run's feature columns")],
) -> Response:
    """Predict rows the run has never seen: upload a CSV (multipart field ``file``) with the
    run's feature columns (others are kept); the answer is that CSV with the prediction
    appended (an ensemble's mean and interval too) and a note per row: missing features (no
    prediction) or features outside the training range (extrapolation). Nothing is stored."""
    raw = read_upload(file, settings.max_upload_bytes)
    return download(
        predict_rows_csv(
            session, run_id, raw, settings.max_dataset_rows, settings.max_dataset_columns
        )
    )


def download(f: svc.ExportFile) -> Response:
    """A file to save: its bytes, type and name (``Content-Disposition: attachment``)."""
    return Response(
        f.content,
        media_type=f.media_type,
        headers={"Content-Disposition": f'attachment; filename="{f.filename}"'},
    )
