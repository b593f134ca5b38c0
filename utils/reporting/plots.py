"""Report figures: training curves, accuracy bars, confusion matrix, accuracy vs parameters.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot,
so no global figure state and no display needed on a cluster node; the
confusion matrix is :func:`models.figures.confusion_figure`, the one a run
draws itself) and saved atomically at a fixed size: ``<SIZE_IN> * DPI`` pixels, no tight
bounding box, so every PNG of a kind has the same shape.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter

from models.figures import CONFUSION_SIZE_IN, DPI, confusion_figure, figure, png_bytes
from utils.core.files import atomic_write_bytes
from utils.core.metrics import confusion_matrix
from utils.core.records import read_history

__all__ = [
    "BARS_SIZE_IN",
    "CONFUSION_SIZE_IN",
    "CURVES_SIZE_IN",
    "DPI",
    "PARAMS_SIZE_IN",
    "plot_accuracy_bars",
    "plot_accuracy_vs_params",
    "plot_confusion",
    "plot_history",
    "read_predictions",
]

CURVES_SIZE_IN = (9.0, 3.5)
BARS_SIZE_IN = (9.0, 4.5)
PARAMS_SIZE_IN = (7.0, 4.5)


_figure = figure  # models.figures: the Agg canvas and the DPI every figure of the suite shares


def _save(fig, path: Path) -> Path:
    atomic_write_bytes(path, png_bytes(fig))
    return path


def _floats(rows: list[dict], key: str) -> np.ndarray:
    out = []
    for r in rows:
        try:
            out.append(float(r.get(key, "")))
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.array(out)


def plot_history(run_dir: str | Path, out: str | Path, title: str = "") -> Path | None:
    """Train vs val accuracy and loss per epoch from ``history.csv``.

    Returns:
        The PNG path, or None when the run has no history yet.
    """
    rows = read_history(run_dir)
    if not rows:
        return None
    epochs = _floats(rows, "epoch")
    fig = _figure(CURVES_SIZE_IN)
    acc, loss = fig.subplots(1, 2)
    for ax, key, name, scale in ((acc, "top1", "top-1 accuracy (%)", 100.0), (loss, "loss", "loss", 1.0)):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = _floats(rows, f"{split}_{key}") * scale
            if np.isfinite(values).any():
                ax.plot(epochs, values, style, markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or Path(run_dir).name)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.86, wspace=0.25)
    return _save(fig, Path(out))


def plot_accuracy_bars(rows, out: str | Path, metrics=("top1", "top2")) -> Path | None:
    """Grouped bars of the rows' accuracies (percent) with ± std error bars.

    Args:
        rows: :class:`utils.reporting.tables.Row` objects with n > 0, in table order.
        out: PNG path.
        metrics: accuracy keys to draw side by side.
    """
    rows = [r for r in rows if r.n > 0]
    metrics = [k for k in metrics if any(k in r.mean for r in rows)]
    if not rows or not metrics:
        return None
    fig = _figure(BARS_SIZE_IN)
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.8 / len(metrics)
    for i, key in enumerate(metrics):
        means = np.array([r.mean.get(key, math.nan) for r in rows])
        stds = np.nan_to_num(np.array([r.std.get(key, math.nan) for r in rows]))
        ax.bar(
            x + (i - (len(metrics) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            label=key.replace("top", "top-"),
        )
    ax.set_xticks(x, [f"{r.label}\n({r.subset}, n={r.n})" for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.32, top=0.95)
    return _save(fig, Path(out))


def plot_accuracy_vs_params(rows, out: str | Path, metric: str = "top1") -> Path | None:
    """Accuracy (percent, ± std) against parameter count (``env["params"]``), log x.

    Returns:
        The PNG path, or None when no row records its parameter count.
    """
    rows = [r for r in rows if r.n > 0 and r.params and not math.isnan(r.mean.get(metric, math.nan))]
    if not rows:
        return None
    fig = _figure(PARAMS_SIZE_IN)
    ax = fig.subplots()
    params = np.array([r.params for r in rows]) / 1e6
    means = np.array([r.mean[metric] for r in rows])
    stds = np.nan_to_num(np.array([r.std.get(metric, math.nan) for r in rows]))
    ax.errorbar(params, means, yerr=stds, fmt="o", capsize=3)
    for p, m, r in zip(params, means, rows):
        ax.annotate(f"{r.label} ({r.subset})", (p, m), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    # Plain numbers (2, 3, 10) instead of matplotlib's 2×10⁰ on a log axis.
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.margins(x=0.2, y=0.1)
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel(f"{metric.replace('top', 'top-')} accuracy (%)")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.95)
    return _save(fig, Path(out))


def read_predictions(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Labels, top-1 predictions and class -> gloss from a run's ``predictions_test.csv``.

    Raises:
        FileNotFoundError: the run wrote no predictions (it did not finish its test evaluation).
        ValueError: a row lacks the label or pred column.
    """
    path = Path(run_dir) / "predictions_test.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no predictions_test.csv in {run_dir}; the run must complete its test evaluation first")
    labels, preds, glosses = [], [], {}
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                y, p = int(row["label"]), int(row["pred"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path} line {i}: expected integer label and pred columns, received {row}") from None
            labels.append(y)
            preds.append(p)
            glosses.setdefault(y, row.get("gloss") or str(y))
            glosses.setdefault(p, row.get("pred_gloss") or str(p))
    return np.array(labels, np.int64), np.array(preds, np.int64), glosses


def plot_confusion(run_dir: str | Path, out: str | Path, num_classes: int | None = None, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class down, predicted across) of a run's test predictions.

    Args:
        run_dir: the run directory holding predictions_test.csv.
        out: PNG path.
        num_classes: matrix side; default the largest class index seen + 1.
        title: figure title (default the run directory name).
    """
    labels, preds, glosses = read_predictions(run_dir)
    seen = int(max(labels.max(initial=-1), preds.max(initial=-1))) + 1
    n = max(num_classes or 0, seen, 1)
    names = [glosses.get(c, str(c)) for c in range(n)]
    fig = confusion_figure(confusion_matrix(labels, preds, n), names, title or Path(run_dir).name)
    return _save(fig, Path(out))
