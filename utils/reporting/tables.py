"""The result tables: seed-averaged rows, published figures, md / csv / tex.

The default table is the seed thesis's (Model | Top 1 | Top 2 | Loss): one
row per model and subset, mean ± std over seeds (sample std, ddof=1; blank
for a single seed) with n, accuracies in percent with two decimals. Each
tuning study adds one row, its best trial by val top-1.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.reporting.runs import LoadedRun, RunSet, display_name, metric_value, model_sort_key

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "Published",
    "Row",
    "add_published",
    "format_notes",
    "format_others",
    "format_table",
    "load_published",
    "parse_metrics",
    "summarise",
]

# Metric key in metrics[split] -> column title. Accuracies are fractions in
# the records and percent in the tables; the loss is printed as it is.
METRICS = {
    "top1": "Top 1",
    "top2": "Top 2",
    "top5": "Top 5",
    "loss": "Loss",
    "per_class_top1": "Per-class Top 1",
}
PERCENT = frozenset({"top1", "top2", "top5", "per_class_top1"})
DEFAULT_METRICS = ("top1", "top2", "loss")
# Published tables report top-k only (in percent); top10 exists only there.
PUBLISHED_METRICS = ("top1", "top2", "top5", "top10")
_DASH = "–"


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
    runs: list[LoadedRun] = field(default_factory=list, repr=False)


def _scale(key: str) -> float:
    return 100.0 if key in PERCENT else 1.0


def _params(runs: list[LoadedRun]) -> float | None:
    counts = [r.record.env.get("params") for r in runs]
    counts = [float(c) for c in counts if isinstance(c, (int, float)) and not isinstance(c, bool)]
    return float(np.mean(counts)) if counts else None


# Config keys that may differ between the seeds of one row without changing what is measured.
_PER_RUN_KEYS = frozenset(
    {"run_id", "results", "tags", "dry_run", "train.seed", "train.resume", "data.root", "data.workers"}
)


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name != "tags":
            flat.update(_flatten(value, f"{name}."))
        elif name not in _PER_RUN_KEYS:
            flat[name] = repr(value)
    return flat


def _differences(runs: list[LoadedRun]) -> list[str]:
    flats = [_flatten(r.record.config) for r in runs]
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
    return row


def _sort_key(row: Row) -> tuple:
    # Per subset, family by family; a study's best trial follows the seed-averaged row.
    return (row.subset is None, row.subset or 0, model_sort_key(row.model), row.study is not None, row.study or "")


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
    groups: dict[tuple[str, int | None], list[LoadedRun]] = {}
    for r in runs.completed:
        if subset is None or r.subset == subset:
            groups.setdefault((r.record.model, r.subset), []).append(r)
    rows = [_row(m, s, g, split, metrics, display_name(m)) for (m, s), g in groups.items()]
    for r in runs.best_trials:
        if subset is None or r.subset == subset:
            study, trial = str(r.record.tags["study"]), r.record.tags["trial"]
            label = f"{display_name(r.record.model)} (study {study}, best trial {trial})"
            rows.append(_row(r.record.model, r.subset, [r], split, metrics, label, study=study))
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
    with path.open(newline="") as f:
        reader = csv.DictReader(row for row in f if not row.startswith("#"))
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
                        raise ValueError(f"{path} line {i}: {key} expected a number, received {text!r}") from None
            pub.values[(line["model"].strip(), sub)] = figures
    return list(sources.values())


def add_published(rows: list[Row], published: list[Published], *, subset: int | None = None) -> list[Row]:
    """Attach published figures to the rows; add rows for published models we have not run.

    Published-only rows are added for the subsets the table shows (or
    ``subset`` when given, or every subset when the table is empty).
    Best-trial rows get no published figures (they are not the same protocol).
    """
    subsets = {subset} if subset is not None else {r.subset for r in rows}
    keys = {(r.model, r.subset) for r in rows if r.study is None}
    extra = {}
    for pub in published:
        for model, sub in pub.values:
            if (model, sub) not in keys and (not subsets or sub in subsets):
                extra.setdefault((model, sub), Row(model=model, subset=sub, label=display_name(model), n=0))
    rows = rows + list(extra.values())
    for row in rows:
        if row.study is None:
            for pub in published:
                if (row.model, row.subset) in pub.values:
                    row.published[pub.source] = pub.values[(row.model, row.subset)]
    return sorted(rows, key=_sort_key)


def _published_columns(rows: list[Row], metrics, published: list[Published]) -> list[tuple[str, str]]:
    """(source, metric) pairs with at least one value in the table, in source then metric order."""
    cols = []
    for pub in published:
        for key in metrics:
            if any(key in r.published.get(pub.source, {}) for r in rows):
                cols.append((pub.source, key))
    return cols


# --------------------------------------------------------------------------- formatting


def _cell(mean: float, std: float, plus_minus: str) -> str:
    if math.isnan(mean):
        return _DASH
    digits = 2
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text}{plus_minus}{std:.{digits}f}"


def _subset_text(subset: int | None) -> str:
    return "?" if subset is None else str(subset)


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return text.replace("–", "--")


def format_table(rows: list[Row], *, metrics=DEFAULT_METRICS, fmt: str = "md", published: list[Published] = ()) -> str:
    """The table as Markdown, CSV or LaTeX.

    Markdown and LaTeX show ``mean ± std`` cells and cite the published
    sources as ``[k]`` under the table. CSV holds numbers: ``<metric>_mean``,
    ``<metric>_std`` and ``<metric>_pub_<source>`` columns, accuracies in percent.
    """
    pub_cols = _published_columns(rows, metrics, list(published))
    ref = {pub.source: i for i, pub in enumerate(published, start=1)}
    used = [pub for pub in published if any(src == pub.source for src, _ in pub_cols)]
    if fmt == "csv":
        head = ["model", "label", "subset", "study", "n"]
        head += [f"{k}_{s}" for k in metrics for s in ("mean", "std")]
        head += [f"{k}_pub_{src}" for src, k in pub_cols] + ["params", "run_ids"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(head)
        for r in rows:
            line = [r.model, r.label, "" if r.subset is None else r.subset, r.study or "", r.n]
            for k in metrics:
                line += [_num(r.mean.get(k)), _num(r.std.get(k))]
            line += [_num(r.published.get(src, {}).get(k)) for src, k in pub_cols]
            line += [_num(r.params), " ".join(r.run_ids)]
            w.writerow(line)
        return buf.getvalue()
    titles = (
        ["Model", "Subset", "n"] + [METRICS[k] for k in metrics] + [f"{METRICS[k]} [{ref[s]}]" for s, k in pub_cols]
    )

    def cells(r: Row, pm: str, escape=str) -> list[str]:
        out = [escape(r.label), _subset_text(r.subset), str(r.n)]
        out += [_cell(r.mean.get(k, math.nan), r.std.get(k, math.nan), pm) for k in metrics]
        out += [_cell(r.published.get(s, {}).get(k, math.nan), math.nan, pm) for s, k in pub_cols]
        return out

    notes = [f"[{ref[p.source]}] {p.citation}" + (f" Note: {p.note}" if p.note else "") for p in used]
    if fmt == "md":
        lines = ["| " + " | ".join(titles) + " |", "|" + "|".join(["---"] + ["---:"] * (len(titles) - 1)) + "|"]
        lines += ["| " + " | ".join(cells(r, " ± ")) + " |" for r in rows]
        return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
    if fmt == "tex":
        spec = "l" + "r" * (len(titles) - 1)
        lines = [
            f"\\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(_latex_escape(t) for t in titles) + r" \\",
            r"\midrule",
        ]
        # Escape the labels only: the cells are numbers and our own $\pm$.
        lines += [" & ".join(cells(r, r" $\pm$ ", _latex_escape)).replace(_DASH, "--") + r" \\" for r in rows]
        lines.append(r"\bottomrule")
        lines += [f"\\multicolumn{{{len(titles)}}}{{l}}{{\\footnotesize {_latex_escape(n)}}} \\\\" for n in notes]
        lines.append(r"\end{tabular}")
        return "\n".join(lines) + "\n"
    raise ValueError(f"format expected md, csv or tex, received {fmt!r}")


def _num(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def format_notes(rows: list[Row]) -> str:
    """Warnings about rows that average runs with different settings (empty when none)."""
    lines = [
        f"- {r.label} ({_subset_text(r.subset)}) averages runs with different settings: {'; '.join(r.differs)}"
        for r in rows
        if r.differs
    ]
    return "Notes:\n" + "\n".join(lines) + "\n" if lines else ""


def format_others(runs: RunSet, fmt: str = "md") -> str:
    """Runs not averaged in (failed, running, stopped, dry runs) and skipped records.

    ``fmt="csv"`` gives one row per entry (run_id, model, status, study, trial,
    path, reason); anything else a plain-text list for the terminal and Markdown.
    """
    entries = []
    for r in runs.others:
        rec = r.record
        reason = (rec.error or "").strip().splitlines()
        entries.append(
            [
                rec.run_id,
                rec.model,
                runs.reasons.get(r.run_dir, rec.status),
                str(rec.tags.get("study", "")),
                str(rec.tags.get("trial", "")),
                str(r.run_dir),
                reason[-1] if reason else "",
            ]
        )
    for path, why in runs.skipped:
        entries.append(["", "", "unreadable", "", "", str(path), why])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run_id", "model", "status", "study", "trial", "path", "reason"])
        w.writerows(entries)
        return buf.getvalue()
    if not entries:
        return ""
    lines = ["Not in the table (not averaged in):"]
    for run_id, model, status, study, trial, path, reason in entries:
        what = f"{run_id} ({model})" if run_id else path
        extra = f" study {study} trial {trial}" if study else ""
        lines.append(f"- {what}: {status}{extra}" + (f": {reason}" if reason else ""))
    return "\n".join(lines) + "\n"
