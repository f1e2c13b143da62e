"""Start-up chores: migrations, the demo dataset on first start."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import func, select

from app.db.models import Dataset
from app.db.session import Database
from app.services.datasets import ingest_csv

log = logging.getLogger("kanscope.startup")

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_data"
DEMO_FILE = DEMO_DIR / "Gorsse2018ML_Data_RawHV.csv"
DEMO_NAME = "HEA hardness (Gorsse 2018)"


def migrate(url: str) -> None:
    from app.db.migrate import upgrade

    upgrade(url)


def load_demo_dataset(db: Database, max_rows: int = 1_000_000, max_columns: int = 2_000) -> bool:
    """Load the demo HEA dataset when the database holds no dataset yet (first start)."""
    if not DEMO_FILE.exists():
        log.warning("demo dataset %s not found; skipped", DEMO_FILE)
        return False
    with db.write() as s:
        if (s.scalar(select(func.count()).select_from(Dataset)) or 0) > 0:
            return False
        ds = ingest_csv(s, DEMO_FILE.read_bytes(), DEMO_FILE.name, DEMO_NAME, max_rows, max_columns)
        ds.description = (
            "Vickers hardness of high-entropy alloys with composition fractions and descriptors; "
            "Gorsse et al. 2018 (see app/demo_data/PROVENANCE_gorsse2018.md)."
        )
    log.info("loaded demo dataset %r", DEMO_NAME)
    return True
