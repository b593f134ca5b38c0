"""Is a run still alive? A lock that the kernel drops when its holder dies.

A run's ``metrics.json`` says ``running`` from its first epoch until it
ends; after ``kill -9`` (the OOM killer, ``scancel`` past the grace time, a
node that died) nothing is left to change it, so the record alone cannot
tell a live run from a dead one. The engines therefore hold
:class:`RunLock` while a run trains: an exclusive ``flock(2)`` on
``<run_dir>/.lock``. The kernel releases a flock when the last file
descriptor on it closes, which happens on every kind of process death, so
no cleanup code has to run. :func:`run_is_alive` asks the kernel with a
non-blocking attempt; the report shows ``running`` records whose lock is
free as *interrupted*.

Details that matter:

- The lock file is never deleted or replaced (no atomic rename): a lock
  belongs to an inode, and unlinking a lock file lets two processes each
  hold "the" lock on different inodes. The holder's host, pid and start
  time are written *into* the file, for messages only.
- Forked children (PyTorch DataLoader workers) share the lock with their
  parent; it is released when the last of them exits.
- Network filesystems: Linux NFS clients map flock onto NFS byte-range
  locks, which work across nodes; Lustre needs the ``flock`` mount option
  (with ``localflock`` a lock is only seen on its own node). Where locking
  is not supported at all (``ENOLCK``), :class:`RunLock` warns and runs
  without a lock, and :func:`run_is_alive` answers None (cannot tell).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import time
import warnings
from pathlib import Path

from utils.core.files import make_dirs

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_holder", "run_is_alive"]

LOCK_NAME = ".lock"
# The file is tiny and read only for messages; a cap keeps a hostile file from costing memory.
_MAX_HOLDER_BYTES = 4096


class RunLockedError(RuntimeError):
    """Another process holds the run (the same command started twice, or a requeue racing the old job)."""


def _unsupported(err: OSError) -> bool:
    # ENOLCK: no lock manager (NFS without lockd); EOPNOTSUPP/ENOSYS/EINVAL: the filesystem has no flock.
    return err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLock:
    """Hold ``<run_dir>/.lock`` exclusively while a run trains.

    Example::

        with RunLock(cfg.run_dir):
            record = train(...)

    Args:
        run_dir: the run directory (created if missing).
        wait_s: how long to retry when another process holds the lock
            (a requeued job can start while the old one is still exiting);
            0 fails at once.

    Raises:
        RunLockedError: another live process holds the run; the message
            names its host, pid and start time.
    """

    def __init__(self, run_dir: str | Path, *, wait_s: float = 0.0) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.wait_s = float(wait_s)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        make_dirs(self.run_dir, "the run folder")
        # O_CLOEXEC (Python's default): a program exec'd by the run does not keep the run "alive".
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RunLockedError(
                        f"{self.run_dir} is held by another process ({_describe(lock_holder(self.run_dir))}); "
                        "wait for it to finish or stop it before starting this run again"
                    ) from None
                time.sleep(min(0.2, max(self.wait_s, 0.0)))
            except OSError as e:
                if not _unsupported(e):
                    os.close(fd)
                    raise
                os.close(fd)
                warnings.warn(
                    f"{self.path}: the filesystem does not support flock ({e.strerror}); the run goes on "
                    "without a liveness lock, so the report cannot tell whether it is still alive",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return self
        self._fd = fd
        holder = {"host": platform.node(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        # In place (truncate + write), never a rename: the lock lives on this inode.
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Drop the lock (also done by the kernel when the process dies)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def run_is_alive(run_dir: str | Path) -> bool | None:
    """Whether a live process holds ``<run_dir>/.lock``.

    Returns:
        True when a process holds it; False when the lock file exists and
        nobody holds it (the run ended, or its process died); None when
        there is no lock file (a run from before the lock, or not started)
        or the filesystem cannot lock.
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        # Read-only is enough for flock; a report run by a teammate may not write here.
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError as e:
            if _unsupported(e):
                return None
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lock_holder(run_dir: str | Path) -> dict:
    """Host, pid and start time written by the last holder (``{}`` when unknown or unreadable)."""
    try:
        with open(Path(run_dir) / LOCK_NAME, "rb") as f:
            data = json.loads(f.read(_MAX_HOLDER_BYTES) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {holder.get('started', '?')}"
