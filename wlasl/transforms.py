"""What the loaders hand an engine (:class:`Loaders`), how they cap a split, and the reference clip transform.

The loaders ship uint8 batches and leave the training crop to the device
(:mod:`wlasl.augment`). :func:`clip_transform` is the same view cut on the
CPU, one clip at a time with OpenCV: the reference the device path is
tested against, and the evaluation resize of a store cut at another size.
Both draw the view with :func:`wlasl.augment.draw_view`, so a given
``(seed, epoch, index)`` crops the same box on either path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from wlasl.augment import centre_view, draw_view

__all__ = ["Loaders", "TrainStream", "capped_splits", "clip_transform"]


@runtime_checkable
class TrainStream(Protocol):
    """The training split, one epoch at a time: the one interface every loader's training side implements.

    ``len(stream)`` is the number of batches of a full epoch; ``epoch(e, skip, max_batches)``
    yields the batches ``skip`` .. ``max_batches`` (or the end) of epoch ``e``, the same
    batches in any process for the same ``(seed, e)``, so a run stopped mid-epoch resumes
    exactly. The epoch loop (``models.lifecycle.Run.train``) is its only caller in training.
    """

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, skip: int = 0, max_batches: int | None = None) -> Iterable: ...


@dataclass
class Loaders:
    """What an engine receives.

    Attributes:
        train: the :class:`TrainStream` of training batches ``(inputs, labels)`` (shuffled); ``inputs`` is a
            dict: uint8 ``clips`` (stored frames of each clip's window),
            ``index`` (int64 position of each clip in ``ids["train"]``) and
            ``boxes`` (int32 ``(B, 5)``: each clip's random view, see
            :mod:`wlasl.augment`).
        train_eval: the training clips again, fixed order, centre view
            (the run's train-split scores, which distillation reads).
        val: validation batches ``(uint8 clips, labels)`` (fixed order, centre view).
        test: test batches, like ``val``.
        ids: ``{"train", "val", "test"}`` -> video ids in the order of
            ``train_eval``, ``val`` and ``test``.
        num_classes: classes in the store.
        glosses: class names, index = label.
        train_size: number of training clips.
        augment: the engine calls it on a training batch's ``inputs`` right
            where the model runs (torch: ``augment(inputs, device)``; TF:
            ``augment(inputs)`` inside the train step); returns the uint8
            model input ``(B, frames, size, size, 3)``.
    """

    train: TrainStream
    train_eval: Iterable
    val: Iterable
    test: Iterable
    ids: dict
    num_classes: int
    glosses: list
    train_size: int
    augment: Callable

    def __post_init__(self):
        if not isinstance(self.train, TrainStream):
            raise TypeError(f"Loaders.train expected a TrainStream (len() and epoch(epoch, skip, max_batches)), "
                            f"received {type(self.train).__name__}")  # fmt: skip

    @classmethod
    def assemble(cls, store, splits: dict, *, train, evaluation: Callable, augment: Callable) -> Loaders:
        """One store's loaders: ``train`` and ``augment`` from the caller, ``evaluation(split)`` for each fixed-order
        split; the ids, classes and training size come from ``store`` and ``splits`` (``{split: entries}``)."""
        return cls(
            train=train,
            train_eval=evaluation("train"),
            val=evaluation("val"),
            test=evaluation("test"),
            ids={split: [e.video_id for e in entries] for split, entries in splits.items()},
            num_classes=store.num_classes,
            glosses=list(store.labels),
            train_size=len(splits["train"]),
            augment=augment,
        )


def capped_splits(store, max_clips: int | None, seed: int) -> dict:
    """``{"train", "val", "test"}`` -> the store's entries, each split at most ``max_clips`` (dry runs).

    A capped split is a seeded sample kept in manifest order: a prefix would be one class.
    """
    splits = {}
    for split in ("train", "val", "test"):
        entries = store.split(split)
        if max_clips and len(entries) > max_clips:
            keep = np.sort(np.random.default_rng(seed).choice(len(entries), max_clips, replace=False))
            entries = [entries[i] for i in keep]
        splits[split] = list(entries)
    return splits


def clip_transform(
    clip: np.ndarray,
    frames: int,
    size: int,
    rng: np.random.Generator | None = None,
    crop_scale: tuple[float, float] = (0.7, 1.0),
    flip: bool = False,
) -> np.ndarray:
    """Cut a model input from a stored clip on the CPU (the reference of the device path).

    Args:
        clip: uint8 ``(T, H, W, 3)`` (a memory map is fine: only the window is read).
        frames: frames the model takes (<= T).
        size: output side.
        rng: training randomness (:func:`wlasl.augment.clip_rng`); None = evaluation
            (centre window, full frame).
        crop_scale: area share kept by the random resized crop.
        flip: random horizontal flip (training only).

    Returns:
        uint8 ``(frames, size, size, 3)``, contiguous.
    """
    shape = {"stored": clip.shape[0], "frames": frames, "height": clip.shape[1], "width": clip.shape[2]}
    if rng is None:
        view = centre_view(**shape)
    else:
        view = draw_view(rng, crop_scale=crop_scale, flip=flip, **shape)
    # One box for the whole clip: the same box in every frame keeps the motion intact.
    window = clip[view.start : view.start + frames, view.y0 : view.y0 + view.height, view.x0 : view.x0 + view.width]
    if view.flip:
        window = window[:, :, ::-1]
    if window.shape[1:3] == (size, size):
        return np.ascontiguousarray(window)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        cv2.resize(np.ascontiguousarray(window[t]), (size, size), dst=out[t], interpolation=cv2.INTER_LINEAR)
    return out
