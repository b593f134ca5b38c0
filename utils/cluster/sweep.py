"""Sweeps: a grid of (model, seed) training runs submitted as one job array with submitit.

``plan_sweep`` lists the runs, ``check_stores`` refuses a sweep whose clip
stores are missing, ``submit_sweep`` sends them (SLURM array or local
processes) and writes ``<results>/sweeps/<name>/sweep.json``, and
``sweep_status`` reads that back with each task's state from SLURM's
accounting (or, for local sweeps, the run records), its top-1 once its run
record is complete, and for a failed task the reason and the log path.
Nothing is ever unpickled from the sweep folder. Each task is
checkpointable: on preemption or time-out the engine saves a checkpoint and
submitit requeues the task, which resumes the same run id.

The cluster is always named (``slurm`` or ``local``): submitit's AutoExecutor
picks SLURM whenever ``sbatch`` is on PATH, even without a controller, and its
``debug`` cluster drops into pdb on an exception.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import submitit

from models.registry import get_model
from utils.cluster.accounting import job_states
from utils.cluster.jobs import job_models
from utils.cluster.profile import SlurmConfig
from utils.cluster.sbatch import sanitize_job_name
from utils.cluster.shell import check_directive, check_name, check_one_line
from utils.cluster.submit import check_fit, cluster_nodes, config_request
from utils.core.records import RecordError, make_run_id, read_record, write_json

__all__ = [
    "SweepTask",
    "TaskStatus",
    "TrainTask",
    "check_stores",
    "default_cluster",
    "make_executor",
    "plan_sweep",
    "submit_sweep",
    "sweep_status",
]

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
    data: dict | None = None,
    preset: dict | None = None,
    store: str | None = None,
    dry_run: bool = False,
) -> list[SweepTask]:
    """The grid: every model x seeds 0..seeds-1.

    Each model trains on ``store`` when given, else on
    ``<data_root>/wlasl<subset>_<size>`` where size is ``model["size"]`` when
    set (``--size``) and the model's default store side otherwise.

    Args:
        train, model, data: RunConfig section overrides for every run
            (``{"epochs": 10}``, ``{"frames": 8, "size": 64}``, ``{"batch_size": 4}``).
        preset: a YAML preset (``--config``) under those overrides.

    Raises:
        ValueError: no models, seeds < 1, an unknown model or a bad sweep name.
    """
    check_name(name, "sweep name (--name)")
    known = job_models()
    if not models or seeds < 1:
        raise ValueError(f"a sweep needs >= 1 model and seeds >= 1, received models={models}, seeds={seeds}")
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected names from {known}")
    preset = preset or {}
    tasks = []
    for model_name in models:
        spec = get_model(model_name)
        size = (model or {}).get("size") if spec.input == "clip" else None
        root = store or (f"{data_root}/wlasl{subset}_{size}" if size else f"{data_root}/{spec.store_name(subset)}")
        for seed in range(seeds):
            run_id = make_run_id(model_name, root, seed) + ("-dryrun" if dry_run else "")
            config = {
                "model": {**preset.get("model", {}), **(model or {}), "name": model_name},
                "data": {**preset.get("data", {}), **(data or {}), "root": root},
                "train": {**preset.get("train", {}), **(train or {}), "seed": seed},
                "run_id": run_id,
                "results": results,
                "dry_run": dry_run,
                "tags": {"sweep": name},
            }
            tasks.append(SweepTask(model_name, seed, run_id, config))
    return tasks


def check_stores(tasks: list[SweepTask], *, subset: int | None = None) -> None:
    """Refuse before submitting when a clip store the grid trains on is missing or empty.

    Raises:
        FileNotFoundError: names each missing store, the models that need it and
            the preprocessing command that makes it.
    """
    needs: dict[str, list[str]] = {}
    for t in tasks:
        needs.setdefault(t.config["data"]["root"], []).append(t.model)
    bad = []
    for root, models in needs.items():
        if not (Path(root) / "manifest.csv").is_file():
            size = Path(root).name.rpartition("_")[2]
            stage = "main/extract_keypoints.py" if size == "pose" else "main/preprocess.py"
            hint = (f"python {stage} --metadata raw/WLASL_v0.3.json --videos raw/videos"
                    + (f" --subset {subset}" if subset else "") + (f" --size {size}" if size.isdigit() else "")
                    + f" --out {root}")  # fmt: skip
            bad.append(f"{root} (for {', '.join(sorted(set(models)))}; make it with: {hint})")
    if bad:
        raise FileNotFoundError(f"no clip store at {'; '.join(bad)}; or point the sweep at a store with --store/--size")


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


def make_executor(cluster: str, folder: Path, slurm: SlurmConfig | None, *, timeout_min: int | None, job_name: str,
                  parallel: int | None = None):  # fmt: skip
    """A submitit executor whose SLURM parameters come from the profile (:meth:`SlurmConfig.submitit_parameters`).

    ``timeout_min`` (a sweep's wall time per task) overrides the profile's ``time_min``.

    The folder names the job's log files in ``#SBATCH`` lines: one line, and
    only the characters such a line may hold.
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster expected one of {list(CLUSTERS)}, received {cluster!r}")
    check_one_line(str(folder), "sweep folder")
    if cluster == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=timeout_min or (slurm.time_min if slurm else None) or 60)
        return ex
    check_directive(str(folder.resolve()), "the sweep folder (from --results) in #SBATCH --output")
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=5)
    params = (slurm or SlurmConfig()).submitit_parameters()
    params.setdefault("signal_delay_s", 120)
    params.setdefault("cpus_per_task", 1)
    params["time"] = timeout_min or params.get("time") or 60
    if parallel:
        params["array_parallelism"] = parallel
    ex.update_parameters(job_name=sanitize_job_name(job_name), **params)
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
        name: the sweep's folder name (letters, digits, ``_.-``).
        results: results root.
        cluster: ``slurm`` or ``local`` (never guessed here: see the module docstring).
        slurm: resources for each task (the profile's ``train`` kind).
        timeout_min: wall time per task; the engine checkpoints before it runs out.
        parallel: at most this many tasks at once (SLURM).
        task_class: the checkpointable callable (a stand-in in tests).

    Returns:
        The sweep file ``<results>/sweeps/<name>/sweep.json`` and the submitit jobs.

    Raises:
        ValueError: a bad name; ResourceError: the tasks fit no node (nothing submitted).
        RuntimeError: the scheduler refused the array (one line; no files left behind).
    """
    check_name(name, "sweep name (--name)")
    folder = Path(results) / "sweeps" / name
    if cluster == "slurm":
        cfg = slurm or SlurmConfig()
        check_fit(config_request(cfg), cluster_nodes(cfg.partition), job=f"sweep {name}",
                  fix="python main/sweep.py ... --fit (or --cpus N --mem GB --no-gpu)")  # fmt: skip
    existed = folder.exists()
    ex = make_executor(cluster, folder / "submitit", slurm, timeout_min=timeout_min, job_name=f"sweep-{name}",
                       parallel=parallel)  # fmt: skip
    try:
        # submitit prints sbatch's refusal itself before raising it: the message below says it once.
        with contextlib.redirect_stderr(io.StringIO()), ex.batch():
            jobs = [ex.submit(task_class(t.config)) for t in tasks]
    except Exception as e:  # noqa: BLE001 - submitit raises several types; the user gets one line
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)  # no orphan pickles from a refused array
        reason = " ".join(str(e).split())[-400:]
        raise RuntimeError(f"{cluster} refused sweep {name}: {reason}") from None
    done = [SweepTask(**{**asdict(t), "job_id": str(j.job_id)}) for t, j in zip(tasks, jobs)]
    sweep = {"name": name, "cluster": cluster, "tasks": [asdict(t) for t in done]}
    write_json(folder / "sweep.json", sweep)
    return folder / "sweep.json", jobs


@dataclass
class TaskStatus:
    """One task of a sweep: its scheduler state, top-1 when done, why it failed and where its log is."""

    model: str
    seed: int
    run_id: str
    job_id: str
    state: str
    top1: float | None = None
    reason: str = ""
    log: str = ""
    extra: dict = field(default_factory=dict)


def _local_state(job_id: str, record_status: str | None) -> str:
    """A local task: its run record, or whether its submitit controller process still lives."""
    if record_status == "completed":
        return "COMPLETED"
    if record_status == "failed":
        return "FAILED"
    cmdline = Path(f"/proc/{job_id}/cmdline") if job_id.isdigit() else None
    try:
        alive = cmdline is not None and b"submitit" in cmdline.read_bytes()
    except OSError:
        alive = False
    if alive:
        return "RUNNING"
    return "FAILED" if record_status is None or record_status == "running" else record_status.upper()


def _log_reason(log: Path) -> str:
    """The last line of a task's error log that looks like an error (the reason submitit saw)."""
    try:
        lines = log.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return ""
    # A Python traceback's last line first (``ValueError: ...``), then SLURM's own words.
    for pattern in (r"^[A-Za-z_.]*(Error|Exception|Failed|Interrupt)\b.*:", r"(error:|CANCELLED|DUE TO|Killed)"):
        for line in reversed(lines):
            if re.search(pattern, line.strip()):
                return line.strip()[-300:]
    return ""


def sweep_status(sweep_file: str | Path) -> list[TaskStatus]:
    """Each task's state and, when its run record says completed, its test top-1.

    States come from SLURM's accounting (slurm) or the run records and the
    task processes (local); the run records are read from the results root
    that holds this sweep file; a failed task gets the first line of its
    reason and the path of its log.
    """
    sweep_file = Path(sweep_file)
    if not sweep_file.is_file():
        raise FileNotFoundError(f"no sweep at {sweep_file}; submit one with: python main/sweep.py --models ...")
    try:
        sweep = json.loads(sweep_file.read_text())
        tasks = [(str(t["model"]), int(t["seed"]), str(t["run_id"]), str(t["job_id"])) for t in sweep["tasks"]]
        cluster = sweep["cluster"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{sweep_file}: not a sweep file ({type(e).__name__}: {e})") from None
    results = sweep_file.parent.parent.parent  # <results>/sweeps/<name>/sweep.json
    folder = sweep_file.parent / "submitit"
    slurm_states = job_states(j for *_, j in tasks) if cluster == "slurm" else {}
    out = []
    for model, seed, run_id, job_id in tasks:
        record = None
        record_path = results / "runs" / run_id / "metrics.json"
        status = TaskStatus(model, seed, run_id, job_id, "UNKNOWN")
        if record_path.is_file():
            try:
                record = read_record(record_path)
                status.extra = {"record": record.status, "epochs": record.epochs}
            except RecordError as e:
                status.extra = {"record": f"unreadable: {e}"}
        if cluster == "slurm":
            status.state = slurm_states.get(job_id).state if job_id in slurm_states else "UNKNOWN"
        else:
            status.state = _local_state(job_id, record.status if record else None)
        if record is not None and record.status == "completed":
            status.top1 = record.metrics.get("test", {}).get("top1")
        if status.state not in ("COMPLETED", "RUNNING", "PENDING"):
            log = submitit.core.utils.JobPaths(folder, job_id=job_id).stderr
            status.log = str(log)
            first = (record.error or "").strip().splitlines()[:1] if record is not None else []
            status.reason = first[0] if first else (_log_reason(log) or f"no run record at {record_path}")
        out.append(status)
    return out
