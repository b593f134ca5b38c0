"""Classification metrics on numpy arrays, shared by both engines.

Framework-free on purpose: the Keras and PyTorch engines hand over logits
and labels, so top-k means the same thing on both sides (the seed project
printed "top-2" while computing top-5).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "confusion_matrix",
    "evaluate_logits",
    "per_class_accuracy",
    "softmax",
    "topk_accuracy",
]


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
        nan = float("nan")
        return {"loss": nan, "top1": nan, "top2": nan, "top5": nan, "per_class_top1": nan, "n": 0}
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(n), labels].mean())
    return {
        "loss": loss,
        "top1": topk_accuracy(logits, labels, 1),
        "top2": topk_accuracy(logits, labels, 2),
        "top5": topk_accuracy(logits, labels, 5),
        "per_class_top1": float(np.nanmean(per_class_accuracy(logits, labels))),
        "n": n,
    }
