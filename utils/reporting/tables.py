"""The result table's rows: seed-averaged runs, best trials, published figures.

The default table is the seed thesis's (Model | Top 1 | Top 2 | Loss): one
row per model and subset, mean ± std over seeds (sample std, ddof=1; blank
for a single seed) with n, accuracies in percent with two decimals. Each
tuning study adds one row, its best trial by val top-1. Text output is in
:mod:`utils.reporting.formats`.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.policy import ROW_EXEMPT, filled, settings
from utils.core.metrics import METRICS as _METRICS
from utils.core.readers import read_text
from utils.reporting.runs import LoadedRun, RunSet, display_name, metric_value, model_sort_key

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "Published",
    "Row",
    "add_published",
    "load_published",
    "parse_metrics",
    "published_columns",
    "published_metrics",
    "summarise",
]

# Metric key in metrics[split] -> column title (utils/core/metrics.py, the one table), accuracies
# first. Accuracies are fractions in the records and percent in the tables; the loss is printed as it is.
METRICS = {m.key: m.title for m in sorted(_METRICS, key=lambda m: not m.percent)}
PERCENT = frozenset(m.key for m in _METRICS if m.percent)
DEFAULT_METRICS = ("top1", "top2", "loss")
# Published tables report top-k only (in percent); top10 exists only there.
PUBLISHED_METRICS = ("top1", "top2", "top5", "top10")


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"top1,top2,loss"`` -> ("top1", "top2", "loss"); unknown names raise ValueError."""
    if not text:
        return DEFAULT_METRICS
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise ValueError(f"--metrics expected a comma-separated subset of {', '.join(METRICS)}, received {text!r}")
    return names


@dataclass
class Row:
    """One table row: a model on a subset (seed-averaged) or a study's best trial.

    Attributes:
        model: registry name.
        subset: number of classes (None when unknown).
        label: what the Model column shows.
        n: runs averaged (0 for a published-only row).
        mean: metric -> mean over runs, in table units (percent for accuracies).
        std: metric -> sample std over runs (NaN when n < 2).
        run_ids: the runs behind the row.
        study: the tuning study, for a best-trial row.
        params: parameter count (``env["params"]``), when recorded.
        published: source id -> metric -> published value (percent).
        differs: config keys whose values differ between the averaged runs
            (``train.lr: 0.001, 0.01``); a row should average seeds only.
        teachers: for distilled students, the teachers' run ids
            (``tags["teachers"]``); they get their own row, without published figures.
        plan: the experiment or sweep of its runs (None: standalone runs); runs of two plans never share a row.
        partial: metric -> how many of the runs have it, where some do not (records older than the metric).
    """

    model: str
    subset: int | None
    label: str
    n: int
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    study: str | None = None
    params: float | None = None
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    differs: list[str] = field(default_factory=list)
    teachers: str = ""
    plan: str | None = None
    runs: list[LoadedRun] = field(default_factory=list, repr=False)
    partial: dict[str, int] = field(default_factory=dict)


def _scale(key: str) -> float:
    return 100.0 if key in PERCENT else 1.0


def _params(runs: list[LoadedRun]) -> float | None:
    counts = [r.record.env.get("params") for r in runs]
    counts = [float(c) for c in counts if isinstance(c, (int, float)) and not isinstance(c, bool)]
    return float(np.mean(counts)) if counts else None


def _differences(runs: list[LoadedRun]) -> list[str]:
    # Which settings may differ between the seeds of one row: models/policy.py's one rule.
    flats = [{k: repr(v) for k, v in filled(settings(r.record.config, ROW_EXEMPT), ROW_EXEMPT).items()} for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    out = []
    for key in keys:
        values = sorted({f.get(key, "(unset)") for f in flats})
        if len(values) > 1:
            out.append(f"{key}: {', '.join(values)}")
    return out


def _row(model: str, subset: int | None, runs: list[LoadedRun], split: str, metrics, label: str, study=None) -> Row:
    row = Row(model=model, subset=subset, label=label, n=len(runs), study=study, params=_params(runs), runs=runs)
    row.run_ids = [r.record.run_id for r in runs]
    row.differs = _differences(runs)
    for key in metrics:
        values = np.array([metric_value(r.record, split, key) for r in runs]) * _scale(key)
        finite = values[~np.isnan(values)]
        row.mean[key] = float(finite.mean()) if finite.size else math.nan
        row.std[key] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        if 0 < finite.size < len(runs):  # said under the table: the mean is over fewer runs than n
            row.partial[key] = int(finite.size)
    return row


def _sort_key(row: Row) -> tuple:
    # Per subset, family by family; a study's best trial and distilled students follow the seed-averaged row.
    return (row.subset is None, row.subset or 0, model_sort_key(row.model), row.plan or "", row.study is not None,
            row.study or "", row.teachers)  # fmt: skip


def summarise(runs: RunSet, *, split: str = "test", metrics=DEFAULT_METRICS, subset: int | None = None) -> list[Row]:
    """The table rows of a RunSet, ordered by subset, then family and variant.

    Args:
        runs: from :func:`utils.reporting.runs.collect_runs`.
        split: ``test`` or ``val``: which evaluation the numbers come from.
        metrics: keys of METRICS to compute.
        subset: keep only runs on this many classes (None = all).
    """
    if split not in ("test", "val"):
        raise ValueError(f"split expected 'test' or 'val', received {split!r}")
    groups: dict[tuple[str, int | None, str, str | None], list[LoadedRun]] = {}
    for r in runs.completed:
        if subset is None or r.subset == subset:
            # A student distilled from teachers is not the same model trained on labels: its own row;
            # the runs of each experiment or sweep (plan) are their own rows too.
            groups.setdefault((r.record.model, r.subset, str(r.record.tags.get("teachers", "")), r.plan), []).append(r)
    # The plan is named only when the table spans several (the global report), not in one experiment's own.
    named = len({r.plan for r in runs.completed + runs.best_trials}) > 1
    rows = []
    for (m, s, teachers, plan), g in groups.items():
        label = display_name(m) + (f" (distilled from {teachers})" if teachers else "") + (f" [{plan or 'runs/'}]" if named else "")
        rows.append(_row(m, s, g, split, metrics, label))
        rows[-1].teachers, rows[-1].plan = teachers, plan
    for r in runs.best_trials:
        if subset is None or r.subset == subset:
            study, trial = str(r.record.tags["study"]), r.record.tags["trial"]
            label = f"{display_name(r.record.model)} (study {study}, best trial {trial})" + (f" [{r.plan}]" if named and r.plan else "")
            rows.append(_row(r.record.model, r.subset, [r], split, metrics, label, study=study))
            rows[-1].plan = r.plan
    return sorted(rows, key=_sort_key)


# --------------------------------------------------------------------------- published figures


@dataclass(frozen=True)
class Published:
    """A published reference (one source) and its figures.

    Attributes:
        source: short id, used in column names (``seed_thesis``, ``li2020``).
        citation: full reference.
        note: caveat printed with the citation.
        values: (model, subset) -> metric -> percent.
    """

    source: str
    citation: str
    note: str
    values: dict[tuple[str, int], dict[str, float]]


def load_published(path: str | Path) -> list[Published]:
    """Read ``results/published.csv`` (model, subset, top1, top2, top5, top10, source, citation, note).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a column is missing or a value is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"published figures not found at {path}; pass --published-csv PATH")
    content = read_text(path, expected="published figures (CSV: model, subset, top1, ..., source, citation)",
                        todo="pass --published-csv a file in the format of results/published.csv")  # fmt: skip
    try:
        return _published(path, csv.DictReader(row for row in io.StringIO(content, newline="") if not row.startswith("#")))
    except csv.Error as e:
        raise ValueError(f"{path}: expected published figures as CSV, received text that is not CSV ({e})") from None


def _published(path: Path, reader: csv.DictReader) -> list[Published]:
    need = {"model", "subset", "source", "citation"}
    missing = need - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path}: expected columns {sorted(need)} and metrics, missing {sorted(missing)}")
    sources: dict[str, Published] = {}
    for i, line in enumerate(reader, start=2):
        src = line["source"].strip()
        pub = sources.setdefault(
            src, Published(src, line["citation"].strip(), (line.get("note") or "").strip(), {})
        )
        try:
            sub = int(line["subset"])
        except (TypeError, ValueError):
            raise ValueError(
                f"{path} line {i}: subset expected a class count, received {line['subset']!r}"
            ) from None
        figures = {}
        for key in PUBLISHED_METRICS:
            text = (line.get(key) or "").strip()
            if text:
                try:
                    figures[key] = float(text)
                except ValueError:
                    figures[key] = math.nan
                if not 0 <= figures[key] <= 100:  # percent; nan and inf are not figures either
                    raise ValueError(f"{path} line {i}: {key} expected a percentage 0..100, received {text!r}")
        pub.values[(line["model"].strip(), sub)] = figures
    return list(sources.values())


def add_published(rows: list[Row], published: list[Published], *, subset: int | None = None) -> list[Row]:
    """Attach published figures to the rows; add rows for published models we have not run.

    Published-only rows are added for the subsets the table shows (or
    ``subset`` when given, or every subset when the table is empty).
    Best-trial rows get no published figures (they are not the same protocol).
    """
    subsets = {subset} if subset is not None else {r.subset for r in rows}
    keys = {(r.model, r.subset) for r in rows if r.study is None and not r.teachers}
    extra = {}
    for pub in published:
        for model, sub in pub.values:
            if (model, sub) not in keys and (not subsets or sub in subsets):
                extra.setdefault((model, sub), Row(model=model, subset=sub, label=display_name(model), n=0))
    rows = rows + list(extra.values())
    for row in rows:
        if row.study is None and not row.teachers:
            for pub in published:
                if (row.model, row.subset) in pub.values:
                    row.published[pub.source] = pub.values[(row.model, row.subset)]
    return sorted(rows, key=_sort_key)


def published_metrics(rows: list[Row], published: list[Published]) -> tuple[str, ...]:
    """The table metrics (METRICS order) that some shown row has a published figure for.

    Published metrics the suite does not compute (top10) have no column of
    ours to stand beside and are not returned.
    """
    have = {key for r in rows for pub in published for key in r.published.get(pub.source, {})}
    return tuple(k for k in METRICS if k in have)


def published_columns(rows: list[Row], metrics, published: list[Published]) -> list[tuple[str, str]]:
    """(source, metric) pairs with at least one value in the table, in source then metric order."""
    cols = []
    for pub in published:
        for key in metrics:
            if any(key in r.published.get(pub.source, {}) for r in rows):
                cols.append((pub.source, key))
    return cols
