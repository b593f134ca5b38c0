"""Submitting to SLURM with a preflight: a job that cannot fit any node is refused in one clear line.

sbatch's own answers to an oversized job ("More processors requested than
permitted", "Invalid generic resource (gres) specification") do not say what
to change. So every submission path (job files, sweeps, experiments) first
compares what the job asks for per node (CPUs, memory, GRES such as GPUs)
with what ``sinfo`` reports for its partition, and says which option to
change; :func:`fit_options` gives the sbatch options that make it fit.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from utils.cluster.profile import SlurmConfig

__all__ = [
    "GresError",
    "Node",
    "Request",
    "ResourceError",
    "check_fit",
    "cluster_nodes",
    "config_request",
    "directive",
    "file_request",
    "fit_config",
    "fit_options",
    "parse_gres",
    "parse_mem_mb",
    "run_sbatch",
    "submit",
]


class ResourceError(ValueError):
    """The job asks for more than any node of its partition has (CPUs, memory, GRES)."""


class GresError(ResourceError):
    """The job asks for generic resources (GPUs) that no node of its partition has."""


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


def directive(text: str, key: str, args: tuple[str, ...] = ()) -> str | None:
    """The value of ``--key`` from sbatch options ``args`` (they win) or the file's ``#SBATCH`` lines."""
    for arg in reversed(args):
        if arg.startswith(f"--{key}="):
            return arg.split("=", 1)[1]
    found = re.findall(rf"^#SBATCH\s+--{re.escape(key)}=(\S+)", text, flags=re.M)
    return found[-1].strip("'\"") if found else None


def file_request(text: str, sbatch_args: tuple[str, ...] = ()) -> Request:
    """What a job file asks for, with ``sbatch_args`` (``--cpus-per-task=1``) overriding its lines."""

    def number(key: str) -> int:
        value = directive(text, key, sbatch_args)
        return int(value) if value and value.isdigit() else 1

    return Request(
        partition=directive(text, "partition", sbatch_args),
        cpus_per_task=number("cpus-per-task"),
        ntasks_per_node=number("ntasks-per-node"),
        nodes=number("nodes"),
        mem_mb=parse_mem_mb(directive(text, "mem", sbatch_args)),
        gres=directive(text, "gres", sbatch_args),
    )


def config_request(cfg: SlurmConfig) -> Request:
    """What a profile's job kind asks for (sweeps and experiments submit from configs)."""
    return Request(partition=cfg.partition, cpus_per_task=cfg.cpus_per_task or 1,
                   ntasks_per_node=cfg.ntasks_per_node or 1, nodes=cfg.nodes or 1,
                   mem_mb=cfg.mem_gb * 1024 if cfg.mem_gb else None, gres=cfg.gpus)  # fmt: skip


def cluster_nodes(partition: str | None = None) -> list[Node]:
    """The nodes of a partition (None = the default one), from ``sinfo``.

    Raises:
        FileNotFoundError: sinfo is not on PATH.
        RuntimeError: sinfo failed (no controller?), with its message.
    """
    if shutil.which("sinfo") is None:
        raise FileNotFoundError("sinfo is not on PATH: this machine is no SLURM client; run the job here with bash")
    cmd = ["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G"] + (["-p", partition] if partition else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"sinfo failed: {r.stderr.strip() or r.returncode}; is the SLURM controller up?")
    nodes: dict[str, Node] = {}
    for line in r.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 4:
            continue
        name, cpus, mem, gres = parts
        mem_mb = int(re.sub(r"\D", "", mem) or 0)
        nodes[name] = Node(name, int(re.sub(r"\D", "", cpus) or 0), mem_mb, parse_gres(gres))
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


def check_fit(req: Request, nodes: list[Node], *, job: str, fix: str = "") -> None:
    """Raise when no ``req.nodes`` nodes of the partition can each hold the request.

    Args:
        req: what the job asks for per node.
        nodes: the partition's nodes (:func:`cluster_nodes`).
        job: names the job in the message.
        fix: what the caller offers to make it fit (appended to the message).

    Raises:
        GresError: a GRES (GPUs) that no node has.
        ResourceError: too many CPUs, too much memory, or too few such nodes.
    """
    where = f"partition {req.partition!r}" if req.partition else "the default partition"
    wanted = parse_gres(req.gres)
    have = {k for n in nodes for k in n.gres}
    missing = sorted(k for k in wanted if k not in have)
    if missing:
        raise GresError(
            f"{job} asks for --gres={req.gres}, but no node in {where} has {'/'.join(missing)} "
            f"({_shown(nodes)}). Set a GPU partition in the cluster profile and regenerate, or run it without "
            f"a GPU: {fix or f'python main/submit.py --no-gpu {job}'} (sbatch --gres=none)."
        )
    fitting = [n for n in nodes if n.cpus >= req.cpus and (req.mem_mb or 0) <= n.mem_mb and _gres_ok(wanted, n)]
    if len(fitting) >= req.nodes:
        return
    problems = []
    most_cpus = max((n.cpus for n in nodes), default=0)
    most_mem = max((n.mem_mb for n in nodes), default=0)
    if req.cpus > most_cpus:
        problems.append(f"{req.cpus} CPUs per node (cpus-per-task={req.cpus_per_task}"
                        + (f" x ntasks-per-node={req.ntasks_per_node}" if req.ntasks_per_node > 1 else "")
                        + f"; the most is {most_cpus}: --cpus-per-task={max(1, most_cpus // req.ntasks_per_node)})")  # fmt: skip
    if req.mem_mb and req.mem_mb > most_mem:
        problems.append(f"{req.mem_mb} MB of memory (the most is {most_mem} MB: --mem={most_mem}M)")
    for k, v in wanted.items():
        top = max((n.gres.get(k, 0) for n in nodes), default=0)
        if v > top:
            problems.append(f"{k}:{v} (the most on one node is {k}:{top})")
    if not problems:
        problems.append(f"{req.nodes} nodes, but only {len(fitting)} can hold the request (--nodes={max(1, len(fitting))})")
    raise ResourceError(
        f"{job} does not fit {where}: it asks for {'; '.join(problems)}. Nodes: {_shown(nodes)}. "
        f"Make it fit: {fix or f'python main/submit.py --fit {job}'}; or generate job files for this cluster "
        "(python main/make_slurm.py --profile slurm/local.toml --out slurm/local for the local cluster)."
    )


def fit_options(req: Request, nodes: list[Node]) -> list[str]:
    """sbatch options that shrink ``req`` to the largest node (empty when it already fits)."""
    if not nodes:
        return []
    best = max(nodes, key=lambda n: (n.cpus, n.mem_mb))
    out = []
    if req.cpus > best.cpus:
        out.append(f"--cpus-per-task={max(1, best.cpus // req.ntasks_per_node)}")
    if req.mem_mb and req.mem_mb > best.mem_mb:
        out.append(f"--mem={best.mem_mb}M")
    wanted = parse_gres(req.gres)
    if wanted and not _gres_ok(wanted, best):
        kept = [f"{k}:{min(v, best.gres.get(k, 0))}" for k, v in wanted.items() if ":" not in k and best.gres.get(k)]
        out.append(f"--gres={','.join(kept) or 'none'}")
    if req.nodes > len(nodes):
        out.append(f"--nodes={len(nodes)}")
    return out


def fit_config(cfg: SlurmConfig, nodes: list[Node]) -> tuple[SlurmConfig, list[str]]:
    """``cfg`` shrunk to the largest node, and what changed (for sweeps and experiments)."""
    changes = {}
    for opt in fit_options(config_request(cfg), nodes):
        key, _, value = opt.removeprefix("--").partition("=")
        if key == "cpus-per-task":
            changes["cpus_per_task"] = int(value)
        elif key == "mem":
            changes["mem_gb"] = max(1, parse_mem_mb(value) // 1024)
        elif key == "gres":
            changes["gpus"] = None if value == "none" else value
        elif key == "nodes":
            changes["nodes"] = int(value)
    said = [f"{k}={v!r} (was {getattr(cfg, k)!r})" for k, v in changes.items()]
    return dataclasses.replace(cfg, **changes), said


def run_sbatch(argv: list[str], *, what: str) -> str:
    """``sbatch --parsable ARGV``; returns the job id.

    Raises:
        FileNotFoundError: no sbatch on PATH.
        RuntimeError: sbatch refused (its message, on one line).
    """
    if shutil.which("sbatch") is None:
        raise FileNotFoundError(f"sbatch is not on PATH; {what} needs a SLURM client (or run it locally)")
    r = subprocess.run(["sbatch", "--parsable", *argv], capture_output=True, text=True)
    if r.returncode != 0:
        reason = " ".join(r.stderr.split()) or f"exit {r.returncode}"
        raise RuntimeError(f"sbatch refused {what}: {reason}")
    return r.stdout.strip().split(";")[0]


def submit(job: str | Path, job_args: tuple[str, ...] = (), sbatch_args: tuple[str, ...] = (), *,
           fit: bool = False) -> tuple[str, list[str]]:  # fmt: skip
    """Preflight, then ``sbatch --parsable``; returns the job id and the options ``fit`` added.

    Raises:
        FileNotFoundError: no such job file, or no sbatch/sinfo on PATH.
        ResourceError: the job fits no node (and ``fit`` is off).
        RuntimeError: sbatch refused the job (its message included).
    """
    job = Path(job)
    if not job.is_file():
        raise FileNotFoundError(f"job file {job} not found; list them with: ls slurm/*.slurm")
    if shutil.which("sbatch") is None:
        raise FileNotFoundError(f"sbatch is not on PATH; run the job here with: bash {job}")
    text = job.read_text()
    req = file_request(text, sbatch_args)
    nodes = cluster_nodes(req.partition)
    added: list[str] = []
    if fit:
        added = fit_options(req, nodes)
        sbatch_args = (*sbatch_args, *added)
        req = file_request(text, sbatch_args)
    check_fit(req, nodes, job=str(job))
    return run_sbatch([*sbatch_args, str(job), *job_args], what=str(job)), added
