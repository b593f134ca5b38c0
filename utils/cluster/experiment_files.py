"""Where an experiment keeps its things under its results folder (shared by running and status).

``jobs/<name>-<stage>.slurm`` the job files, ``logs/<name>-<stage>-<job>_<task>.out``
their logs, ``runs/<run id>/`` the run records, ``submitted.json`` the job ids
(never states: SLURM has those), and a store is done when its
``prepare_report.json`` says complete.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from utils.cluster.experiment import Plan, Stage
from utils.cluster.sbatch import sanitize_job_name
from utils.core.records import RecordError, read_record

__all__ = ["job_file", "job_log", "job_name", "run_status_of", "store_done", "submitted"]

_JOB_ID = re.compile(r"\d+(_\d+)?")


def job_name(plan: Plan, stage: Stage) -> str:
    return sanitize_job_name(f"{plan.exp.name}-{stage.name}")


def job_file(plan: Plan, stage: Stage) -> Path:
    return Path(plan.exp.results) / "jobs" / f"{job_name(plan, stage)}.slurm"


def job_log(plan: Plan, stage: Stage, job_id: str) -> Path:
    """Where SLURM writes a job's (or array task's ``123_4``) output."""
    array_id, _, task = job_id.partition("_")
    name = f"{job_name(plan, stage)}-{array_id}_{task}" if stage.kind != "report" else f"{job_name(plan, stage)}-{job_id}"
    return Path(plan.exp.results) / "logs" / f"{name}.out"


def store_done(out: str | Path) -> bool:
    """A clip store whose every shard finished (its prepare_report.json says complete)."""
    try:
        return bool(json.loads((Path(out) / "prepare_report.json").read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def run_status_of(run_dir: Path) -> str | None:
    """The status in a run's record (None: no readable record yet)."""
    try:
        return read_record(run_dir / "metrics.json").status
    except (FileNotFoundError, RecordError, TypeError, ValueError):
        return None


def submitted(plan: Plan) -> dict:
    """``<results>/submitted.json``: job ids by stage, store and run (no states: SLURM has those)."""
    path = Path(plan.exp.results) / "submitted.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"stores": {}, "runs": {}, "report": None}
    ok = isinstance(data, dict) and all(isinstance(data.get(k), dict) for k in ("stores", "runs"))
    if not ok:
        return {"stores": {}, "runs": {}, "report": None}
    # Only job ids reach sacct/scontrol: anything else in the file is dropped.
    for key in ("stores", "runs"):
        data[key] = {str(k): v for k, v in data[key].items() if isinstance(v, str) and _JOB_ID.fullmatch(v)}
    if not (isinstance(data.get("report"), str) and _JOB_ID.fullmatch(data["report"])):
        data["report"] = None
    if not isinstance(data.get("local"), dict):
        data.pop("local", None)
    return data
