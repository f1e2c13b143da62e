"""Checks for values that come from the browser (callback inputs and states, stores, URLs).

Everything a Dash callback receives was sent by the client and can be anything JSON can hold:
callbacks pass ids and choices through these before using them, and :mod:`api_client` checks
again before building a path. Each returns the clean value, or ``None`` when it is not valid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Any, TypeVar

#: the API's id range (``app.api.deps.MAX_ID``)
MAX_ID = 2**63 - 1
MAX_INDEX = 1_000_000
_DIGITS = re.compile(r"[0-9]{1,19}")  # used with fullmatch (no "$": it allows a final \n)
_LEADERBOARD_ID = re.compile(r"[0-9a-f]{1,32}")

T = TypeVar("T")


def _as_int(value: Any) -> int | None:
    """An int, or a string of ASCII digits (URL parts); never a bool, float or anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def positive_int(value: Any) -> int | None:
    """A database id: 1 ≤ value ≤ 2**63 − 1."""
    number = _as_int(value)
    return number if number is not None and 1 <= number <= MAX_ID else None


def index_int(value: Any) -> int | None:
    """A layer or edge index: 0 ≤ value ≤ 1 000 000."""
    number = _as_int(value)
    return number if number is not None and 0 <= number <= MAX_INDEX else None


def positive_ints(values: Any, limit: int) -> list[int] | None:
    """A list of at most ``limit`` ids, or ``None`` if it is not a list or any item is bad."""
    if not isinstance(values, list) or len(values) > limit:
        return None
    ids = [positive_int(v) for v in values]
    return None if any(i is None for i in ids) else [i for i in ids if i is not None]


def valid_edge(value: Any) -> tuple[int, int, int] | None:
    """``[layer, i, j]`` of a network edge."""
    if not isinstance(value, list | tuple) or len(value) != 3:
        return None
    layer, i, j = (index_int(v) for v in value)
    if layer is None or i is None or j is None:
        return None
    return layer, i, j


def leaderboard_id(value: Any) -> str | None:
    """A leaderboard id: 1–32 lowercase hex digits."""
    return value if isinstance(value, str) and _LEADERBOARD_ID.fullmatch(value) else None


def one_of(value: Any, allowed: Collection[T]) -> T | None:
    """``value`` if it is one of ``allowed`` (an enum's values), else ``None``."""
    for option in allowed:
        if type(option) is type(value) and option == value:
            return option
    return None


def finite_number(value: Any) -> float | None:
    """An int or float that is finite (thresholds from number inputs)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
