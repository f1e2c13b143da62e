from typing import Any, Literal

from fastapi import APIRouter, Response

from app.api.deps import IdPath, SessionDep, SettingsDep
from app.api.schemas import ErrorOut
from app.services import exports as svc

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
    f = svc.export(session, run_id, kind, settings.formula_timeout_s)
    return Response(
        f.content,
        media_type=f.media_type,
        headers={"Content-Disposition": f'attachment; filename="{f.filename}"'},
    )
