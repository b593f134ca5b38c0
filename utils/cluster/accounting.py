"""Job states from SLURM itself: ``sacct`` (accounting, finished jobs) and ``squeue`` (the live queue).

The one reader of job states for sweeps and experiments: state files on a
shared folder are never trusted (a crafted pickle there would run code);
SLURM and the run records are.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ACTIVE", "TERMINAL", "JobState", "expand_task_ids", "job_states"]

# States in which a job will still run (or runs): never submit it twice.
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED", "RESV_DEL_HOLD"}  # fmt: skip
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED", "REVOKED"}  # fmt: skip


@dataclass
class JobState:
    """One job or array task as SLURM sees it.

    Attributes:
        state: SLURM state word (``PENDING``, ``RUNNING``, ``COMPLETED``,
            ``FAILED``, ``CANCELLED``, ...), ``UNKNOWN`` when SLURM does not list it.
        exit_code: ``rc:signal`` from sacct (``""`` while unknown).
        reason: the queue's reason for a pending job (``Dependency``, ``BeginTime``, ...).
        requeued: the job ran before and was requeued (it resumes its run).
    """

    state: str = "UNKNOWN"
    exit_code: str = ""
    reason: str = ""
    requeued: bool = False

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def expand_task_ids(job_id: str) -> list[str]:
    """``123_[0-2,5%2]`` -> ``[123_0, 123_1, 123_2, 123_5]``; other ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (hi.isdigit() or not hi):
            out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _run(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout if r.returncode == 0 else ""


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """States of jobs and of every task of the given array ids (``{"123_0": JobState, "124": ...}``).

    Accounting (sacct) is read first, then the live queue (squeue, arrays
    expanded) overrides it: a job just submitted or requeued may not be in
    accounting yet. Without SLURM tools every state is ``UNKNOWN``.
    """
    ids = sorted({str(j) for j in job_ids if str(j)})
    out: dict[str, JobState] = {}
    if not ids or shutil.which("sacct") is None:
        return out
    query = ",".join(ids)
    # -D: every run of a requeued job, oldest first; the last line is the current one.
    for line in _run(["sacct", "-n", "-P", "-X", "-D", "-j", query, "-o", "JobID,State,ExitCode"]).splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        state = (parts[1].split() or ["UNKNOWN"])[0]
        for jid in expand_task_ids(parts[0]):
            before = out.get(jid)
            requeued = before is not None and (before.requeued or before.state in ("REQUEUED", "PREEMPTED"))
            out[jid] = JobState(state=state, exit_code=parts[2], requeued=requeued or state == "REQUEUED")
    # The whole queue, filtered here: squeue -j fails outright when one id has left the queue.
    wanted = set(ids)
    for line in _run(["squeue", "-h", "-r", "-o", "%i|%T|%r"]).splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not (parts[0] in wanted or parts[0].split("_")[0] in wanted):
            continue
        old = out.get(parts[0], JobState())
        reason = "" if parts[2] in ("None", "(null)") else parts[2]
        out[parts[0]] = JobState(state=parts[1], exit_code=old.exit_code, reason=reason,
                                 requeued=old.requeued or old.state == "REQUEUED")  # fmt: skip
    return out
