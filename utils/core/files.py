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
    "HOST",
    "FolderError",
    "atomic_save_npy",
    "atomic_save_npz",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_sha256",
    "fsync_files",
    "executable_mode",
    "make_dirs",
    "pid_alive",
    "remove_stale_temps",
]

HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
# .<name>~<host>~<pid>~<random>.tmp
_TEMP = re.compile(r"\.(?P<name>.+)~(?P<host>[A-Za-z0-9.-]+)~(?P<pid>\d+)~[0-9a-f]+\.tmp")


class FolderError(ValueError):
    """A folder that cannot be made or written (a regular file in its path, no permission); names both."""


def make_dirs(path: str | Path, what: str = "writing") -> Path:
    """``path`` made (with its parents) if missing, or one clear error saying why it cannot be.

    Every folder the suite writes into is made here (atomic writes included), so an
    output path under a regular file (``--out FILE/sub``) or in a read-only place is
    one line naming the option's value, never a ``NotADirectoryError`` traceback.

    Raises:
        FolderError: ``what`` and ``path``, and the file in the way or the OS's reason.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a regular file, not a folder" if blocker is not None else (e.strerror or str(e))
        raise FolderError(f"{what}: cannot make the folder {path} ({why}); pass a folder you can write to "
                          "(it is made if missing)") from None  # fmt: skip
    return path


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    # O_CREAT|O_EXCL with mode 0o666: the kernel applies the umask, so the
    # file gets the mode any normal file gets (mkstemp forces 0600, which
    # locks teammates out of a shared store).
    while True:
        tmp = folder / f".{name}~{HOST}~{os.getpid()}~{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def _atomic_file(path: str | Path, fsync: bool = False):
    """A binary file that appears under ``path`` only once it is whole (on disk too, with ``fsync``)."""
    path = Path(path)
    make_dirs(path.parent, f"writing {path}")
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


def executable_mode() -> int:
    """The mode of a new executable file under this process's umask (0755 under 022, 0750 under 027): a script
    is as readable by the group and the world as any other file the suite writes, never more."""
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return 0o777 & ~mask


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


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (someone else's counts as alive)."""
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
            if m and m["host"] == HOST:
                stale = not pid_alive(int(m["pid"]))
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
