"""Preemption and cancellation: turn SLURM's signals into "checkpoint, then requeue" or "checkpoint, then stop".

SLURM sends ``--signal=B:USR1@<seconds>`` to the batch step before the time
limit (and ``scancel --signal=USR1 --batch`` does the same by hand); the job's
entry point (``main/job.py``) passes it on to Python. ``scontrol requeue`` and
a preemption send SIGTERM; so does a user's plain ``scancel``. Engines poll
:attr:`PreemptionFlag.requested` at step boundaries and save a checkpoint.
Then a preempted run exits with :data:`REQUEUE_EXIT_CODE`, which the job
turns into ``scontrol requeue`` (the run id is stable, so the requeued job
resumes the same run), while a cancelled one (:attr:`PreemptionFlag.cancelled`)
ends as ``cancelled`` with :data:`CANCELLED_EXIT_CODE`, its checkpoint kept
for a later rerun.

Which SIGTERM is which is asked of SLURM when the signal arrives: a requeue
(by ``scontrol requeue`` or a preemption) has already raised the job's
``Restarts`` count above the ``SLURM_RESTART_COUNT`` this run started with,
and the time limit shows as ``Reason=TimeLimit``; any other SIGTERM inside a job is a
cancel. Outside SLURM a SIGTERM is a stop to resume from (as before).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

__all__ = ["CANCELLED_EXIT_CODE", "REQUEUE_EXIT_CODE", "Cancelled", "PreemptionFlag", "Preempted", "slurm_cancelled"]

# Distinct from Python's 1 (error) and 2 (usage) and from 128+N signal deaths.
REQUEUE_EXIT_CODE = 85
# A user's scancel: the run checkpointed and stops for good (a rerun resumes it); never requeued.
CANCELLED_EXIT_CODE = 86


class Preempted(Exception):
    """Raised by an engine after it checkpointed because a signal asked it to stop (it requeues)."""


class Cancelled(Preempted):
    """Raised after it checkpointed because the job was cancelled (scancel): no requeue."""


def slurm_cancelled(env=None) -> bool:
    """Whether a SIGTERM received now in a SLURM job is a cancel (not a requeue, preemption or time limit).

    Asks ``scontrol show job``: False outside SLURM, when SLURM cannot be asked, when the job's
    restart count went up (requeued) or when it hit its time limit.
    """
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    restarts = re.search(r"\bRestarts=(\d+)", out)
    # Seen on SLURM 22: scancel, scontrol requeue and the time limit all show JobState=COMPLETING;
    # a requeue has raised Restarts, the time limit says Reason=TimeLimit.
    if restarts is None or re.search(r"\bReason=(TimeLimit|Preempt)", out):
        return False
    return int(restarts.group(1)) <= int(env.get("SLURM_RESTART_COUNT") or 0)


class PreemptionFlag:
    """Context manager that records SIGUSR1/SIGTERM instead of dying on them.

    ``requested`` is the first signal; ``cancelled`` says whether it was a
    user's cancel (see the module docstring). Handlers are restored on exit,
    so tests and notebooks are left as found.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None
        self.cancelled = False
        self._old = {}

    def _handle(self, signum, _frame):
        if self.requested is None:
            self.requested = signum
            self.cancelled = signum == signal.SIGTERM and slurm_cancelled()

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
