"""Print and save the result tables and plots of every run record under a results root.

Examples:
    # the seed thesis's table (Model | Top 1 | Top 2 | Loss) of every run
    python utils/report.py
    # WLASL100 only, with top-5 and per-class accuracy, beside the published figures
    python utils/report.py --subset 100 --metrics top1,top2,top5,per_class_top1,loss --published
    # LaTeX on stdout, numbers from the val split, and a confusion matrix of one run
    python utils/report.py --format tex --split val --confusion movinet_a3-wlasl100_172-s0

Writes <out>/summary.md, summary.csv, summary.tex and other_runs.csv (runs not
averaged in and unreadable records), and under <plots>/: curves/<run_id>.png
(train vs val accuracy and loss), accuracy_bars.png, accuracy_vs_params.png
and confusion_<run_id>.png.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # run from anywhere without install, as main/*.py

import models  # noqa: E402,F401  (registers every family: names and row order come from the registry)
from utils.core.argv import script_parser  # noqa: E402
from utils.core.files import atomic_write_text, make_dirs  # noqa: E402
from utils.reporting import plots  # noqa: E402
from utils.reporting.exports import ExportRow, collect_exports, format_exports  # noqa: E402
from utils.reporting.formats import format_notes, format_others, format_table, one_line  # noqa: E402
from utils.reporting.runs import RunSet, collect_runs, is_trial, safe_file_path, set_apart_unscored  # noqa: E402
from utils.reporting.tables import (  # noqa: E402
    DEFAULT_METRICS,
    METRICS,
    Published,
    Row,
    add_published,
    load_published,
    parse_metrics,
    published_metrics,
    summarise,
)

__all__ = ["Report", "build_report", "main", "write_outputs"]

FORMATS = ("md", "csv", "tex")
# Shipped with the suite; a results root of its own (a demo, a cluster scratch
# directory) may hold its own published.csv, which then wins.
PUBLISHED_CSV = _HERE.parent / "results" / "published.csv"


@dataclass
class Report:
    """What one report run produced (tables as text, paths written)."""

    runs: RunSet
    rows: list[Row]
    metrics: tuple[str, ...]
    published: list[Published] = field(default_factory=list)
    added_metrics: tuple[str, ...] = ()
    plot_notes: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    exports: list[ExportRow] = field(default_factory=list)
    export_notes: list[str] = field(default_factory=list)

    def table(self, fmt: str = "md") -> str:
        return format_table(self.rows, metrics=self.metrics, fmt=fmt, published=self.published)

    def scope(self) -> str:
        """What the table includes: standalone runs, each experiment's and sweep's runs (a row never mixes two),
        and the best trial of each tuning study (its other trials are not in the table)."""
        plans: dict[str | None, int] = {}
        for r in self.runs.completed:
            plans[r.plan] = plans.get(r.plan, 0) + 1
        parts = [f"{n} {'standalone run' if p is None else f'run(s) of {p}'}{'s' if p is None and n != 1 else ''}"
                 for p, n in sorted(plans.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))]  # fmt: skip
        studies = len(self.runs.best_trials)
        if studies:
            parts.append(f"the best trial of {studies} tuning stud{'y' if studies == 1 else 'ies'} "
                         f"({len(self.runs.trials) - studies} other trials not in the table)")  # fmt: skip
        return f"Included: {'; '.join(parts)}. A row averages one model's seeds within one plan.\n" if parts else ""

    def remarks(self) -> str:
        """Columns --published added, rows averaging different settings, runs left out (plain text)."""
        added = ""
        if self.added_metrics:
            names = ", ".join(METRICS[k] for k in self.added_metrics)
            added = (
                f"Note: --published added {names}: the published figures report "
                f"{'it' if len(self.added_metrics) == 1 else 'them'}, and a published figure is shown "
                "only under its own metric.\n"
            )
        plotting = "".join(f"- {one_line(note)}\n" for note in self.plot_notes)
        plotting = f"Plots not drawn:\n{plotting}" if plotting else ""
        parts = (self.scope(), added, format_notes(self.rows), format_others(self.runs), plotting)
        return "\n".join(part for part in parts if part)


def build_report(
    results: str | Path = "results",
    *,
    subset: int | None = None,
    metrics=DEFAULT_METRICS,
    split: str = "test",
    published: bool | str | Path = False,
    include_dry_runs: bool = False,
) -> Report:
    """Read the run records under ``results`` and build the table rows.

    Args:
        results: results root, searched recursively for metrics.json.
        subset: only runs on this many classes.
        metrics: METRICS keys for the columns.
        split: ``test`` or ``val``.
        published: False, True (``<results>/published.csv`` or the suite's),
            or the path of a published.csv. A published figure shows only
            under its own metric: metrics the figures report and ``metrics``
            lacks are added as columns (``Report.added_metrics``).
        include_dry_runs: average ``--dry-run`` runs in and show dry studies'
            best trials (the demo's explicit opt-in).
    """
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(
            f"no results directory at {results}; train a model first (main/train_<family>.py) or pass --results DIR"
        )
    runs = collect_runs(results, include_dry_runs=include_dry_runs)
    set_apart_unscored(runs, split)
    metrics = tuple(metrics)
    rows = summarise(runs, split=split, metrics=metrics, subset=subset)
    pubs: list[Published] = []
    added: tuple[str, ...] = ()
    if published:
        path = Path(published) if not isinstance(published, bool) else results / "published.csv"
        if isinstance(published, bool) and not path.is_file():
            path = PUBLISHED_CSV
        pubs = load_published(path)
        rows = add_published(rows, pubs, subset=subset)
        # A published figure appears only under its own metric (the seed thesis's
        # "Top 2" is top-5). When that metric is not among the columns, add it,
        # with ours beside it, rather than hide the figure or show it elsewhere.
        added = tuple(k for k in published_metrics(rows, pubs) if k not in metrics)
        if added:
            order = list(METRICS)
            metrics = tuple(sorted(metrics + added, key=lambda k: (_anchor(k, metrics, order), k in added)))
            rows = add_published(summarise(runs, split=split, metrics=metrics, subset=subset), pubs, subset=subset)
    exports, export_notes = collect_exports(results)
    return Report(runs=runs, rows=rows, metrics=metrics, published=pubs, added_metrics=added, exports=exports,
                  export_notes=export_notes)  # fmt: skip


def _anchor(key: str, requested: tuple[str, ...], order: list[str]) -> int:
    """Column position: a requested metric keeps its place; an added one goes after the
    last requested metric that precedes it in METRICS order (top5 after top2, before loss)."""
    if key in requested:
        return requested.index(key)
    before = [requested.index(k) for k in requested if order.index(k) < order.index(key)]
    return max(before, default=-1)


def write_outputs(report: Report, out: str | Path, plots_dir: str | Path | None, confusion=()) -> list[Path]:
    """Write summary.{md,csv,tex}, other_runs.csv and (unless ``plots_dir`` is None) the plots.

    Args:
        report: from :func:`build_report`.
        out: tables directory.
        plots_dir: plots directory, or None for no plots.
        confusion: run ids to draw a confusion matrix for.

    Raises:
        KeyError: a ``confusion`` run id is not among the records.
    """
    out = make_dirs(out, "the tables folder (--out)")
    if plots_dir is not None:
        make_dirs(plots_dir, "the plots folder (--plots)")
    # Check the confusion run ids before writing anything: a typo should not cost a full plotting pass.
    targets = {run_id: report.runs.find(run_id) for run_id in (confusion if plots_dir is not None else ())}
    missing = [run_id for run_id, run in targets.items() if run is None]
    if missing:
        ids = sorted(r.record.run_id for r in report.runs.all_loaded())
        known = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "") if ids else "none"
        raise KeyError(f"--confusion {', '.join(missing)}: no run record with that id; known run ids: {known}")
    written = []
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        # Curves for the table's runs and the unfinished plain runs (to watch them);
        # not for every tuning trial, a study can hold hundreds.
        runs = report.runs
        for run in runs.completed + runs.best_trials + [r for r in runs.others if not is_trial(r.record)]:
            # collect_runs set apart every unsafe run id; the check stays beside the write.
            png = safe_file_path(plots_dir / "curves", run.record.run_id, suffix=".png")
            try:
                written.append(plots.plot_history(run.run_dir, png, run.record.run_id))
            except (ValueError, csv.Error) as e:  # a damaged history.csv costs its curve, not the report
                report.plot_notes.append(f"{run.run_dir / 'history.csv'}: no curves drawn ({e})")
        accuracies = [k for k in ("top1", "top2") if k in report.metrics]
        if accuracies:
            written.append(plots.plot_accuracy_bars(report.rows, plots_dir / "accuracy_bars.png", accuracies))
            written.append(
                plots.plot_accuracy_vs_params(report.rows, plots_dir / "accuracy_vs_params.png", accuracies[0])
            )
        for run_id, run in targets.items():
            png = safe_file_path(plots_dir, run_id, prefix="confusion_", suffix=".png")
            written.append(plots.plot_confusion(run.run_dir, png, run.subset, run_id))
    # Tables last, so summary.md carries the notes of the plotting pass too.
    for fmt in FORMATS:
        text = report.table(fmt)
        if fmt == "md":
            remarks = report.remarks()
            text += f"\n{remarks}" if remarks else ""
        atomic_write_text(out / f"summary.{fmt}", text)
        written.append(out / f"summary.{fmt}")
    atomic_write_text(out / "other_runs.csv", format_others(report.runs, "csv"))
    written.append(out / "other_runs.csv")
    if report.exports:  # RUN_DIR/exports/*/metrics.json (main/export.py)
        for fmt in ("md", "csv"):
            atomic_write_text(out / f"exports.{fmt}", format_exports(report.exports, fmt))
            written.append(out / f"exports.{fmt}")
    written = [w for w in written if w is not None]
    report.written += written
    return written


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(
        "utils/report.py",
        "Aggregate the run records (metrics.json) under a results root into the result table "
        "(one row per model and subset, mean ± std over seeds, n; accuracies in percent; each tuning "
        "study's best trial by val top-1), print it, and save it with the plots. Failed, running, "
        "interrupted, stopped and dry runs are listed apart; unreadable, invalid or old-schema records "
        "are reported and skipped. How to read it: docs/results.md.",
        __doc__,
    )
    p.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results root, searched recursively for metrics.json (default results)",
    )
    p.add_argument("--subset", type=int, help="only runs on this many classes, e.g. 100 for WLASL100 (default all)")
    p.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma-separated columns from {', '.join(METRICS)} (default {','.join(DEFAULT_METRICS)})",
    )
    p.add_argument(
        "--split", choices=("test", "val"), default="test", help="evaluation split of the numbers (default test)"
    )
    p.add_argument("--format", choices=FORMATS, default="md", help="what to print; all three are written (default md)")
    p.add_argument(
        "--published",
        action="store_true",
        help="add published figures (seed thesis, WLASL paper) beside ours; each shows only under its own "
        "metric, whose column is added when --metrics lacks it (the seed thesis's 'Top 2' is top-5)",
    )
    p.add_argument(
        "--published-csv", type=Path, help="published figures file (default <results>/published.csv, else the suite's)"
    )
    p.add_argument("--out", type=Path, help="tables directory (default <results>/tables)")
    p.add_argument("--plots", type=Path, help="plots directory (default <results>/plots)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument(
        "--confusion",
        action="append",
        default=[],
        metavar="RUN_ID",
        help="draw the confusion matrix of this run from its predictions_test.csv (repeatable; not with --no-plots)",
    )
    p.add_argument(
        "--include-dry-runs",
        action="store_true",
        help="average --dry-run runs and dry tuning studies in (listed apart by default: their numbers mean nothing)",
    )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = build_report(
            args.results,
            subset=args.subset,
            metrics=parse_metrics(args.metrics),
            split=args.split,
            published=args.published_csv or args.published,
            include_dry_runs=args.include_dry_runs,
        )
        plots_dir = None if args.no_plots else (args.plots or args.results / "plots")
        write_outputs(report, args.out or args.results / "tables", plots_dir, args.confusion)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(report.table(args.format), end="")
    others = report.remarks()
    if not report.rows:
        print(
            f"no completed runs under {args.results}" + (f" on subset {args.subset}" if args.subset else ""),
            file=sys.stderr,
        )
    if report.exports or report.export_notes:
        notes = "".join(f"- {one_line(n)}\n" for n in report.export_notes)
        text = f"\nExports:\n{format_exports(report.exports)}" + (f"Exports not read:\n{notes}" if notes else "")
        print(text, end="", file=sys.stdout if args.format == "md" else sys.stderr)
    if others:
        # Keep stdout a clean table for csv/tex; the terminal still sees what was left out.
        print(f"\n{others}", end="", file=sys.stdout if args.format == "md" else sys.stderr)
    print(
        f"wrote {len(report.written)} files under {args.out or args.results / 'tables'} and {plots_dir or '(no plots)'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
