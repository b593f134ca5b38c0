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
:func:`validate_record`; an old or broken record is reported, not fatal.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from utils.core.files import atomic_write_text

__all__ = [
    "FRAMEWORKS",
    "SCHEMA_VERSION",
    "STATUSES",
    "HISTORY_COLUMNS",
    "SPLIT_METRIC_KEYS",
    "RecordError",
    "RunRecord",
    "append_history",
    "read_history",
    "environment",
    "git_revision",
    "make_run_id",
    "read_record",
    "validate_record",
    "write_json",
    "write_record",
]

SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "failed", "stopped")
# Who wrote the record: a training engine, or models/ensemble.py (fused scores of other runs).
FRAMEWORKS = ("keras", "torch", "ensemble")
# Per-epoch keys every engine emits (train_* on the training split, val_* on val).
HISTORY_COLUMNS = ("epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top2", "val_top5", "lr", "wall_s")
# Keys of metrics[split] after the final evaluation (see utils/core/metrics.py).
SPLIT_METRIC_KEYS = ("loss", "top1", "top2", "top5", "per_class_top1", "n")


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
    framework: str
    config: dict
    epochs: int = 0
    best: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    status: str = "running"
    error: str | None = None
    wall_s: float = 0.0
    env: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def make_run_id(model: str, data: str | Path, seed: int, name: str | None = None) -> str:
    """``<model>-<store name>-s<seed>``, or ``name`` when given; never a timestamp.

    A requeued SLURM job computes the same id and so resumes its own run.
    """
    if name:
        return _slug(name)
    return _slug(f"{model}-{Path(str(data)).name}-s{seed}")


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
    """Check a loaded ``metrics.json`` against the schema and return it typed.

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
    required = {
        "run_id": str,
        "model": str,
        "framework": str,
        "config": dict,
        "epochs": int,
        "best": dict,
        "metrics": dict,
        "status": str,
        "wall_s": (int, float),
        "env": dict,
    }
    for key, types in required.items():
        if key not in data:
            raise RecordError(f"{source}: missing field '{key}'")
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            raise RecordError(f"{source}: field '{key}' has type {type(data[key]).__name__}")
    if data["framework"] not in FRAMEWORKS:
        raise RecordError(f"{source}: field 'framework' expected one of {FRAMEWORKS}, received {data['framework']!r}")
    if data["status"] not in STATUSES:
        raise RecordError(f"{source}: field 'status' expected one of {STATUSES}, received {data['status']!r}")
    if data["status"] == "completed":
        for split in ("val", "test"):
            got = data["metrics"].get(split)
            if not isinstance(got, dict):
                raise RecordError(f"{source}: completed run without metrics['{split}']")
            missing = [k for k in SPLIT_METRIC_KEYS if k not in got]
            if missing:
                raise RecordError(f"{source}: metrics['{split}'] lacks {missing}")
    # The structure inside the fields: readers (the report, tuning) index into
    # these without further checks, so a wrong type must stop here, by name.
    def bad(where: str, expected: str, value) -> RecordError:
        return RecordError(f"{source}: {where} expected {expected}, received {type(value).__name__} {value!r:.60}")

    def number(value) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))

    if not isinstance(data.get("tags", {}), dict):
        raise bad("field 'tags'", "an object of labels (e.g. {})", data["tags"])
    if not isinstance(data.get("error"), (str, type(None))):
        raise bad("field 'error'", "a message or null", data["error"])
    for key in ("study", "trial"):
        if key in data.get("tags", {}) and not isinstance(data["tags"][key], (str, int)):
            raise bad(f"tags['{key}']", "a string or integer", data["tags"][key])
    for key in ("model", "data", "train", "tags"):
        if key in data["config"] and not isinstance(data["config"][key], dict):
            raise bad(f"config['{key}']", "an object", data["config"][key])
    if not isinstance(data["config"].get("dry_run", False), bool):
        raise bad("config['dry_run']", "true or false", data["config"]["dry_run"])
    for split, values in data["metrics"].items():
        if not isinstance(values, dict):
            raise bad(f"metrics['{split}']", "an object of metric values", values)
        for key in SPLIT_METRIC_KEYS:
            if key in values and not number(values[key]):
                raise bad(f"metrics['{split}']['{key}']", "a number", values[key])
    for key, value in data["best"].items():
        if (key == "epoch" or key.startswith("val_")) and not number(value):
            raise bad(f"best['{key}']", "a number", value)
    if data["framework"] == "ensemble":
        _check_ensemble(data, source, bad)
    for key in ("num_classes", "params"):
        value = data["env"].get(key)
        if not number(value) or (key == "num_classes" and isinstance(value, float)):
            raise bad(f"env['{key}']", "an integer" if key == "num_classes" else "a number", value)
    known = {f for f in RunRecord.__dataclass_fields__}
    return RunRecord(**{k: v for k, v in data.items() if k in known})


def _check_ensemble(data: dict, source, bad) -> None:
    """An ensemble (models/ensemble.py) names its member runs and their weights; the report shows them."""
    members, weights = data["tags"].get("members"), data["tags"].get("weights")
    if not (isinstance(members, list) and len(members) >= 2 and all(isinstance(m, str) for m in members)):
        raise bad("tags['members'] of an ensemble", "a list of two or more run ids", members)
    if not (isinstance(weights, list) and len(weights) == len(members)
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)):  # fmt: skip
        raise bad("tags['weights'] of an ensemble", f"a list of {len(members)} numbers (one per member)", weights)
    models = data["config"].get("members")
    if not (isinstance(models, list) and len(models) == len(members) and all(isinstance(m, str) for m in models)):
        raise bad("config['members'] of an ensemble", f"a list of {len(members)} model names", models)


def read_record(path: str | Path) -> RunRecord:
    """Load and validate one ``metrics.json``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: unreadable ({e})") from None
    return validate_record(data, path)


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
