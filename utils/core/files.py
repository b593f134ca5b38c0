"""Atomic file writes: readers see the old file or the whole new one, never half of it.

Every file the suite writes (clips, manifests, run records, checkpoints,
tables) goes through here, so a job killed mid-write (SLURM time limit, OOM,
kill -9) leaves no truncated file behind. What a killed job does leave is
its temporary file: the name says which host and process wrote it, so
:func:`remove_stale_temps` can delete a dead process's leftovers at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import time
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_save_npy",
    "atomic_save_npz",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_sha256",
    "fsync_files",
    "remove_stale_temps",
]

_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
# .<name>~<host>~<pid>~<random>.tmp
_TEMP = re.compile(r"\.(?P<name>.+)~(?P<host>[A-Za-z0-9.-]+)~(?P<pid>\d+)~[0-9a-f]+\.tmp")


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    # O_CREAT|O_EXCL with mode 0o666: the kernel applies the umask, so the
    # file gets the mode any normal file gets (mkstemp forces 0600, which
    # locks teammates out of a shared store).
    while True:
        tmp = folder / f".{name}~{_HOST}~{os.getpid()}~{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def _atomic_file(path: str | Path, fsync: bool = False):
    """A binary file that appears under ``path`` only once it is whole (on disk too, with ``fsync``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
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


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Several arrays in one uncompressed ``.npz``, written atomically."""
    with _atomic_file(path) as f:
        np.savez(f, **arrays)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


def remove_stale_temps(folder: str | Path, older_than_s: float = 600.0) -> int:
    """Delete the temporary files killed writers left in ``folder``; return how many.

    A temp file written on this host by a process that no longer runs is
    deleted at once. Another host's (a shard elsewhere on a shared
    filesystem may be writing it now) only once it is ``older_than_s``
    old: a clip takes milliseconds to write, so ten minutes is safely
    stale. A reused pid keeps a dead writer's file until the age rule.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed, now = 0, time.time()
    for tmp in folder.glob(".*.tmp"):
        m = _TEMP.fullmatch(tmp.name)
        try:
            if m and m["host"] == _HOST:
                stale = not _pid_alive(int(m["pid"]))
            else:
                stale = now - tmp.stat().st_mtime > older_than_s
            if stale:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # another shard cleaned it first
    return removed


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes (read in 1 MiB chunks: a 1080p clip is a few MB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
