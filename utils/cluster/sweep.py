"""Sweeps: a grid of (model, seed) training runs submitted as one job array with submitit.

``plan_sweep`` lists the runs, ``submit_sweep`` sends them (SLURM array or
local processes) and writes ``<results>/sweeps/<name>/sweep.json``, and
``sweep_status`` reads that back with each task's scheduler state and, once
its run record is written, its top-1. Each task is checkpointable: on
preemption or time-out the engine saves a checkpoint and submitit requeues
the task, which resumes the same run id.

The cluster is always named (``slurm`` or ``local``): submitit's AutoExecutor
picks SLURM whenever ``sbatch`` is on PATH, even without a controller, and its
``debug`` cluster drops into pdb on an exception.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import submitit

from models.registry import get_model, list_models
from utils.cluster.sbatch import SlurmConfig
from utils.core.records import RecordError, make_run_id, read_record, write_json

__all__ = ["SweepTask", "TrainTask", "default_cluster", "plan_sweep", "submit_sweep", "sweep_status"]

CLUSTERS = ("slurm", "local")


@dataclass(frozen=True)
class SweepTask:
    """One run of the grid; ``config`` is a RunConfig as nested dicts."""

    model: str
    seed: int
    run_id: str
    config: dict
    job_id: str = ""


def plan_sweep(
    models: list[str],
    seeds: int,
    *,
    subset: int = 100,
    data_root: str = "data",
    results: str = "results",
    name: str = "sweep",
    train: dict | None = None,
    model: dict | None = None,
    dry_run: bool = False,
) -> list[SweepTask]:
    """The grid: every model x seeds 0..seeds-1, on ``<data_root>/wlasl<subset>_<size>``.

    ``train`` and ``model`` are RunConfig section overrides for every run
    (e.g. ``{"epochs": 10}``, ``{"frames": 8, "size": 64}``).

    Raises:
        ValueError: no models, or seeds < 1.
    """
    if not models or seeds < 1:
        raise ValueError(f"a sweep needs >= 1 model and seeds >= 1, received models={models}, seeds={seeds}")
    known = list_models()
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected names from {known}")
    tasks = []
    for name in models:
        store = f"{data_root}/wlasl{subset}_{get_model(name).size}"
        for seed in range(seeds):
            run_id = make_run_id(name, store, seed) + ("-dryrun" if dry_run else "")
            config = {
                "model": {**(model or {}), "name": name},
                "data": {"root": store},
                "train": {**(train or {}), "seed": seed},
                "run_id": run_id,
                "results": results,
                "dry_run": dry_run,
                "tags": {"sweep": name},
            }
            tasks.append(SweepTask(name, seed, run_id, config))
    return tasks


class TrainTask(submitit.helpers.Checkpointable):
    """Train one configuration; on preemption, checkpoint through the engine, then requeue.

    submitit's own preemption handler (USR2 by default) would stop training
    mid-step; while the engine's :class:`utils.core.preempt.PreemptionFlag` is
    listening the signal is handed to it instead, so the engine saves a full
    checkpoint, raises ``Preempted``, and only then does submitit requeue this
    same task (``checkpoint()`` resubmits it with the same config = run id).
    """

    def __init__(self, config: dict):
        self.config = config

    def train(self, config: dict) -> dict:
        """Run the training; returns a small summary. Overridden by stand-ins in tests."""
        import models  # noqa: F401  (registers every family)
        from models.train import run
        from utils.core.config import config_from_dict

        record = run(config_from_dict(config, where="sweep task"))
        return {"run_id": record.run_id, "status": record.status, "top1": record.metrics.get("test", {}).get("top1")}

    def __call__(self) -> dict:
        from utils.core.preempt import Preempted

        sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        requeue = signal.getsignal(sig)  # submitit's checkpoint-and-requeue handler

        def to_engine(signum, frame):
            engine = signal.getsignal(signal.SIGUSR1)
            if callable(engine) and engine is not requeue:
                engine(signal.SIGUSR1, frame)  # the engine checkpoints at its next step
            elif callable(requeue):
                requeue(signum, frame)  # not training (yet): requeue right away

        signal.signal(sig, to_engine)
        try:
            return self.train(self.config)
        except Preempted:
            if not callable(requeue):
                raise
            signal.signal(sig, requeue)
            requeue(sig, None)  # pickles checkpoint(), requeues, exits
            raise
        finally:
            if callable(requeue):
                signal.signal(sig, requeue)


def default_cluster() -> str:
    """``slurm`` when a controller answers (``sinfo``), else ``local``."""
    if shutil.which("sinfo") is None:
        return "local"
    try:
        ok = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    return "slurm" if ok else "local"


def _executor(cluster: str, folder: Path, slurm: SlurmConfig | None, timeout_min: int, parallel: int | None):
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster expected one of {list(CLUSTERS)}, received {cluster!r}")
    if cluster == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=timeout_min)
        return ex
    s = slurm or SlurmConfig()
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=5)
    params = {"time": timeout_min, "cpus_per_task": s.cpus_per_task or 1, "signal_delay_s": s.signal_s or 120}
    optional = {"partition": s.partition, "account": s.account, "qos": s.qos, "gres": s.gpus,
                "constraint": s.constraint, "mem": f"{s.mem_gb}GB" if s.mem_gb else None,
                "mail_user": s.mail_user, "mail_type": s.mail_type, "array_parallelism": parallel}  # fmt: skip
    params.update({k: v for k, v in optional.items() if v is not None})
    setup = [f"module load {m}" for m in s.modules] + [f"export {k}={v!r}" for k, v in s.env]
    if setup:
        params["setup"] = setup
    ex.update_parameters(**params)
    return ex


def submit_sweep(
    tasks: list[SweepTask],
    *,
    name: str,
    results: str | Path = "results",
    cluster: str,
    slurm: SlurmConfig | None = None,
    timeout_min: int = 60,
    parallel: int | None = None,
    task_class: type[TrainTask] = TrainTask,
) -> tuple[Path, list]:
    """Submit the grid as one array.

    Args:
        tasks: from :func:`plan_sweep`.
        name: the sweep's folder name.
        results: results root.
        cluster: ``slurm`` or ``local`` (never guessed here: see the module docstring).
        slurm: resources for each task (the profile's ``train`` kind).
        timeout_min: wall time per task; the engine checkpoints before it runs out.
        parallel: at most this many tasks at once (SLURM).
        task_class: the checkpointable callable (a stand-in in tests).

    Returns:
        The sweep file ``<results>/sweeps/<name>/sweep.json`` and the submitit jobs.
    """
    folder = Path(results) / "sweeps" / name
    ex = _executor(cluster, folder / "submitit", slurm, timeout_min, parallel)
    if cluster == "slurm":
        ex.update_parameters(job_name=f"sweep-{name}")
    with ex.batch():
        jobs = [ex.submit(task_class(t.config)) for t in tasks]
    done = [SweepTask(**{**asdict(t), "job_id": str(j.job_id)}) for t, j in zip(tasks, jobs)]
    sweep = {"name": name, "cluster": cluster, "folder": str(folder / "submitit"), "results": str(results),
             "tasks": [asdict(t) for t in done]}  # fmt: skip
    write_json(folder / "sweep.json", sweep)
    return folder / "sweep.json", jobs


@dataclass
class TaskStatus:
    model: str
    seed: int
    run_id: str
    job_id: str
    state: str
    top1: float | None = None
    extra: dict = field(default_factory=dict)


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` in one sacct call (accounting must be on, see slurm/local_cluster.sh)."""
    cmd = ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return {j: f"UNKNOWN (sacct: {type(e).__name__})" for j in job_ids}
    found = dict(line.split("|", 1) for line in out.splitlines() if "|" in line)
    missing = [j for j in job_ids if j not in found]
    if missing:  # just submitted or just started: accounting may not list it yet, the queue does
        q = subprocess.run(["squeue", "-h", "-j", ",".join(missing), "-o", "%i|%T"], capture_output=True, text=True)
        found.update(line.split("|", 1) for line in q.stdout.splitlines() if "|" in line)
    return {j: (found.get(j) or "UNKNOWN").split()[0] for j in job_ids}


def _local_state(folder: str, job_id: str) -> str:
    # A local job's process belongs to the submitting Python; afterwards only its files tell.
    paths = submitit.core.utils.JobPaths(Path(folder), job_id=job_id)
    if paths.result_pickle.exists():
        outcome, _ = submitit.core.utils.pickle_load(paths.result_pickle)
        return "COMPLETED" if outcome == "success" else "FAILED"
    return "RUNNING" if paths.submitted_pickle.exists() else "UNKNOWN"


def sweep_status(sweep_file: str | Path) -> list[TaskStatus]:
    """Each task's scheduler state and, when its run record says completed, its test top-1."""
    sweep_file = Path(sweep_file)
    if not sweep_file.is_file():
        raise FileNotFoundError(f"no sweep at {sweep_file}; submit one with: python main/sweep.py --models ...")
    sweep = json.loads(sweep_file.read_text())
    ids = [t["job_id"] for t in sweep["tasks"]]
    if sweep["cluster"] == "slurm":
        states = _slurm_states(ids)
    else:
        states = {j: _local_state(sweep["folder"], j) for j in ids}
    out = []
    for t in sweep["tasks"]:
        status = TaskStatus(t["model"], t["seed"], t["run_id"], t["job_id"], states[t["job_id"]])
        record_path = Path(sweep["results"]) / "runs" / t["run_id"] / "metrics.json"
        if record_path.is_file():
            try:
                record = read_record(record_path)
            except RecordError as e:
                status.extra = {"record": f"unreadable: {e}"}
                out.append(status)
                continue
            status.extra = {"record": record.status, "epochs": record.epochs}
            if record.status == "completed":
                status.top1 = record.metrics.get("test", {}).get("top1")
        out.append(status)
    return out
