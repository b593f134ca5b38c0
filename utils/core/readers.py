"""The one rule for reading a file the suite wrote: a damaged one is named, with what it should hold and what to do.

Stores (``store.json``, ``labels.txt``, ``manifest.csv``, clips, keypoints),
run directories (``config.json``, ``metrics.json``, ``scores_<split>.npz``,
checkpoints), exports (``contract.json``) and experiment files are all read
through here, so a truncated, emptied or foreign file never ends in a bare
``JSONDecodeError``, ``UnicodeDecodeError``, ``KeyError`` or numpy's advice
to unpickle it: :class:`DamagedFile` names the file, what was expected, what
was found, and the fix. Advice to delete a file is given only for a file
inside the folder the suite made it in (:func:`delete_advice`): never for a
path a damaged manifest points elsewhere, such as ``../../etc/passwd``.

Array files are checked before they are read (:func:`read_npz`): a header
that claims more data than the file holds is refused, so a damaged or
hostile header cannot make numpy allocate gigabytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["DamagedFile", "check_typed", "delete_advice", "inside", "npy_header", "read_csv", "read_json", "read_npz",
           "read_text", "read_typed"]  # fmt: skip


class DamagedFile(ValueError):
    """A file the suite wrote that does not hold what it should (names it, what was expected, what to do)."""

    def __init__(self, path: str | Path, expected: str, received: str, todo: str):
        self.path = Path(path)
        super().__init__(f"{path}: expected {expected}, received {received}; {todo}")


def inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` lies inside ``root``, lexically (``..`` resolved, symlinks not followed: a store's
    ``clips/`` may be a link to another disk)."""
    root_n, path_n = os.path.normpath(os.path.abspath(root)), os.path.normpath(os.path.abspath(path))
    return path_n != root_n and path_n.startswith(root_n.rstrip(os.sep) + os.sep)


def delete_advice(path: str | Path, root: str | Path, rerun: str) -> str:
    """``"delete it and <rerun>"`` for a file inside the suite's folder ``root``; for any other path, advice that
    touches nothing outside (the folder's index that points there is what is wrong)."""
    if inside(root, path):
        return f"delete it and {rerun}"
    return f"it lies outside {root}, so leave it alone: the file that points there is damaged; {rerun}"


def _received(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def read_text(path: str | Path, *, expected: str, todo: str) -> str:
    """A UTF-8 text file (a binary or foreign file is named, not a bare codec error).

    Raises:
        FileNotFoundError: no such file.
        DamagedFile: not UTF-8 text, or unreadable.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError) as e:
        raise FileNotFoundError(f"{path} not found ({'a folder' if isinstance(e, IsADirectoryError) else 'no such file'}); "
                                f"expected {expected}") from None  # fmt: skip
    except OSError as e:
        raise DamagedFile(path, expected, f"an unreadable file ({_received(e)})", todo) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DamagedFile(path, f"{expected} (UTF-8 text)", f"bytes that are not UTF-8 text (at byte {e.start})", todo) from None


def read_json(path: str | Path, *, expected: str, todo: str, kind: type = dict):
    """A JSON file whose top level is a ``kind`` (an object by default).

    Raises:
        FileNotFoundError: no such file.
        DamagedFile: not UTF-8, not JSON (an emptied or cut file), or another top-level type.
    """
    text = read_text(path, expected=expected, todo=todo)
    try:
        data = json.loads(text)
    except ValueError as e:
        got = "an empty file" if not text.strip() else f"text that is not JSON ({_received(e)})"
        raise DamagedFile(path, expected, got, todo) from None
    if not isinstance(data, kind):
        raise DamagedFile(path, expected, f"a JSON {type(data).__name__}", todo)
    return data


def check_typed(path: str | Path, hint, data, *, expected: str, todo: str, allow_nan: bool = False):
    """``data`` read from ``path``, checked against the type hints of ``hint`` (a dataclass or TypedDict) by the
    suite's one coercion and returned typed; keys the type does not know are kept (files from newer versions).

    Raises:
        DamagedFile: a key missing or of the wrong type, or a value out of range (named).
    """
    from utils.core.config import coerce

    try:
        return coerce(hint, data, str(path), allow_nan=allow_nan, keep_unknown=True)
    except (TypeError, KeyError, ValueError) as e:
        why = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise DamagedFile(path, expected, why.removeprefix(f"{path}: "), todo) from None


def read_typed(path: str | Path, hint, *, expected: str, todo: str, allow_nan: bool = False):
    """A JSON object read and checked against ``hint`` (:func:`check_typed`).

    Raises:
        FileNotFoundError: no such file.
        DamagedFile: unreadable, or a key missing or of the wrong type (named).
    """
    data = read_json(path, expected=expected, todo=todo)
    return check_typed(path, hint, data, expected=expected, todo=todo, allow_nan=allow_nan)


def read_csv(path: str | Path, *, columns, expected: str, todo: str) -> list[dict]:
    """The rows of a CSV file with a header holding (at least) ``columns``.

    Raises:
        FileNotFoundError: no such file.
        DamagedFile: not UTF-8, not CSV, or a column missing.
    """
    text = read_text(path, expected=expected, todo=todo)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise DamagedFile(path, f"{expected} with the columns {list(columns)}",
                              f"a header without {missing}" if reader.fieldnames else "no header", todo)  # fmt: skip
        return list(reader)
    except csv.Error as e:
        raise DamagedFile(path, expected, f"text that is not CSV ({_received(e)})", todo) from None


def npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of the ``.npy`` stream ``f`` (positioned at its start), read from its header only."""
    from numpy.lib import format as npformat

    version = npformat.read_magic(f)
    if version == (1, 0):
        shape, _order, dtype = npformat.read_array_header_1_0(f)
    else:
        shape, _order, dtype = npformat.read_array_header_2_0(f)
    return shape, dtype


def read_npz(path: str | Path, keys, *, expected: str, todo: str, finite: tuple[str, ...] = ()) -> dict:
    """The arrays ``keys`` of an ``.npz`` file, each checked against its header before it is read.

    A member whose header claims more bytes than the member holds (a damaged or
    hostile header: "10^9 frames") is refused before numpy allocates anything;
    no array is unpickled (``allow_pickle=False``).

    Args:
        finite: keys whose values must all be finite numbers (scores, not NaN).

    Raises:
        FileNotFoundError: no such file.
        DamagedFile: not an npz (empty, cut, random bytes), a key missing, a header larger than the data, or
            non-finite values where ``finite`` asks for numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected {expected}")
    want = f"{expected} (a NumPy .npz holding {', '.join(keys)})"
    try:
        with zipfile.ZipFile(path) as z:
            members = {Path(n).stem: z.getinfo(n) for n in z.namelist() if n.endswith(".npy")}
            missing = [k for k in keys if k not in members]
            if missing:
                raise DamagedFile(path, want, f"an npz without {missing} (it holds {sorted(members)})", todo)
            for key in keys:
                info = members[key]
                with z.open(info) as f:
                    shape, dtype = npy_header(f)
                claimed = math.prod(shape) * dtype.itemsize
                if dtype.hasobject or claimed > info.file_size:
                    got = "Python objects" if dtype.hasobject else \
                        f"a header for {shape} {dtype} ({claimed:,} bytes) in a member of {info.file_size:,} bytes"  # fmt: skip
                    raise DamagedFile(path, want, f"'{key}': {got}", todo)
        with np.load(path, allow_pickle=False) as data:
            out = {key: data[key] for key in keys}
    except DamagedFile:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError) as e:
        got = "an empty file" if path.stat().st_size == 0 else f"a file numpy cannot read as one ({_received(e)})"
        raise DamagedFile(path, want, got, todo) from None
    for key in finite:
        values = out[key]
        if values.dtype.kind not in "fiu":
            raise DamagedFile(path, f"numbers in '{key}'", f"{values.dtype} values", todo)
        bad = int(values.size - np.isfinite(values).sum())
        if bad:
            raise DamagedFile(path, f"finite numbers in '{key}'", f"{bad} of {values.size} values NaN or infinite", todo)
    return out
