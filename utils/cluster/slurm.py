"""Everything that talks to SLURM's tools: the preflight against sinfo, every command checked, job states.

sbatch's own answers to an oversized job ("More processors requested than
permitted", "Invalid generic resource (gres) specification") do not say what
to change. So every submission (job files, experiments, sweeps) first
compares what the job asks for per node (CPUs, memory, GRES such as GPUs, in
every spelling sbatch accepts) with what ``sinfo`` reports for its partition
and lists every problem at once; :func:`fit_options` gives the sbatch options
that make it fit. :func:`slurm` runs a SLURM command and raises on failure
with its message: no result goes unchecked. :func:`job_states` reads states
from ``sacct`` (accounting) and ``squeue`` (the live queue): state files on a
shared folder are never trusted, SLURM and the run records are.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from utils.cluster.profile import SlurmConfig
from utils.core.files import make_dirs

__all__ = ["ACTIVE", "NEVER", "RUNNING", "GresError", "JobState", "Node", "Request", "ResourceError", "check_fit",
           "cluster_nodes", "config_request", "expand_task_ids", "fit_options", "job_states", "parse_gres",
           "parse_mem_mb", "preflight", "request", "slurm", "submit_file"]  # fmt: skip

# States in which a job will still run (or runs): never submit it twice.
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED", "RESV_DEL_HOLD"}  # fmt: skip
# States in which a job runs (the others of ACTIVE wait).
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}
# A pending job whose dependency failed: it will never run (without --kill-on-invalid-dep it waits forever).
NEVER = "DependencyNeverSatisfied"


class ResourceError(ValueError):
    """The job asks for more than any node of its partition has (CPUs, memory, GRES)."""


class GresError(ResourceError):
    """The job asks for generic resources (GPUs) that no node of its partition has."""


def slurm(argv: list[str], *, what: str) -> str:
    """Run a SLURM command (``sbatch``, ``scontrol``, ``scancel``, ...); returns its stdout.

    Raises:
        FileNotFoundError: the tool is not on PATH.
        RuntimeError: it failed; its message on one line, naming ``what``.
    """
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} is not on PATH; {what} needs a SLURM client (or run it locally)")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} refused {what}: {' '.join(r.stderr.split()) or f'exit {r.returncode}'}")
    return r.stdout


# -- what a job asks for


@dataclass(frozen=True)
class Node:
    """One node as sinfo reports it."""

    name: str
    cpus: int
    mem_mb: int
    gres: dict  # {"gpu": 2, "gpu:a100": 2}


@dataclass(frozen=True)
class Request:
    """What one job asks for on each of its nodes."""

    partition: str | None = None
    cpus_per_task: int = 1
    ntasks_per_node: int = 1
    nodes: int = 1
    mem_mb: int | None = None
    gres: str | None = None

    @property
    def cpus(self) -> int:
        return self.cpus_per_task * self.ntasks_per_node


def parse_gres(text: str | None) -> dict[str, int]:
    """``gpu:a100:2,shard:4`` -> ``{"gpu": 2, "gpu:a100": 2, "shard": 4}``; ``none``/``(null)`` -> ``{}``."""
    out: dict[str, int] = {}
    if not text or text.strip() in ("none", "(null)"):
        return out
    for item in text.split(","):
        item = re.sub(r"\(.*\)$", "", item.strip())  # sinfo appends "(S:0-1)" socket bindings
        parts = item.split(":")
        count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        names = parts[:-1] if len(parts) > 1 and parts[-1].isdigit() else parts
        out[names[0]] = out.get(names[0], 0) + count
        if len(names) > 1:
            out[":".join(names)] = out.get(":".join(names), 0) + count
    return out


def parse_mem_mb(text: str | None) -> int | None:
    """SLURM memory (``32G``, ``4096``, ``500M``, ``1T``; plain numbers are MB) -> MB."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+)([KMGT]?)B?", text.strip().upper())
    if not m:
        raise ValueError(f"--mem expected a size such as 32G or 4096 (MB), received {text!r}")
    scale = {"K": 1 / 1024, "M": 1, "": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return max(1, int(int(m.group(1)) * scale))


def _sbatch_options() -> argparse.ArgumentParser:
    """The resource options of sbatch in every spelling it accepts (``-c4``, ``-c 4``, ``--cpus-per-task=4``...)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flags, dest in ((("-p", "--partition"), "partition"), (("-c", "--cpus-per-task"), "cpus_per_task"),
                        (("--ntasks-per-node",), "ntasks_per_node"), (("-n", "--ntasks"), "ntasks"),
                        (("-N", "--nodes"), "nodes"), (("--mem",), "mem"), (("--mem-per-cpu",), "mem_per_cpu"),
                        (("--gres",), "gres"), (("-G", "--gpus"), "gpus"), (("--gpus-per-node",), "gpus_per_node"),
                        (("--output", "-o"), "output"), (("-J", "--job-name"), "job_name")):  # fmt: skip
        p.add_argument(*flags, dest=dest)
    return p


def request(text: str = "", sbatch_args: Iterable[str] = ()) -> tuple[Request, dict]:
    """What a job file's ``#SBATCH`` lines ask for, with ``sbatch_args`` (as on sbatch's command line) winning.

    Returns:
        The per-node :class:`Request`, and the raw options read (``output``, ``job_name``, ...).

    Raises:
        ValueError: a value sbatch would refuse (a non-number CPU count, an unreadable memory size).
    """
    words = [w for line in re.findall(r"^#SBATCH\s+(.*)$", text, flags=re.M) for w in shlex.split(line, comments=True)]
    o, _ = _sbatch_options().parse_known_args([*words, *sbatch_args])

    def count(value, what: str, default: int = 1) -> int:
        if value is None:
            return default
        m = re.fullmatch(r"(\d+)(-\d+)?", str(value))  # a node range "2-4" asks for at least 2
        if not m:
            raise ValueError(f"--{what} expected a whole number, received {value!r}")
        return int(m.group(1))

    nodes = count(o.nodes, "nodes")
    per_node = count(o.ntasks_per_node, "ntasks-per-node", 0) or -(-count(o.ntasks, "ntasks") // nodes)
    cpus = count(o.cpus_per_task, "cpus-per-task")
    mem = parse_mem_mb(o.mem)
    if mem is None and o.mem_per_cpu:
        mem = parse_mem_mb(o.mem_per_cpu) * cpus * per_node
    gpus = o.gpus_per_node or (None if o.gpus is None else str(-(-count(o.gpus.split(":")[-1], "gpus") // nodes)))
    gres = ",".join(x for x in (o.gres if o.gres and o.gres != "none" else "", f"gpu:{gpus}" if gpus else "") if x)
    return Request(o.partition, cpus, per_node, nodes, mem, gres or None), vars(o)


def config_request(cfg: SlurmConfig) -> Request:
    """What a profile's job kind asks for (experiments and sweeps submit from configs)."""
    return Request(partition=cfg.partition, cpus_per_task=cfg.cpus_per_task or 1,
                   ntasks_per_node=cfg.ntasks_per_node or 1, nodes=cfg.nodes or 1,
                   mem_mb=cfg.mem_gb * 1024 if cfg.mem_gb else None, gres=cfg.gpus)  # fmt: skip


# -- does it fit


def cluster_nodes(partition: str | None = None) -> list[Node]:
    """The nodes of a partition (None = the default one), from ``sinfo``.

    Raises:
        FileNotFoundError: sinfo is not on PATH.
        RuntimeError: sinfo failed (no controller?), with its message.
    """
    cmd = ["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G"] + (["-p", partition] if partition else [])
    nodes: dict[str, Node] = {}
    for line in slurm(cmd, what="listing the nodes (is the SLURM controller up?)").splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            name, cpus, mem, gres = parts
            nodes[name] = Node(name, int(re.sub(r"\D", "", cpus) or 0), int(re.sub(r"\D", "", mem) or 0), parse_gres(gres))
    return list(nodes.values())


def _shown(nodes: list[Node]) -> str:
    if not nodes:
        return "no nodes"
    return ", ".join(
        f"{n.name}: {n.cpus} CPUs, {n.mem_mb} MB, GRES {','.join(f'{k}:{v}' for k, v in n.gres.items() if ':' not in k) or 'none'}"
        for n in nodes[:4]
    ) + (f" and {len(nodes) - 4} more" if len(nodes) > 4 else "")


def _gres_ok(wanted: dict[str, int], node: Node) -> bool:
    return all(node.gres.get(k, 0) >= v for k, v in wanted.items())


def check_fit(req: Request, nodes: list[Node], *, job: str, fix: str) -> None:
    """Raise when no ``req.nodes`` nodes of the partition can each hold the request, naming every problem.

    Args:
        req: what the job asks for per node.
        nodes: the partition's nodes (:func:`cluster_nodes`).
        job: names the job in the message.
        fix: what makes it fit (a command that exists), appended to the message.

    Raises:
        GresError: a GRES (GPUs) that no node has (and whatever else does not fit).
        ResourceError: too many CPUs, too much memory, or too few such nodes.
    """
    where = f"partition {req.partition!r}" if req.partition else "the default partition"
    wanted = parse_gres(req.gres)
    fitting = [n for n in nodes if n.cpus >= req.cpus and (req.mem_mb or 0) <= n.mem_mb and _gres_ok(wanted, n)]
    if len(fitting) >= req.nodes:
        return
    problems, have = [], {k for n in nodes for k in n.gres}
    missing = sorted(k for k in wanted if k not in have)
    if missing:
        problems.append(f"--gres={req.gres}, but no node has {'/'.join(missing)} (drop it: --gres=none)")
    most_cpus = max((n.cpus for n in nodes), default=0)
    if req.cpus > most_cpus:
        problems.append(f"{req.cpus} CPUs per node (cpus-per-task={req.cpus_per_task}"
                        + (f" x ntasks-per-node={req.ntasks_per_node}" if req.ntasks_per_node > 1 else "")
                        + f"; the most is {most_cpus}: --cpus-per-task={max(1, most_cpus // req.ntasks_per_node)})")  # fmt: skip
    most_mem = max((n.mem_mb for n in nodes), default=0)
    if req.mem_mb and req.mem_mb > most_mem:
        problems.append(f"{req.mem_mb} MB of memory (the most is {most_mem} MB: --mem={most_mem}M)")
    for k, v in wanted.items():
        top = max((n.gres.get(k, 0) for n in nodes), default=0)
        if k in have and v > top:
            problems.append(f"{k}:{v} (the most on one node is {k}:{top})")
    if not problems:
        problems.append(f"{req.nodes} nodes, but only {len(fitting)} can hold the request (--nodes={max(1, len(fitting))})")
    error = GresError if missing else ResourceError
    raise error(f"{job} does not fit {where}: it asks for {'; '.join(problems)}. Nodes: {_shown(nodes)}. "
                f"Make it fit: {fix}")  # fmt: skip


def fit_options(req: Request, nodes: list[Node]) -> list[str]:
    """sbatch options that shrink ``req`` to the largest node (empty when it already fits).

    Memory follows what the job needs, not the node's whole memory: the
    request's memory per CPU times the CPUs it keeps, capped by the node.
    """
    if not nodes:
        return []
    best = max(nodes, key=lambda n: (n.cpus, n.mem_mb))
    out, cpus_per_task = [], req.cpus_per_task
    if req.cpus > best.cpus:
        cpus_per_task = max(1, best.cpus // req.ntasks_per_node)
        out.append(f"--cpus-per-task={cpus_per_task}")
    if req.mem_mb:
        needed = -(-req.mem_mb * cpus_per_task // req.cpus_per_task)
        if min(needed, best.mem_mb) < req.mem_mb:
            out.append(f"--mem={min(needed, best.mem_mb)}M")
    wanted = parse_gres(req.gres)
    if wanted and not _gres_ok(wanted, best):
        kept = [f"{k}:{min(v, best.gres.get(k, 0))}" for k, v in wanted.items() if ":" not in k and best.gres.get(k)]
        out.append(f"--gres={','.join(kept) or 'none'}")
    if req.nodes > len(nodes):
        out.append(f"--nodes={len(nodes)}")
    return out


def preflight(text: str, sbatch_args=(), *, job: str, fix: str, fit: bool = False, nodes: dict | None = None) -> list[str]:
    """Check a job file (its text, with ``sbatch_args`` winning) against its partition's nodes, make its log
    folder, and return the options ``fit`` adds (empty without ``fit``). ``nodes`` caches sinfo per partition.

    Raises:
        ResourceError: it fits no node (and ``fit`` is off): every problem named, with ``fix``.
        FileNotFoundError, RuntimeError: no sinfo, or it failed.
    """
    req, raw = request(text, sbatch_args)
    found = (nodes if nodes is not None else {}).setdefault(req.partition, None) or cluster_nodes(req.partition)
    if nodes is not None:
        nodes[req.partition] = found
    added = fit_options(req, found) if fit else []
    if added:
        req, raw = request(text, (*sbatch_args, *added))
    check_fit(req, found, job=job, fix=fix)
    # sbatch opens the log before the job starts and fails without a word when its folder is missing.
    make_dirs(Path(str(raw.get("output") or "slurm-%j.out")).parent, f"{job}: --output")
    return added


def submit_file(job: str | Path, job_args: tuple[str, ...] = (), sbatch_args: tuple[str, ...] = (), *,
                fit: bool = False) -> tuple[str, list[str], str]:  # fmt: skip
    """Preflight a job file (:func:`preflight`), then ``sbatch --parsable``.

    Returns:
        The job id, the options ``fit`` added, and the log path (``%j`` filled in).

    Raises:
        FileNotFoundError: no such job file, or no sbatch/sinfo on PATH.
        ResourceError: the job fits no node (and ``fit`` is off); every problem named, with a fix that exists.
        RuntimeError: sbatch refused the job (its message included).
    """
    job = Path(job)
    if not job.is_file():
        raise FileNotFoundError(f"job file {job} not found; list them with: ls slurm/*.slurm slurm/local/*.slurm")
    text = job.read_text()
    local = job.parent.parent / "slurm" / "local" / job.name if job.parent.name != "local" else None
    fix = f"python main/submit.py --fit {job}" + (f"; or the job made for a small node: sbatch {local}"
                                                 if local is not None and local.is_file() else "")  # fmt: skip
    added = preflight(text, sbatch_args, job=str(job), fix=fix, fit=fit)
    job_id = slurm(["sbatch", "--parsable", *sbatch_args, *added, str(job), *job_args], what=str(job)).strip().split(";")[0]
    _, raw = request(text, (*sbatch_args, *added))
    log = str(raw.get("output") or "slurm-%j.out").replace("%x", raw.get("job_name") or job.stem)
    return job_id, added, log.replace("%j", job_id).replace("%A", job_id).replace("%a", "<task>")


# -- job states


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
        """It will still run: queued (with a dependency that can still be met), running or requeued."""
        return self.state in ACTIVE and self.reason != NEVER

    @property
    def failed(self) -> bool:
        """It ended without completing (failed, cancelled, timed out, out of memory, or will never run)."""
        return not self.active and self.state not in ("COMPLETED", "UNKNOWN")


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


def _lines(cmd: list[str]) -> list[str]:
    try:
        return slurm(cmd, what="reading job states").splitlines()
    except (FileNotFoundError, RuntimeError, subprocess.SubprocessError):
        return []  # no accounting, or no controller: every state stays UNKNOWN


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """States of jobs and of every task of the given array ids (``{"123_0": JobState, "124": ...}``).

    Accounting (sacct) is read first, then the live queue (squeue, arrays
    expanded) overrides it: a job just submitted or requeued may not be in
    accounting yet. Without SLURM tools every state is ``UNKNOWN``.
    """
    ids = sorted({str(j).split("_")[0] for j in job_ids if str(j)})
    out: dict[str, JobState] = {}
    if not ids:
        return out
    # -D: every run of a requeued job, oldest first; the last line is the current one.
    for line in _lines(["sacct", "-n", "-P", "-X", "-D", "-j", ",".join(ids), "-o", "JobID,State,ExitCode"]):
        parts = line.split("|")
        if len(parts) >= 3:
            state = (parts[1].split() or ["UNKNOWN"])[0]
            for jid in expand_task_ids(parts[0]):
                before = out.get(jid)
                requeued = before is not None and (before.requeued or before.state in ("REQUEUED", "PREEMPTED"))
                out[jid] = JobState(state=state, exit_code=parts[2], requeued=requeued or state == "REQUEUED")
    # The whole queue, filtered here: squeue -j fails outright when one id has left the queue.
    for line in _lines(["squeue", "-h", "-r", "-o", "%i|%T|%r"]):
        parts = line.split("|")
        if len(parts) >= 3 and parts[0].split("_")[0] in ids:
            old = out.get(parts[0], JobState())
            reason = "" if parts[2] in ("None", "(null)") else parts[2]
            out[parts[0]] = JobState(parts[1], old.exit_code, reason, old.requeued or old.state == "REQUEUED")
    return out
