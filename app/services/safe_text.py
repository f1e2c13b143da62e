"""Text users send that is stored and shown again: names and column names are refused when they
hold characters no name needs (and one database stores while the other refuses), upload file
names are reduced to a safe base name for display.

Refused in names: C0/C1 control characters (NUL, tab, newline, escape, DEL …), lone UTF-16
surrogates (neither database can store them), the line and paragraph separators U+2028/U+2029,
and the bidirectional embeddings, overrides and isolates U+202A–U+202E, U+2066–U+2069 (they make
a name display as something else).
"""

from __future__ import annotations

import re
import unicodedata

#: characters refused in names (see the module docstring)
FORBIDDEN_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
#: longest display file name kept (characters, extension included)
MAX_FILENAME_CHARS = 255
#: longest column name, in a CSV header and in a request naming a column
MAX_COLUMN_NAME_CHARS = 1000


def forbidden_character(text: str) -> str | None:
    """None when ``text`` is fine; otherwise a sentence naming the first forbidden character
    and its position (0-based), for a 422 message."""
    found = FORBIDDEN_CHARACTERS.search(text)
    if found is None:
        return None
    char = found.group()
    name = unicodedata.name(char, "")
    what = f"U+{ord(char):04X}" + (f" ({name.lower()})" if name else "")
    return (
        f"contains the control character {what} at position {found.start()}; only printable "
        "text is allowed"
    )


def safe_filename(raw: str | None) -> str | None:
    """An uploaded file's name reduced to what is safe to store and show: the last path
    component (``/`` and ``\\`` both separate), forbidden characters removed, surrounding
    whitespace and dots stripped, at most :data:`MAX_FILENAME_CHARS` characters (the
    extension kept). None when nothing is left (``..``, an empty name)."""
    if raw is None:
        return None
    base = re.split(r"[/\\]", raw)[-1]
    base = FORBIDDEN_CHARACTERS.sub("", base).strip().strip(".").strip()
    if not base:
        return None
    if len(base) > MAX_FILENAME_CHARS:
        stem, dot, ext = base.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            base = stem[: MAX_FILENAME_CHARS - len(ext) - 1].rstrip() + "." + ext
        else:
            base = base[:MAX_FILENAME_CHARS]
    return base
