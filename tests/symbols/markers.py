"""Find marked source lines (`/* LINE:name */`) in the test guests' sources."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parents[1] / "guests"
_MARKER = re.compile(r"/\*\s*LINE:([A-Za-z0-9_]+)\b[^*]*\*/")


@cache
def markers(source: str | Path) -> dict[str, int]:
    """marker name -> 1-based line number, for one source file (name or path)."""
    path = Path(source)
    if not path.is_absolute():
        path = GUEST_DIR / path
    found: dict[str, int] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        for match in _MARKER.finditer(text):
            if match.group(1) in found:
                raise ValueError(f"marker LINE:{match.group(1)} appears twice in {path}")
            found[match.group(1)] = number
    return found


def marker_line(source: str | Path, marker: str) -> int:
    """The line that carries `/* LINE:marker */` in `source` (KeyError if none)."""
    table = markers(source)
    if marker not in table:
        raise KeyError(f"no /* LINE:{marker} */ in {source}")
    return table[marker]
