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

from models.figures import confusion_figure, png_bytes
from utils.core.files import atomic_write_bytes, atomic_write_text
from utils.core.metrics import confusion_matrix, evaluate_logits, softmax
from utils.core.readers import DamagedFile, delete_advice, read_npz

__all__ = ["SCORE_SPLITS", "class_summary", "read_scores", "top_classes", "write_split"]

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
    order = top_classes(logits)
    rows = [["video_id", "label", "gloss", "pred", "pred_gloss", "correct", "top5", "prob"]]
    for vid, y, top, p in zip(video_ids, labels, order, probs):
        pred = int(top[0])
        rows.append([vid, int(y), glosses[int(y)], pred, glosses[pred], int(pred == int(y)), " ".join(map(str, top)), f"{p[pred]:.6f}"])
    _write_csv(run_dir / f"predictions_{split}.csv", rows)

    cm, top1, top5, counts = class_summary(labels, order, len(glosses))
    _write_csv(run_dir / f"confusion_{split}.csv", [["label", "gloss", *glosses]] + [[i, g, *row] for i, (g, row) in enumerate(zip(glosses, cm.tolist()))])
    per_class = [["label", "gloss", "n", "top1", "top5"]]
    for c, gloss in enumerate(glosses):
        per_class.append([c, gloss, int(counts[c]), _ratio(top1[c]), _ratio(top5[c])])
    _write_csv(run_dir / f"per_class_{split}.csv", per_class)
    if split == "test":
        fig = confusion_figure(cm, glosses, "test confusion (row-normalised)")
        atomic_write_bytes(run_dir / "plots" / "confusion_test.png", png_bytes(fig))
    return metrics


def read_scores(run_dir: str | Path, split: str) -> dict:
    """``{"video_id", "label", "logits", "glosses"}`` of a run's ``scores_<split>.npz``, checked: the arrays agree
    in length and class count, and every score is a finite number.

    Raises:
        FileNotFoundError: the run has no scores for that split (names the file).
        DamagedFile: the file is not such scores (empty, cut, other arrays, NaN scores); names it and the fix.
    """
    path = Path(run_dir) / f"scores_{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run has no per-class scores for the {split} split")
    # A completed run whose scores file is missing evaluates its best weights again when its command is rerun.
    todo = delete_advice(path, run_dir, "rerun the run's training command with its options (it evaluates the kept "
                         "best weights again and rewrites its scores)")  # fmt: skip
    expected = f"the run's per-class scores of the {split} split"
    z = read_npz(path, ("video_id", "label", "logits", "glosses"), expected=expected, todo=todo, finite=("logits",))
    n = len(z["video_id"]) if z["video_id"].ndim == 1 else -1
    if (z["logits"].ndim != 2 or z["label"].shape != (n,) or len(z["logits"]) != n or z["label"].dtype.kind not in "iu"
            or z["glosses"].shape != (z["logits"].shape[1],)):  # fmt: skip
        raise DamagedFile(path, f"{expected}: video_id (N,), label (N,) integers, logits (N, C), glosses (C,)",
                          f"{z['video_id'].shape}, {z['label'].shape} {z['label'].dtype}, {z['logits'].shape}, "
                          f"{z['glosses'].shape}", todo)  # fmt: skip
    return z


def class_summary(labels: np.ndarray, order: np.ndarray, num_classes: int) -> tuple[np.ndarray, ...]:
    """The confusion matrix, per-class top-1 and top-5 (NaN for a class without clips) and clips per class.

    Args:
        labels: true class per clip.
        order: each clip's classes by score, best first (at least the top 5, or all when fewer).
        num_classes: the class count.
    """
    labels = np.asarray(labels, np.int64)
    preds = order[:, 0] if len(order) else np.zeros(0, np.int64)
    cm = confusion_matrix(labels, preds, num_classes)
    in5 = (order[:, :5] == labels[:, None]).any(axis=1) if len(order) else np.zeros(0, bool)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        top1 = np.diag(cm) / counts
        top5 = np.bincount(labels[in5], minlength=num_classes)[:num_classes] / counts
    return cm, np.where(counts > 0, top1, np.nan), np.where(counts > 0, top5, np.nan), counts


def top_classes(logits: np.ndarray) -> np.ndarray:
    """Each clip's 5 best classes (or all, when fewer), best first; ties go to the lower index."""
    logits = np.asarray(logits, np.float64)
    probs = softmax(logits) if len(logits) else logits
    return np.argsort(-probs, axis=1, kind="stable")[:, :5]


def _ratio(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.6f}"


def _write_csv(path: Path, rows: list[list]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(path, buf.getvalue())
