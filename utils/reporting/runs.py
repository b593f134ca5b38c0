"""Collect run records under a results root for the report.

Everything the report knows about a run comes from its ``metrics.json``
(read with :func:`utils.core.records.read_record`), found recursively, so plain
runs (``results/runs/<run_id>/``) and tuning trials (wherever the tuner keeps
them under the results root) are read the same way. A record that is
unreadable or of another schema version is kept as a *skipped* entry with its
reason: one broken file never stops the report.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from models.registry import get_model
from utils.core.records import RecordError, RunRecord, read_record

__all__ = [
    "LoadedRun",
    "RunSet",
    "collect_runs",
    "display_name",
    "is_trial",
    "metric_value",
    "model_sort_key",
    "subset_of",
]

def model_sort_key(model: str) -> tuple[int, str]:
    """Table order from the model's registry entry (``ModelSpec.order``); unknown models come after, by name."""
    try:
        return (get_model(model).order, model)
    except KeyError:
        return (10**9, model)


def display_name(model: str) -> str:
    """The registry's display name (``movinet_a3`` -> ``MoViNet-A3``); an unknown model keeps its name."""
    try:
        return get_model(model).display
    except KeyError:
        return model


# A store directory named like ``wlasl100_224``, ``WLASL2000`` or ``mini3_64``:
# letters, the class count, then an optional ``_``/``-`` suffix (main/preprocess.py's examples).
_STORE_NAME = re.compile(r"[A-Za-z]+(\d+)(?:[_-]|$)")


def subset_of(record: RunRecord) -> int | None:
    """The subset (number of classes) a run was trained on, or None when unknown.

    The run record is the only source the report reads, so the subset is
    taken from it, in this order:

    1. ``record.env["num_classes"]``: the engines record the clip store's
       class count there;
    2. the name of the clip store directory in ``config["data"]["root"]``,
       ``wlasl100_224`` -> 100 (the naming of main/preprocess.py's examples).

    Args:
        record: a validated run record.

    Returns:
        The number of classes, or None if neither source gives one.
    """
    n = record.env.get("num_classes")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    root = (record.config.get("data") or {}).get("root") if isinstance(record.config, dict) else None
    if isinstance(root, str) and root:
        m = _STORE_NAME.match(Path(root.rstrip("/")).name)
        if m:
            return int(m.group(1))
    return None


def is_trial(record: RunRecord) -> bool:
    """A tuning trial: tagged with both ``study`` and ``trial`` (see the tuners)."""
    return "study" in record.tags and "trial" in record.tags


def metric_value(record: RunRecord, split: str, key: str) -> float:
    """``record.metrics[split][key]`` as a float; NaN when absent or not a number."""
    value = (record.metrics.get(split) or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


@dataclass
class LoadedRun:
    """One readable record and where it lives.

    Attributes:
        record: the validated run record.
        run_dir: the directory holding its metrics.json (and history.csv, predictions_test.csv).
        subset: :func:`subset_of` the record.
    """

    record: RunRecord
    run_dir: Path
    subset: int | None

    @property
    def dry_run(self) -> bool:
        return bool(self.record.config.get("dry_run")) if isinstance(self.record.config, dict) else False


@dataclass
class RunSet:
    """The records under a results root, sorted for the report.

    Attributes:
        completed: completed plain runs (averaged over seeds).
        best_trials: the best completed trial of each tuning study (by val top-1).
        others: runs not averaged in: failed, running, stopped, dry runs; with
            the reason in ``reasons[run_dir]``.
        skipped: ``(path, reason)`` of records that could not be read or validated.
        trials: every readable trial record (completed or not).
    """

    completed: list[LoadedRun] = field(default_factory=list)
    best_trials: list[LoadedRun] = field(default_factory=list)
    others: list[LoadedRun] = field(default_factory=list)
    reasons: dict[Path, str] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    trials: list[LoadedRun] = field(default_factory=list)

    def all_loaded(self) -> list[LoadedRun]:
        """Plain runs and trials that were read, table runs first."""
        unique, ids = [], set()
        for r in self.completed + self.best_trials + self.others + self.trials:
            if id(r) not in ids:
                ids.add(id(r))
                unique.append(r)
        return unique

    def find(self, run_id: str) -> LoadedRun | None:
        """The loaded run with this id (plain runs first, then trials)."""
        for r in self.all_loaded():
            if r.record.run_id == run_id:
                return r
        return None


def _trial_key(t: LoadedRun) -> tuple:
    # keras-tuner trial ids are strings such as "07"; order numeric ids as numbers.
    trial = str(t.record.tags.get("trial"))
    return (0, float(trial), "") if trial.replace(".", "", 1).isdigit() else (1, 0.0, trial)


def _best_of_study(trials: list[LoadedRun]) -> LoadedRun | None:
    # Model selection uses val, never test (DESIGN.md). NaN never wins; max()
    # keeps the first of equal scores, so a tie goes to the earliest trial.
    done = [
        t for t in trials if t.record.status == "completed" and not math.isnan(metric_value(t.record, "val", "top1"))
    ]
    if not done:
        return None
    return max(sorted(done, key=_trial_key), key=lambda t: metric_value(t.record, "val", "top1"))


def collect_runs(results: str | Path, *, include_dry_runs: bool = False) -> RunSet:
    """Read every ``metrics.json`` under ``results`` (recursively).

    Args:
        results: the results root (``results/``).
        include_dry_runs: average ``--dry-run`` runs in as well (the demo does);
            by default they are listed apart, their numbers mean nothing.

    Returns:
        A RunSet; unreadable or invalid records are in ``skipped``, not raised.
    """
    runs = RunSet()
    studies: dict[str, list[LoadedRun]] = {}
    seen: dict[tuple, Path] = {}
    for path in sorted(Path(results).rglob("metrics.json")):
        try:
            record = read_record(path)
        except (RecordError, TypeError, ValueError) as e:
            runs.skipped.append((path, str(e)))
            continue
        # A copied run directory (a backup, a synced scratch folder) must not count twice.
        key = (record.run_id, str(record.tags.get("study")), str(record.tags.get("trial")))
        if key in seen:
            runs.skipped.append((path, f"duplicate of run {record.run_id} in {seen[key]}; counted once"))
            continue
        seen[key] = path.parent
        loaded = LoadedRun(record=record, run_dir=path.parent, subset=subset_of(record))
        if is_trial(record):
            runs.trials.append(loaded)
            studies.setdefault(str(record.tags["study"]), []).append(loaded)
            if record.status != "completed":
                runs.others.append(loaded)
                runs.reasons[loaded.run_dir] = record.status
        elif record.status != "completed":
            runs.others.append(loaded)
            runs.reasons[loaded.run_dir] = record.status
        elif loaded.dry_run and not include_dry_runs:
            runs.others.append(loaded)
            runs.reasons[loaded.run_dir] = "dry run"
        else:
            runs.completed.append(loaded)
    for study in sorted(studies):
        best = _best_of_study(studies[study])
        if best is not None:
            runs.best_trials.append(best)
    return runs
