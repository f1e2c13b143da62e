"""One router per resource; ``api_router`` collects them under /api."""

from fastapi import APIRouter

from app.api.routes import (
    alloys,
    datasets,
    design,
    discovery,
    exports,
    health,
    inspection,
    runs,
    symbolic,
)

api_router = APIRouter(prefix="/api")
for _module in (health, datasets, runs, inspection, symbolic, exports, alloys, discovery, design):
    api_router.include_router(_module.router)
