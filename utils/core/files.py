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

__all__ = ["atomic_save_npy", "atomic_write_bytes", "atomic_write_text", "fsync_files"]


@contextlib.contextmanager
def _atomic_file(path: str | Path, fsync: bool = False):
    """A binary file that appears under ``path`` only once it is whole (on disk too, with ``fsync``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # No fsync: rename is atomic against a killed process, which is the
        # failure that matters on a cluster; fsync per clip costs more than
        # the decoding on network filesystems (Lustre, NFS).
        # Checkpoints ask for fsync (once per epoch): a node that loses power
        # must not come back with a renamed but empty file.
        with os.fdopen(fd, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException too: a KeyboardInterrupt must not leave temp files behind.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    with _atomic_file(path, fsync) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def fsync_files(paths) -> None:
    """Flush files another library wrote (TensorFlow checkpoints) to disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    with _atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)
