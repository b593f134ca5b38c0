"""Which process of a distributed job this is, and where its rank 0 listens.

Rank, world size and local rank come from torchrun's variables
(RANK/WORLD_SIZE/LOCAL_RANK) or from srun's (SLURM_PROCID/SLURM_NTASKS/
SLURM_LOCALID); a plain process is rank 0 of 1. The rendezvous address is
the first host of the job's node list (``SLURM_JOB_NODELIST``, compressed as
``gpu[03-05,07],cpu1``), so ranks on every node dial the same host; the port
comes from the job id, so two jobs sharing a node do not collide.

``--batch-size`` is the global batch for both engines (:func:`per_process_batch`):
a run over N processes takes the steps of one process with the whole batch.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping

__all__ = [
    "DEFAULT_PORT",
    "dist_env",
    "expand_nodelist",
    "expand_tasks_per_node",
    "first_node",
    "job_port",
    "per_process_batch",
    "rendezvous",
    "set_master_env",
]

DEFAULT_PORT = 29500  # torch.distributed's usual port
# Below Linux's ephemeral range (32768+), so an outgoing connection never holds it.
_PORT_SPAN = 2000


def dist_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun (RANK/WORLD_SIZE) or srun (SLURM_PROCID/SLURM_NTASKS)."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    # Inside an srun step its own task count is the truth; the batch script of a
    # multi-task job sees the allocation's SLURM_NTASKS but is one process.
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    if tasks > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), tasks, int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def per_process_batch(batch_size: int, world: int) -> int:
    """Each process's share of the global batch: ``--batch-size`` counts the clips of one optimizer step over
    every process, so the same options train the same run on one process or on N (and the run's record,
    id and resume fingerprint do not depend on N).

    Raises:
        ValueError: the batch does not split evenly over the ``world`` processes.
    """
    if world < 1 or batch_size < 1:
        raise ValueError(f"batch size and process count expected >= 1, received {batch_size} and {world}")
    if batch_size % world:
        near = world * max(1, round(batch_size / world))
        raise ValueError(f"--batch-size is the global batch, split evenly over the run's {world} processes; "
                         f"{batch_size} does not split: use a multiple of {world}, e.g. --batch-size {near}")  # fmt: skip
    return batch_size // world


def _split_top(nodelist: str) -> list[str]:
    """Split on commas outside brackets: ``a[1,2],b`` -> ``['a[1,2]', 'b']``."""
    items, depth, start = [], 0, 0
    for i, c in enumerate(nodelist):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"node list {nodelist!r}: ']' without '['")
        elif c == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"node list {nodelist!r}: '[' without ']'")
    items.append(nodelist[start:])
    return [i.strip() for i in items if i.strip()]


def _expand_ranges(spec: str, where: str) -> list[str]:
    """``03-05,07`` -> ``['03', '04', '05', '07']`` (zero padding kept)."""
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            raise ValueError(f"node list {where!r}: cannot read the range {part!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"node list {where!r}: range {part!r} runs backwards")
        out += [str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1)]
    return out


def expand_nodelist(nodelist: str) -> list[str]:
    """Every host of a SLURM node list, in order.

    ``node[01-02]`` -> ``[node01, node02]``; ``gpu-a,gpu-b`` -> ``[gpu-a, gpu-b]``;
    ``gpu[03-05,07],cpu1`` -> ``[gpu03, gpu04, gpu05, gpu07, cpu1]``;
    ``r[1-2]n[1-2]`` -> ``[r1n1, r1n2, r2n1, r2n2]``.

    Raises:
        ValueError: brackets that do not pair up, or a range that is not numbers.
    """
    hosts = []
    for item in _split_top(nodelist.strip()):
        pieces = re.split(r"(\[[^\]]*\])", item)  # text and [ranges] alternate
        choices = [_expand_ranges(p[1:-1], nodelist) if p.startswith("[") else [p] for p in pieces if p]
        hosts += ["".join(combo) for combo in itertools.product(*choices)]
    return hosts


def expand_tasks_per_node(text: str) -> list[int]:
    """SLURM's tasks per node, ``2(x3),1`` -> ``[2, 2, 2, 1]`` (one entry per node, in node order)."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ValueError(f"tasks per node expected a list like 2(x3),1, received {text!r}")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def first_node(nodelist: str) -> str | None:
    """The first host of a SLURM node list (``gpu[03-05,07],cpu1`` -> ``gpu03``); None when empty.

    A list this parser cannot read is handed to ``scontrol show hostnames``
    when scontrol is installed.
    """
    try:
        hosts = expand_nodelist(nodelist)
    except ValueError:
        if shutil.which("scontrol") is None:
            raise
        r = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
        hosts = r.stdout.split() if r.returncode == 0 else []
        if not hosts:
            raise ValueError(f"cannot read the node list {nodelist!r} (scontrol: {r.stderr.strip()})") from None
    return hosts[0] if hosts else None


def job_port(env: Mapping[str, str] | None = None, base: int = DEFAULT_PORT) -> int:
    """A port derived from ``SLURM_JOB_ID`` (``base`` outside SLURM)."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID", "")
    return base + int(job) % _PORT_SPAN if job.isdigit() else base


def rendezvous(env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """``(MASTER_ADDR, MASTER_PORT)``: as set, else from the job's first node and id, else localhost.

    Raises:
        ValueError: MASTER_PORT is not a number, or the node list cannot be read.
    """
    env = os.environ if env is None else env
    addr = env.get("MASTER_ADDR")
    if not addr:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        addr = (first_node(nodelist) if nodelist else None) or "127.0.0.1"
    raw = env.get("MASTER_PORT")
    if raw and not raw.isdigit():
        raise ValueError(f"MASTER_PORT expected a port number, received {raw!r}")
    return addr, int(raw) if raw else job_port(env)


def set_master_env(env: dict | None = None) -> tuple[str, int]:
    """Fill MASTER_ADDR/MASTER_PORT (what torch.distributed's env:// reads) when unset; returns them."""
    env = os.environ if env is None else env
    addr, port = rendezvous(env)
    env.setdefault("MASTER_ADDR", addr)
    env.setdefault("MASTER_PORT", str(port))
    return addr, port
