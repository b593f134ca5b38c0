"""Run records: the file contract between training, tuning and reporting.

A run lives in ``results/runs/<run_id>/``::

    config.json        the resolved RunConfig
    history.csv        one row per epoch (HISTORY_COLUMNS)
    metrics.json       the RunRecord (written at start, every epoch, and at the end)
    checkpoints/       state.json (models/lifecycle.py) and the engine's files
    scores_<split>.npz, predictions_<split>.csv, per_class_<split>.csv,
    confusion_<split>.csv, plots/confusion_test.png   (models/evaluation.py)

Both engines write this same set through ``models.lifecycle.Run``.

``utils/report.py`` reads only ``metrics.json`` files and validates them with
:func:`validate_record`, from the type hints of :class:`RunRecord` (the one
coercion, :func:`utils.core.config.coerce`); an old or broken record is
reported, not fatal, and a metric an older record lacks reads as NaN.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

from utils.core.config import coerce
from utils.core.files import atomic_write_text
from utils.core.metrics import HISTORY_COLUMNS, METRICS, OBJECTIVES, SPLIT_KEYS, metric

__all__ = [
    "FRAMEWORKS",
    "SCHEMA_VERSION",
    "STATUSES",
    "HISTORY_COLUMNS",
    "SPLIT_METRIC_KEYS",
    "RecordError",
    "RunRecord",
    "append_history",
    "best_trial",
    "objective_value",
    "read_history",
    "environment",
    "git_revision",
    "read_record",
    "record_or_none",
    "validate_record",
    "write_json",
    "write_record",
]

SCHEMA_VERSION = 1
# cancelled: a user's scancel ended it (checkpoint kept: a rerun resumes); stopped: preempted, it requeues.
Status = Literal["running", "completed", "failed", "stopped", "cancelled"]
STATUSES = Status.__args__
# Who wrote the record: a training engine, or models/ensemble.py (fused scores of other runs).
Framework = Literal["keras", "torch", "ensemble"]
FRAMEWORKS = Framework.__args__
# Keys of metrics[split] after the final evaluation (utils/core/metrics.py: METRICS and n).
SPLIT_METRIC_KEYS = SPLIT_KEYS

# The structure inside the record's fields, as types: readers (the report, tuning) index into
# these without further checks, so a wrong type stops at validation, by name. Other keys pass.
SplitMetrics = TypedDict("SplitMetrics", {**{m.key: float | None for m in METRICS}, "n": int | None}, total=False)


class Best(TypedDict, total=False):
    epoch: int | None
    val_top1: float | None
    val_loss: float | None


class Tags(TypedDict, total=False):
    study: str | int
    trial: str | int
    plan: str
    members: list[str]
    weights: list[float]


class RecordConfig(TypedDict, total=False):
    model: dict
    data: dict
    train: dict
    tags: dict
    dry_run: bool
    members: list[str]


class Env(TypedDict, total=False):
    num_classes: int | None
    params: float | None


class RecordError(ValueError):
    """A run record that does not follow the schema (names the file and field)."""


@dataclass
class RunRecord:
    """What one training run did; ``metrics.json`` holds it as JSON.

    Attributes:
        schema_version: bumped when fields change meaning.
        run_id: stable id (model, data, seed), so a requeued job resumes its run.
        model: registry name, e.g. ``movinet_a3``.
        framework: ``keras`` or ``torch`` (the engine), or ``ensemble``
            (models/ensemble.py: ``tags`` name the member runs and weights).
        config: the resolved RunConfig as a dict.
        epochs: epochs completed.
        best: ``{"epoch": k, "val_top1": x}`` of the checkpoint kept.
        metrics: ``{"val": {...}, "test": {...}}`` with SPLIT_METRIC_KEYS,
            evaluated with the best-on-val weights (empty until the end).
        status: one of STATUSES.
        error: the error message and traceback when failed.
        wall_s: seconds of wall time, summed over resumes.
        env: git revision, SLURM job id, host, versions, parameter count.
        tags: free labels, e.g. ``{"study": ..., "trial": ...}`` for tuning.
    """

    run_id: str
    model: str
    framework: Framework
    config: RecordConfig
    epochs: int = 0
    best: Best = field(default_factory=dict)
    metrics: dict[str, SplitMetrics] = field(default_factory=dict)
    status: Status = "running"
    error: str | None = None
    wall_s: float = 0.0
    env: Env = field(default_factory=dict)
    tags: Tags = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def write_json(path: str | Path, obj) -> None:
    """Atomic JSON write (temp file + rename)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_record(run_dir: str | Path, record: RunRecord) -> Path:
    path = Path(run_dir) / "metrics.json"
    write_json(path, record.to_dict())
    return path


def append_history(run_dir: str | Path, row: dict) -> None:
    """Add (or replace, on resume) the row of ``row['epoch']`` in history.csv, atomically."""
    path = Path(run_dir) / "history.csv"
    rows = [r for r in read_history(run_dir) if int(r["epoch"]) != int(row["epoch"])]
    rows.append({k: row.get(k, "") for k in HISTORY_COLUMNS})
    rows.sort(key=lambda r: int(r["epoch"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_history(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def validate_record(data: dict, source: str | Path = "record") -> RunRecord:
    """Check a loaded ``metrics.json`` against :class:`RunRecord`'s type hints and return it typed.

    A completed run needs ``metrics["val"]`` and ``metrics["test"]``; a metric
    that an older record lacks (one added to :data:`utils.core.metrics.METRICS`
    since) becomes NaN. Keys the schema does not know are kept.

    Raises:
        RecordError: names the file, the field, what was expected and received.
    """
    if not isinstance(data, dict):
        raise RecordError(f"{source}: expected a JSON object, received {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(
            f"{source}: schema_version expected {SCHEMA_VERSION}, received {version!r}; "
            "the record comes from another version of the suite"
        )
    try:
        record = coerce(RunRecord, data, str(source), allow_nan=True, keep_unknown=True)
    except (TypeError, KeyError, ValueError) as e:
        raise RecordError(e.args[0] if isinstance(e, KeyError) else str(e)) from None
    if record.status == "completed":
        for split in ("val", "test"):
            if split not in record.metrics:
                raise RecordError(f"{source}: completed run without metrics['{split}']")
    _check_figures(record, source)
    for split, values in record.metrics.items():
        record.metrics[split] = {**{k: (0 if k == "n" else math.nan) for k in SPLIT_KEYS}, **values}
    if record.framework == "ensemble":
        _check_ensemble(record, source)
    return record


def _check_figures(record: RunRecord, source) -> None:
    """Every figure the record holds is one a run can produce: within its metric's bounds, and a number unless its
    split had no clips (``n`` 0: an empty split's metrics are NaN). Checked before missing metrics read as NaN, so
    an older record that lacks a metric stays valid; a report never averages a NaN or an impossible 5700% top-1."""
    known = {m.key: m for m in METRICS}
    for split, values in record.metrics.items():
        n = values.get("n")
        if n is not None and n < 0:
            raise RecordError(f"{source}: metrics['{split}']['n'] expected a clip count >= 0, received {n}")
        for key, value in values.items():
            if key not in known or value is None:
                continue
            lo, hi = known[key].bounds
            if not math.isfinite(value) and (n is None or n > 0):
                raise RecordError(f"{source}: metrics['{split}']['{key}'] expected a number (it is NaN only for an "
                                  f"empty split), received {value} on {n if n is not None else 'an unknown number of'} "
                                  "clips; the run's evaluation failed: rerun it")  # fmt: skip
            if math.isfinite(value) and not lo <= value <= hi:
                raise RecordError(f"{source}: metrics['{split}']['{key}'] expected {lo:g}..{hi:g}, received {value}; "
                                  "the record was edited or damaged")  # fmt: skip
    for key in ("val_top1", "val_loss"):
        value = record.best.get(key)
        lo, hi = known[key[4:]].bounds
        if value is not None and math.isfinite(value) and not lo <= value <= hi:
            raise RecordError(f"{source}: best['{key}'] expected {lo:g}..{hi:g}, received {value}; the record was "
                              "edited or damaged")  # fmt: skip


def _check_ensemble(record: RunRecord, source) -> None:
    """An ensemble (models/ensemble.py) names its member runs and their weights; the report shows them."""
    members, weights = record.tags.get("members"), record.tags.get("weights")
    if not members or len(members) < 2:
        raise RecordError(f"{source}: tags['members'] of an ensemble expected a list of two or more run ids, "
                          f"received {members!r}")  # fmt: skip
    if weights is None or len(weights) != len(members):
        raise RecordError(f"{source}: tags['weights'] of an ensemble expected a list of {len(members)} numbers "
                          f"(one per member), received {weights!r}")  # fmt: skip
    models = record.config.get("members")
    if models is None or len(models) != len(members):
        raise RecordError(f"{source}: config['members'] of an ensemble expected a list of {len(members)} model "
                          f"names, received {models!r}")  # fmt: skip


def objective_value(record: RunRecord, objective: str) -> float:
    """A tuning objective (``val_top1``, ``val_loss``, ... :data:`utils.core.metrics.OBJECTIVES`) as the record
    holds it: the final val evaluation of the best-on-val weights (``metrics["val"]``), else the best epoch's
    figure (``best["val_<key>"]``); NaN when neither is there."""
    key = OBJECTIVES[objective]
    value = record.metrics.get("val", {}).get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = record.best.get(f"val_{key}")
    return math.nan if value is None else float(value)


def _trial_order(record: RunRecord) -> tuple:
    # keras-tuner trial ids are strings such as "07"; order numeric ids as numbers.
    trial = str(record.tags.get("trial"))
    return (0, float(trial), "") if trial.replace(".", "", 1).isdigit() else (1, 0.0, trial)


def best_trial(records, objective: str = "val_top1"):
    """The best completed trial of a study by its objective, as its run record holds it.

    The one rule for tuning (``best.json``) and the report (its best-trial row):
    NaN never wins; a tie goes to the earliest trial (numeric trial order).
    ``records`` are RunRecords or objects with a ``.record``; returns the item, or None.
    """
    sign = 1.0 if metric(OBJECTIVES[objective]).higher_better else -1.0
    best, best_key = None, None
    for item in sorted(records, key=lambda r: _trial_order(getattr(r, "record", r))):
        record = getattr(item, "record", item)
        value = objective_value(record, objective) if record.status == "completed" else math.nan
        if math.isfinite(value) and (best_key is None or sign * value > best_key):
            best, best_key = item, sign * value
    return best


def read_record(path: str | Path) -> RunRecord:
    """Load and validate one ``metrics.json``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: unreadable ({e})") from None
    return validate_record(data, path)


def record_or_none(run_dir: str | Path) -> RunRecord | None:
    """A run folder's record, or None while it has none or it cannot be read (a plan's task that is not done)."""
    try:
        return read_record(Path(run_dir) / "metrics.json")
    except (FileNotFoundError, RecordError, TypeError, ValueError):
        return None


def git_revision(cwd: str | Path | None = None) -> str | None:
    root = Path(cwd) if cwd else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment(**extra) -> dict:
    """Where and with what a run ran: git revision, SLURM job, host, versions."""
    env = {
        "git_rev": git_revision(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "host": platform.node(),
        "python": sys.version.split()[0],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    env.update(extra)
    return env
