"""A process pool that outlives its workers: a killed worker costs its one item, never a hang.

``multiprocessing.Pool`` waits forever for the result of a worker that the
OOM killer (SIGKILL) took: the parent idles with no report until the job's
time limit. ``concurrent.futures.ProcessPoolExecutor`` does not hang, but it
fails every pending item and cannot say which one the dead worker held.
Here each worker has its own pipe and one item at a time, and the parent
waits on the pipes and on the workers' process sentinels together: a death
is seen at once, the item it held is named, a fresh worker takes its place,
and the rest of the work goes on.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait

__all__ = ["Lost", "WorkerError", "pool_context", "run_pool"]


class WorkerError(RuntimeError):
    """A work function raised (a bug, not bad input): carries the worker's traceback."""


@dataclass(frozen=True)
class Lost:
    """An item whose worker process died before answering.

    Attributes:
        index: position of the item in the input.
        pid: the worker's process id.
        exitcode: ``-N`` for death by signal N (multiprocessing's convention).
    """

    index: int
    pid: int
    exitcode: int | None

    def describe(self) -> str:
        if self.exitcode is not None and self.exitcode < 0:
            sig = -self.exitcode
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            why = f"was killed by {name} (signal {sig})"
            if sig == signal.SIGKILL:
                why += ", which the OOM killer sends when memory runs out"
        else:
            why = f"exited with code {self.exitcode}"
        return f"worker pid {self.pid} {why}"


def pool_context():
    """fork when it is safe (fast start), spawn when a framework is loaded.

    TensorFlow and torch start threads at import; forking a process that
    holds them can deadlock, so a caller that imported them (tests,
    notebooks, the demo after training) gets spawn.
    """
    if any(m in sys.modules for m in ("tensorflow", "torch")):
        return mp.get_context("spawn")
    return mp.get_context("fork")


def _serve(conn, fn) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and
    # stops the workers, which finish their item instead of dying mid-write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return  # the parent is gone
        if msg is None:
            return
        index, item = msg
        try:
            conn.send((index, True, fn(item)))
        except Exception:
            conn.send((index, False, traceback.format_exc()))


class _Slot:
    def __init__(self, ctx, fn):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, fn), daemon=True)
        self.proc.start()
        child.close()  # so the parent's end sees EOF when the worker dies
        self.index: int | None = None


def run_pool(fn: Callable, items: Sequence, *, workers: int) -> Iterator[tuple[int, object]]:
    """Apply ``fn`` to every item in ``workers`` processes; yield ``(index, result)`` as they finish.

    The result is a :class:`Lost` when the worker died while holding the
    item; a fresh worker takes over the remaining items. ``fn`` and the
    items must pickle when the pool spawns (see :func:`pool_context`).

    Raises:
        WorkerError: ``fn`` raised; the remaining workers are stopped first.
    """
    ctx = pool_context()
    todo = deque(range(len(items)))
    slots: list[_Slot] = []

    def feed(slot: _Slot) -> None:
        slot.index = todo.popleft() if todo else None
        if slot.index is not None:
            slot.conn.send((slot.index, items[slot.index]))

    try:
        for _ in range(min(workers, len(items))):
            slots.append(_Slot(ctx, fn))
            feed(slots[-1])
        while True:
            busy = [s for s in slots if s.index is not None]
            if not busy:
                break
            ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
            for slot in busy:
                died = slot.proc.sentinel in ready
                # A reply may land just before the worker dies: read it first.
                if slot.conn in ready or (died and slot.conn.poll()):
                    try:
                        index, ok, payload = slot.conn.recv()
                    except (EOFError, OSError):
                        died = True
                    else:
                        if not ok:
                            raise WorkerError(f"processing item {index} raised in a worker:\n{payload}")
                        yield index, payload
                        feed(slot)
                        continue
                if died:
                    slot.proc.join()
                    lost = Lost(slot.index, slot.proc.pid, slot.proc.exitcode)
                    slot.conn.close()
                    slots.remove(slot)
                    yield lost.index, lost
                    if todo:
                        slots.append(_Slot(ctx, fn))
                        feed(slots[-1])
    finally:
        for slot in slots:
            try:
                slot.conn.send(None)
            except OSError:
                pass
        for slot in slots:
            slot.proc.join(timeout=10)
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join()
            slot.conn.close()
