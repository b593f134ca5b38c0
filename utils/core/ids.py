"""Ids that become file or directory names: one safe pattern, checked where they enter.

Run ids, video ids and study names end up as path components. A value such
as ``../../x``, an absolute path or a 300-character name would write outside
its folder or fail deep inside a run; these checks refuse it up front and
name the value. Every written path can also be checked to stay under its root.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["MAX_ID_LEN", "SAFE_ID", "check_id", "check_under", "id_problem", "is_safe_id", "safe_name", "slug"]

# Letters, digits, '_', '.', '-'; not starting with '.' or '-' (hidden files,
# "." and "..", option-like names); short enough that a temp name built on it
# (".<name>~<host>~<pid>~<hex>.tmp") stays under the 255-byte limit of common
# filesystems.
MAX_ID_LEN = 128
SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def id_problem(value, what: str = "id") -> str:
    """Why ``value`` cannot be used as one path component ("" when it can)."""
    if not isinstance(value, str):
        return f"{what} expected a string, received {type(value).__name__}"
    shown = value if len(value) <= 60 else f"{value[:40]}...({len(value)} characters)"
    if len(value) > MAX_ID_LEN:
        return f"{what} {shown!r} is too long for a file name (max {MAX_ID_LEN} characters)"
    if SAFE_ID.fullmatch(value):
        return ""
    return (
        f"{what} {shown!r} is not a safe file name: expected letters, digits, '_', '.', '-' "
        "(not starting with '.' or '-'; no path separators)"
    )


def is_safe_id(value) -> bool:
    """True when ``value`` can be used as one path component as it is."""
    return not id_problem(value)


def check_id(value, what: str = "id") -> str:
    """``value`` if it is a safe id, else ValueError saying why."""
    problem = id_problem(value, what)
    if problem:
        raise ValueError(problem)
    return value


def safe_name(value, what: str = "name") -> str:
    """The one check of every name that becomes a path component, a job name or a log file name.

    Run ids, study names, video ids, experiment, sweep and job names all pass
    here (:func:`check_id` is the same rule); returns ``value``.
    """
    return check_id(value, what)


def slug(text: str, fallback: str = "run") -> str:
    """``text`` made a safe name: runs of other characters become ``-``, cut to :data:`MAX_ID_LEN`.

    Raises:
        ValueError: nothing safe is left and ``fallback`` is empty.
    """
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.")[:MAX_ID_LEN].rstrip("-.") or fallback
    return check_id(out, f"name made from {text!r}")


def check_under(root: str | Path, path: str | Path) -> Path:
    """``path`` if it stays inside ``root`` once resolved, else ValueError naming both."""
    root_r, path_r = Path(root).resolve(), Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise ValueError(f"{path} resolves to {path_r}, outside {root_r}; refusing to write there")
    return Path(path)
