"""Ids that become file or directory names: one safe pattern, checked where they enter.

Run ids, video ids and study names end up as path components. A value such
as ``../../x``, an absolute path or a 300-character name would write outside
its folder or fail deep inside a run; these checks refuse it up front and
name the value.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["MAX_ID_LEN", "SAFE_ID", "check_id", "inside", "is_safe_id"]

# Letters, digits, '_', '.', '-'; not starting with '.' or '-' (hidden files,
# option-like names); short enough for every filesystem's 255-byte names
# with room for suffixes such as ``-dryrun`` or ``.npy.tmp``.
MAX_ID_LEN = 128
SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def is_safe_id(value) -> bool:
    """True when ``value`` can be used as one path component as it is."""
    return isinstance(value, str) and len(value) <= MAX_ID_LEN and SAFE_ID.fullmatch(value) is not None


def check_id(value, what: str = "id") -> str:
    """``value`` if it is a safe id, else ValueError naming it and the rule."""
    if not is_safe_id(value):
        shown = value if not isinstance(value, str) or len(value) <= 60 else value[:60] + "..."
        raise ValueError(
            f"{what} expected letters, digits, '_', '.', '-' (not starting with '.' or '-', at most {MAX_ID_LEN} "
            f"characters), received {shown!r}"
        )
    return value


def inside(root: str | Path, *parts: str) -> Path:
    """``root/parts...``, refused (ValueError) if it would resolve outside ``root``."""
    root_path = Path(root).resolve()
    path = root_path.joinpath(*parts).resolve()
    if path != root_path and root_path not in path.parents:
        raise ValueError(f"path {Path(root).joinpath(*parts)} leaves its folder {root}; refusing to write there")
    return path
