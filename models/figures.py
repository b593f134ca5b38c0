"""The figures of one run's evaluation: its confusion matrix and its per-class accuracy.

Drawn once, here, for everything that shows them: the run's own
``plots/confusion_test.png`` (:mod:`models.evaluation`), its TensorBoard
images (:mod:`models.tensorboard_run`) and the report's confusion figure
(:mod:`utils.reporting.plots`). matplotlib's object API on the Agg canvas:
no pyplot, so no global figure state and no display needed on a cluster
node. Every figure of a kind has the same size: ``<SIZE_IN> * DPI`` pixels,
no tight bounding box.
"""

from __future__ import annotations

import io
import math

import numpy as np

__all__ = ["CONFUSION_SIZE_IN", "DPI", "PER_CLASS_SIZE_IN", "confusion_figure", "figure", "per_class_figure", "png_bytes"]

DPI = 100
CONFUSION_SIZE_IN = (7.0, 6.0)
PER_CLASS_SIZE_IN = (9.0, 4.5)
# Gloss names on the axes up to this many classes; beyond, they overlap.
MAX_TICK_LABELS = 30


def figure(size_in: tuple[float, float]):
    """A matplotlib Figure on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size_in, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def confusion_figure(cm: np.ndarray, glosses: list[str], title: str):
    """Row-normalised confusion matrix (true class down, predicted across), counts in the cells up to 30 classes.

    Args:
        cm: ``(n, n)`` counts, ``cm[true, predicted]``.
        glosses: class names (their count may fall short of ``n``: the index stands in).
        title: what the figure is of; the top-1 accuracy and clip count are added.
    """
    n = len(cm)
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, float), where=totals > 0)
    fig = figure(CONFUSION_SIZE_IN)
    ax = fig.subplots()
    shown = ax.imshow(share, vmin=0, vmax=1, cmap="Blues", interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="share of the true class")
    if n <= MAX_TICK_LABELS:
        names = [glosses[c] if c < len(glosses) else str(c) for c in range(n)]
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        for (i, j), count in np.ndenumerate(cm):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                        color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = float(np.trace(cm) / cm.sum()) if cm.sum() else math.nan
    ax.set_title(f"{title}: top-1 {100 * accuracy:.2f}% on {int(cm.sum())} clips", fontsize=9)
    return fig


def per_class_figure(top1: np.ndarray, counts: np.ndarray, glosses: list[str], title: str):
    """Top-1 accuracy of every class with clips: by class up to 30 classes, else sorted (the spread is what shows).

    Args:
        top1: per-class top-1 (NaN for a class without clips: left out).
        counts: clips per class.
        glosses: class names.
        title: what the figure is of; the per-class mean is added.
    """
    have = np.flatnonzero(counts > 0)
    fig = figure(PER_CLASS_SIZE_IN)
    ax = fig.subplots()
    values = 100 * top1[have]
    if len(have) <= MAX_TICK_LABELS:
        ax.bar(range(len(have)), values, color="tab:blue")
        ax.set_xticks(range(len(have)), [glosses[c] for c in have], rotation=90, fontsize=7)
        ax.set_xlabel("class")
    else:
        ax.fill_between(range(len(have)), np.sort(values)[::-1], step="mid", color="tab:blue")
        ax.set_xlabel(f"{len(have)} classes, sorted by top-1")
    ax.set_ylim(0, 100)
    ax.set_ylabel("top-1 (%)")
    mean = float(np.mean(values)) if len(values) else math.nan
    ax.set_title(f"{title}: per-class top-1, mean {mean:.2f}% over {len(have)} classes", fontsize=9)
    fig.tight_layout()
    return fig
