"""Small number helpers shared by the services (kept import-light: the formula subprocess
loads this module too)."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(v: Any) -> float | None:
    """``v`` as a float when it is a finite number, else None (JSON has no NaN or ∞)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
