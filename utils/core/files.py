"""Atomic file writes: readers see the old file or the whole new one, never half of it.

Every file the suite writes (clips, manifests, run records, checkpoints,
tables) goes through here, so a job killed mid-write (SLURM time limit, OOM,
kill -9) leaves no truncated file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_save_npy", "atomic_write_bytes", "atomic_write_text"]


@contextlib.contextmanager
def _atomic_file(path: str | Path):
    """A binary file that appears under ``path`` only once it is whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # No fsync: rename is atomic against a killed process, which is the
        # failure that matters on a cluster; fsync per clip costs more than
        # the decoding on network filesystems (Lustre, NFS).
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        # BaseException too: a KeyboardInterrupt must not leave temp files behind.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    with _atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    with _atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)
