"""Collect run records under a results root for the report.

Everything the report knows about a run comes from its ``metrics.json``
(read with :func:`utils.core.records.read_record`), found recursively, so plain
runs (``results/runs/<run_id>/``) and tuning trials (wherever the tuner keeps
them under the results root) are read the same way. A record that is
unreadable, of another schema version, of the wrong types, a copy of another,
or whose run id is not a safe file name is kept as a *skipped* entry with its
reason: one broken file never stops the report.

What is not a result is listed apart, never averaged in: failed and stopped
runs, ``running`` ones (shown as *interrupted* when no process holds their
lock, see :mod:`utils.core.runlock`), and dry runs, tuned or not, unless the
caller opts in (the demo does).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from models.registry import get_model
from utils.core.ids import MAX_ID_LEN, is_safe_id
from utils.core.metrics import OBJECTIVES
from utils.core.records import RecordError, RunRecord, best_trial, read_record
from utils.core.runlock import lock_holder, run_is_alive
from utils.reporting.exports import is_export_metrics

__all__ = [
    "LoadedRun",
    "RunSet",
    "Skipped",
    "collect_runs",
    "display_name",
    "is_dry_run",
    "is_trial",
    "safe_file_path",
    "set_apart_unscored",
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
    """The registry's display name (``movinet_a3`` -> ``MoViNet-A3``); an unknown model keeps its name.

    An ensemble's model is its members' joined with ``+`` (models/ensemble.py):
    ``x3d_s+pose_lstm`` -> ``Ensemble: X3D-S + Pose-LSTM``.
    """
    if "+" in model:
        return "Ensemble: " + " + ".join(display_name(m) for m in model.split("+"))
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


# The suffix utils.tuning.study.study_name gives a --dry-run study.
_DRY_STUDY_SUFFIX = "-dryrun"


def is_dry_run(record: RunRecord) -> bool:
    """A ``--dry-run`` run or trial: a few clips and steps, its numbers mean nothing.

    Plain runs carry ``config["dry_run"]``; tuning trials run with the dry
    run's limits already applied and carry ``tags["dry_run"]``. Trials
    recorded before that tag existed are recognised by their study name,
    which ``--dry-run`` ends with ``-dryrun``.
    """
    if record.config.get("dry_run") is True or record.tags.get("dry_run") is True:
        return True
    return is_trial(record) and str(record.tags["study"]).endswith(_DRY_STUDY_SUFFIX)


def safe_file_path(root: str | Path, name: str, *, prefix: str = "", suffix: str = "") -> Path:
    """``root/<prefix><name><suffix>``, refusing a name that is not a plain file name under ``root``.

    Raises:
        ValueError: ``name`` is not a safe id (``utils.core.ids``), or the path would leave ``root``.
    """
    # Run ids become file names (curves/<run_id>.png, confusion_<run_id>.png).
    if not is_safe_id(name):
        raise ValueError(
            f"run_id {str(name)[:80]!r} is not a safe file name: expected 1-{MAX_ID_LEN} letters, digits, '.', '_' "
            "or '-', not starting with '.' or '-'; rename the run directory's run_id in its metrics.json"
        )
    root = Path(root)
    path = root / f"{prefix}{name}{suffix}"
    # Lexical check (no symlinks followed): the name cannot climb out with SAFE_ID, this keeps it so.
    if Path(os.path.normpath(path)).parent != Path(os.path.normpath(root)):
        raise ValueError(f"{path} would be written outside {root}")
    return path


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
        plan: the experiment or sweep it belongs to (``tags["plan"]``, or its folder under
            ``experiments/<name>/`` or ``sweeps/<name>/``); None for a standalone run.
    """

    record: RunRecord
    run_dir: Path
    subset: int | None
    plan: str | None = None

    @property
    def dry_run(self) -> bool:
        return is_dry_run(self.record)


class Skipped(NamedTuple):
    """A record the report could not use: where, why, and a one-word status for the list."""

    path: Path
    reason: str
    status: str = "unreadable"


@dataclass
class RunSet:
    """The records under a results root, sorted for the report.

    Attributes:
        completed: completed plain runs (averaged over seeds).
        best_trials: the best completed trial of each tuning study (by val top-1).
        others: runs not averaged in: failed, running, interrupted, stopped,
            dry runs (a dry study is represented by its best trial); with the
            status in ``reasons[run_dir]`` and an explanation in ``details[run_dir]``.
        skipped: records that could not be used (unreadable, invalid, duplicate, unsafe run id).
        trials: every readable trial record (completed or not).
    """

    completed: list[LoadedRun] = field(default_factory=list)
    best_trials: list[LoadedRun] = field(default_factory=list)
    others: list[LoadedRun] = field(default_factory=list)
    reasons: dict[Path, str] = field(default_factory=dict)
    details: dict[Path, str] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
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

    def set_apart(self, run: LoadedRun, status: str, detail: str = "") -> None:
        self.others.append(run)
        self.reasons[run.run_dir] = status
        if detail:
            self.details[run.run_dir] = detail


def _study_objective(trials: list[LoadedRun]) -> str:
    """The objective the study optimised (its ``study.json`` beside ``runs/``); val top-1 when unknown."""
    try:
        objective = json.loads((trials[0].run_dir.parent.parent / "study.json").read_text()).get("objective")
    except (OSError, ValueError, AttributeError):
        return "val_top1"
    return objective if objective in OBJECTIVES else "val_top1"


def _best_of_study(trials: list[LoadedRun]) -> LoadedRun | None:
    # The study's own objective, by the one rule tuning's best.json uses (utils.core.records.best_trial).
    # Model selection uses val, never test (docs/design.md).
    return best_trial(trials, _study_objective(trials))


def _liveness(run_dir: Path, status: str) -> tuple[str, str]:
    """(status, detail) of an unfinished run, asking its lock whether a process still holds it.

    Only ``running`` can turn into ``interrupted``: a ``stopped`` run was
    preempted on purpose and waits for its requeue, holding no lock.
    """
    if status != "running":
        return status, ("preempted; it resumes when its job is requeued or the command is rerun"
                        if status == "stopped" else "")  # fmt: skip
    alive = run_is_alive(run_dir)
    holder = lock_holder(run_dir)
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
    if alive is False:
        return "interrupted", f"no process holds it any more (last: {who}); rerun the same command to resume it"
    if alive is True:
        return "running", f"held by {who}"
    return "running", "no lock file (a run from before run locks): cannot tell whether it is still alive"


def set_apart_unscored(runs: RunSet, split: str) -> None:
    """Move the completed runs (and best trials) whose ``split`` had no clips out of the table: their figures are
    NaN, and averaging them in would show a mean over fewer runs than the row's n."""
    for group in (runs.completed, runs.best_trials):
        for r in [r for r in group if not (r.record.metrics.get(split) or {}).get("n")
                  and math.isnan(metric_value(r.record, split, "top1"))]:  # fmt: skip
            group.remove(r)
            runs.set_apart(r, f"no {split} clips", f"its {split} split was empty: no figures to show (see its store's "
                           "report)")  # fmt: skip


def collect_runs(results: str | Path, *, include_dry_runs: bool = False) -> RunSet:
    """Read every ``metrics.json`` under ``results`` (recursively).

    Args:
        results: the results root (``results/``).
        include_dry_runs: average ``--dry-run`` runs (and show dry studies'
            best trials) as well (the demo does); by default they are listed
            apart, their numbers mean nothing.

    Returns:
        A RunSet; unreadable or invalid records are in ``skipped``, not raised.
    """
    runs = RunSet()
    studies: dict[str, list[LoadedRun]] = {}
    seen: dict[tuple, Path] = {}
    results = Path(results)
    for path in sorted(results.rglob("metrics.json")):
        if is_export_metrics(path):
            continue  # an export's figures (utils/reporting/exports.py), not a run
        try:
            record = read_record(path)
        except (RecordError, TypeError, ValueError) as e:
            runs.skipped.append(Skipped(path, str(e)))
            continue
        try:
            safe_file_path(path.parent, record.run_id)
        except ValueError as e:
            runs.skipped.append(Skipped(path, str(e), "unsafe run_id"))
            continue
        parts = path.relative_to(results).parts
        plan = record.tags.get("plan") or (parts[1] if len(parts) > 3 and parts[0] in ("experiments", "sweeps") else None)
        # A copied run directory (a backup, a synced scratch folder) must not count twice;
        # two plans (or a plan and a standalone run) may use one run id.
        key = (record.run_id, str(record.tags.get("study")), str(record.tags.get("trial")), plan)
        if key in seen:
            runs.skipped.append(
                Skipped(path, f"duplicate of run {record.run_id} in {seen[key]}; counted once", "duplicate")
            )
            continue
        seen[key] = path.parent
        loaded = LoadedRun(record=record, run_dir=path.parent, subset=subset_of(record), plan=plan)
        if is_trial(record):
            runs.trials.append(loaded)
            studies.setdefault(str(record.tags["study"]), []).append(loaded)
            if record.status != "completed":
                runs.set_apart(loaded, *_liveness(loaded.run_dir, record.status))
        elif record.status != "completed":
            runs.set_apart(loaded, *_liveness(loaded.run_dir, record.status))
        elif loaded.dry_run and not include_dry_runs:
            runs.set_apart(loaded, "dry run", "--dry-run: a few clips and steps; pass --include-dry-runs to show it")
        else:
            runs.completed.append(loaded)
    for study in sorted(studies):
        best = _best_of_study(studies[study])
        if best is None:
            continue
        if best.dry_run and not include_dry_runs:
            runs.set_apart(best, "dry run", "best trial of a --dry-run study (a few clips and steps); "
                           "pass --include-dry-runs to show it")  # fmt: skip
        else:
            runs.best_trials.append(best)
    return runs
