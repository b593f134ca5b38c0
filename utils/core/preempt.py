"""Preemption: turn SLURM's warning signal into "checkpoint and requeue".

SLURM sends ``--signal=B:USR1@<seconds>`` to the batch shell before the time
limit (or on preemption, SIGTERM). The job script forwards it to Python;
engines poll :attr:`PreemptionFlag.requested` at step boundaries, save a
checkpoint, and exit with :data:`REQUEUE_EXIT_CODE`, which the job script
turns into ``scontrol requeue``. The run id is stable, so the requeued job
resumes the same run.
"""

from __future__ import annotations

import signal

__all__ = ["REQUEUE_EXIT_CODE", "PreemptionFlag", "Preempted"]

# Distinct from Python's 1 (error) and 2 (usage) and from 128+N signal deaths.
REQUEUE_EXIT_CODE = 85


class Preempted(Exception):
    """Raised by an engine after it checkpointed because a signal asked it to stop."""


class PreemptionFlag:
    """Context manager that records SIGUSR1/SIGTERM instead of dying on them.

    Handlers are restored on exit, so tests and notebooks are left as found.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None
        self._old = {}

    def _handle(self, signum, _frame):
        self.requested = signum

    def __enter__(self) -> PreemptionFlag:
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave default handling
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
