"""Submit a job file with a preflight: a GPU request on a cluster without GPUs fails clearly.

sbatch's own answer to ``--gres=gpu:1`` where no node has GPUs is "Invalid
generic resource (gres) specification", which does not say what to do. So
:func:`submit` compares the job's ``--gres`` with what ``sinfo`` reports for
its partition first, and translates sbatch's message if it still comes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["GresError", "check_gres", "directive", "partition_gres", "submit"]


class GresError(ValueError):
    """The job asks for generic resources (GPUs) that no node of its partition has."""


def directive(text: str, key: str, args: tuple[str, ...] = ()) -> str | None:
    """The value of ``--key`` from sbatch options ``args`` (they win) or the file's ``#SBATCH`` lines."""
    for arg in reversed(args):
        if arg.startswith(f"--{key}="):
            return arg.split("=", 1)[1]
    found = re.findall(rf"^#SBATCH\s+--{re.escape(key)}=(\S+)", text, flags=re.M)
    return found[-1].strip("'\"") if found else None


def partition_gres(partition: str | None = None) -> dict[str, list[str]]:
    """``{node: [gres, ...]}`` from ``sinfo`` for a partition (None = the default one)."""
    cmd = ["sinfo", "-h", "-N", "-o", "%N|%G"] + (["-p", partition] if partition else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    nodes: dict[str, list[str]] = {}
    for line in out.splitlines():
        node, _, gres = line.partition("|")
        nodes[node] = [] if gres.strip() in ("", "(null)") else gres.strip().split(",")
    return nodes


def check_gres(requested: str | None, nodes: dict[str, list[str]], *, job: str, partition: str | None) -> None:
    """Raise :class:`GresError` when ``requested`` (``gpu:1``) names a resource no node has."""
    if not requested or requested == "none":
        return
    wanted = {item.split(":")[0] for item in requested.split(",")}
    have = {g.split(":")[0] for gres in nodes.values() for g in gres}
    missing = sorted(wanted - have)
    if missing:
        where = f"partition {partition!r}" if partition else "the default partition"
        shown = ", ".join(f"{n}: {','.join(g) or 'none'}" for n, g in sorted(nodes.items())) or "no nodes"
        raise GresError(
            f"{job} asks for --gres={requested}, but no node in {where} has {'/'.join(missing)} "
            f"(sinfo GRES: {shown}). Set a GPU partition in the cluster profile and rerun "
            "main/make_slurm.py, or run it without a GPU: python main/submit.py --no-gpu "
            f"{job} (sbatch --gres=none {job})."
        )


def submit(job: str | Path, job_args: tuple[str, ...] = (), sbatch_args: tuple[str, ...] = ()) -> str:
    """Preflight, then ``sbatch --parsable``; returns the job id.

    Raises:
        FileNotFoundError: no such job file, or no sbatch on PATH.
        GresError: the job asks for GPUs the cluster does not have.
        RuntimeError: sbatch refused the job (its message included).
    """
    job = Path(job)
    if not job.is_file():
        raise FileNotFoundError(f"job file {job} not found; list them with: ls slurm/*.slurm")
    if shutil.which("sbatch") is None:
        raise FileNotFoundError(f"sbatch is not on PATH; run the job here with: bash {job}")
    text = job.read_text()
    partition = directive(text, "partition", sbatch_args)
    requested = directive(text, "gres", sbatch_args)
    check_gres(requested, partition_gres(partition), job=str(job), partition=partition)
    r = subprocess.run(["sbatch", "--parsable", *sbatch_args, str(job), *job_args], capture_output=True, text=True)
    if r.returncode != 0:
        if "generic resource" in r.stderr:
            check_gres(requested, {}, job=str(job), partition=partition)  # same clear message
        raise RuntimeError(f"sbatch refused {job}: {r.stderr.strip()}")
    return r.stdout.strip().split(";")[0]
