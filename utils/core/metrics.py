"""Classification metrics on numpy arrays, shared by both engines, and the one table of metric keys.

Framework-free on purpose: the Keras and PyTorch engines hand over logits
and labels, so top-k means the same thing on both sides (the seed project
printed "top-2" while computing top-5).

:data:`METRICS` is the only list of metrics: the run record's
``metrics[split]`` keys (:data:`SPLIT_KEYS`), the per-epoch history columns
(:data:`HISTORY_COLUMNS`), the report's columns and the tuning objectives
(:data:`OBJECTIVES`) all derive from it. A new metric is one row here (and
its computation in :func:`evaluate_logits`); an older record that lacks it
reads it as NaN (``utils.core.records``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "HISTORY_COLUMNS",
    "METRICS",
    "OBJECTIVES",
    "SPLIT_KEYS",
    "Metric",
    "confusion_matrix",
    "evaluate_logits",
    "metric",
    "per_class_accuracy",
    "softmax",
    "topk_accuracy",
]


@dataclass(frozen=True)
class Metric:
    """One metric of a split.

    Attributes:
        key: its name in ``metrics[split]`` (and ``val_<key>`` in the history and as an objective).
        title: the report's column title.
        higher_better: the direction a tuner optimises it in.
        percent: a fraction in records, printed in percent in tables.
        per_epoch: also computed on val after every epoch (a ``history.csv`` column).
    """

    key: str
    title: str
    higher_better: bool = True
    percent: bool = True
    per_epoch: bool = False

    @property
    def bounds(self) -> tuple[float, float]:
        """The values it can take: a fraction in [0, 1], or a loss in [0, inf)."""
        return (0.0, 1.0) if self.percent else (0.0, float("inf"))


# In record order (history.csv keeps this column order).
METRICS = (
    Metric("loss", "Loss", higher_better=False, percent=False, per_epoch=True),
    Metric("top1", "Top 1", per_epoch=True),
    Metric("top2", "Top 2", per_epoch=True),
    Metric("top5", "Top 5", per_epoch=True),
    Metric("per_class_top1", "Per-class Top 1"),
)
# Keys of metrics[split] after the final evaluation: every metric, and the clip count n.
SPLIT_KEYS = (*(m.key for m in METRICS), "n")
# Per-epoch columns of history.csv (train_* on the training split, val_* on val).
HISTORY_COLUMNS = ("epoch", "train_loss", "train_top1", *(f"val_{m.key}" for m in METRICS if m.per_epoch), "lr", "wall_s")
# Tuning objectives: val_<key> of every metric; keras-tuner's usual name val_accuracy is val top-1.
OBJECTIVES = {"val_accuracy": "top1", **{f"val_{m.key}": m.key for m in METRICS}}


def metric(key: str) -> Metric:
    """The metric named ``key`` (``top1``), or KeyError listing the known ones."""
    for m in METRICS:
        if m.key == key:
            return m
    raise KeyError(f"unknown metric {key!r}; expected one of {', '.join(m.key for m in METRICS)}")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits (N, C) and labels (N,), received {logits.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1}, received {labels.min()}..{labels.max()}")
    return logits, labels


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k highest scores.

    Ties are broken by class index (stable sort), so a constant model does
    not get credit for every class at once.
    """
    logits, labels = _check(logits, labels)
    if logits.shape[0] == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((order == labels[:, None]).any(axis=1).mean())


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Top-1 accuracy of each class (NaN for classes with no example)."""
    logits, labels = _check(logits, labels)
    pred = logits.argmax(axis=1)
    out = np.full(logits.shape[1], np.nan)
    for c in np.unique(labels):
        mask = labels == c
        out[c] = (pred[mask] == c).mean()
    return out


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, pred]`` counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return cm


def evaluate_logits(logits: np.ndarray, labels: np.ndarray) -> dict:
    """The fixed metric dict of a split: loss, top1, top2, top5, per_class_top1, n.

    ``loss`` is the mean cross-entropy of softmax(logits); ``per_class_top1``
    is the mean over classes present in ``labels`` (WLASL's classes are
    unbalanced, so this differs from per-instance top-1).
    """
    logits, labels = _check(logits, labels)
    n = int(labels.shape[0])
    if n == 0:
        return {**{m.key: float("nan") for m in METRICS}, "n": 0}
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    out = {
        "loss": float(-log_probs[np.arange(n), labels].mean()),
        "top1": topk_accuracy(logits, labels, 1),
        "top2": topk_accuracy(logits, labels, 2),
        "top5": topk_accuracy(logits, labels, 5),
        "per_class_top1": float(np.nanmean(per_class_accuracy(logits, labels))),
    }
    return {**{m.key: out[m.key] for m in METRICS}, "n": n}
