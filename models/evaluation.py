"""What a finished run writes about each split: one function, one format, for both engines.

Per evaluated split (``val``, ``test``), under the run directory::

    scores_<split>.npz       video_id, label, logits (every class's score): what fusion and distillation read
    predictions_<split>.csv  video_id, label, gloss, pred, pred_gloss, correct, top5, prob
    per_class_<split>.csv    label, gloss, n, top1, top5
    confusion_<split>.csv    label, gloss, then one column per predicted class (header: the glosses)
    plots/confusion_test.png the row-normalised test confusion matrix

and for ``train`` (an un-augmented pass over the training clips) only
``scores_train.npz``: the soft targets a student distils from.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from utils.core.files import atomic_write_bytes, atomic_write_text
from utils.core.metrics import confusion_matrix, evaluate_logits, softmax

__all__ = ["SCORE_SPLITS", "read_scores", "write_split"]

SCORE_SPLITS = ("train", "val", "test")


def write_split(
    run_dir: str | Path, split: str, video_ids: list[str], labels: np.ndarray, logits: np.ndarray, glosses: list[str]
) -> dict:
    """Write the split's outputs (see the module docstring) and return its metrics (``evaluate_logits``).

    Raises:
        ValueError: ids, labels and logits disagree in length, or the logits
            have another class count than ``glosses``.
    """
    run_dir = Path(run_dir)
    logits = np.asarray(logits, np.float32)
    labels = np.asarray(labels, np.int64)
    if not (len(video_ids) == len(labels) == len(logits)):
        raise ValueError(f"{split}: {len(video_ids)} video ids, {len(labels)} labels, {len(logits)} logits rows")
    if logits.ndim != 2 or logits.shape[1] != len(glosses):
        raise ValueError(f"{split}: logits of shape {logits.shape} for {len(glosses)} classes")
    metrics = evaluate_logits(logits, labels)
    buf = io.BytesIO()
    np.savez(buf, video_id=np.asarray(video_ids, dtype=str), label=labels, logits=logits, glosses=np.asarray(glosses, dtype=str))
    atomic_write_bytes(run_dir / f"scores_{split}.npz", buf.getvalue())
    if split == "train":
        return metrics
    probs = softmax(logits.astype(np.float64)) if len(logits) else logits
    order = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    rows = [["video_id", "label", "gloss", "pred", "pred_gloss", "correct", "top5", "prob"]]
    for vid, y, top, p in zip(video_ids, labels, order, probs):
        pred = int(top[0])
        rows.append([vid, int(y), glosses[int(y)], pred, glosses[pred], int(pred == int(y)), " ".join(map(str, top)), f"{p[pred]:.6f}"])
    _write_csv(run_dir / f"predictions_{split}.csv", rows)

    n = len(glosses)
    preds = order[:, 0] if len(order) else np.zeros(0, np.int64)
    cm = confusion_matrix(labels, preds, n)
    _write_csv(run_dir / f"confusion_{split}.csv", [["label", "gloss", *glosses]] + [[i, g, *row] for i, (g, row) in enumerate(zip(glosses, cm.tolist()))])
    in5 = (order == labels[:, None]).any(axis=1) if len(order) else np.zeros(0, bool)
    per_class = [["label", "gloss", "n", "top1", "top5"]]
    for c, gloss in enumerate(glosses):
        mask = labels == c
        k = int(mask.sum())
        per_class.append([c, gloss, k, _ratio((preds[mask] == c).sum(), k), _ratio(in5[mask].sum(), k)])
    _write_csv(run_dir / f"per_class_{split}.csv", per_class)
    if split == "test":
        _plot_confusion(run_dir / "plots" / "confusion_test.png", cm, glosses)
    return metrics


def read_scores(run_dir: str | Path, split: str) -> dict:
    """``{"video_id", "label", "logits", "glosses"}`` of a run's ``scores_<split>.npz``.

    Raises:
        FileNotFoundError: the run has no scores for that split (names the file).
    """
    path = Path(run_dir) / f"scores_{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run has no per-class scores for the {split} split")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in ("video_id", "label", "logits", "glosses")}


def _ratio(num, den) -> str:
    return "" if den == 0 else f"{num / den:.6f}"


def _write_csv(path: Path, rows: list[list]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _plot_confusion(path: Path, cm: np.ndarray, glosses: list[str]) -> None:
    """Row-normalised confusion matrix as a PNG (gloss labels up to 30 classes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    n = len(glosses)
    side = min(4 + 0.12 * n, 20)
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax.set(xlabel="predicted", ylabel="true", title="test confusion (row-normalised)")
    if n <= 30:
        ax.set_xticks(range(n), glosses, rotation=90)
        ax.set_yticks(range(n), glosses)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
