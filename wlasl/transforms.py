"""Clip transforms shared by the tf.data and PyTorch loaders (numpy, uint8 in and out).

Both frameworks call the same function, so a model sees the same
augmentation whichever engine trains it. Randomness comes from a
``numpy.random.Generator`` the loader seeds per epoch and clip, so
augmentation is fresh every epoch yet reproducible for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Loaders", "clip_transform", "temporal_window"]


@dataclass
class Loaders:
    """What an engine receives: iterables of ``(uint8 clips, int labels)`` batches.

    Attributes:
        train: training batches (shuffled, augmented); in a distillation run
            (``cfg.train.teachers``) ``(clips, labels, clip indices)``, the index
            of each clip in ``ids["train"]`` (its row of the soft targets).
        train_eval: the training clips again, fixed order, centre view (the
            run's train-split scores, which distillation reads).
        val: validation batches (fixed order, centre view).
        test: test batches (fixed order, centre view).
        ids: ``{"train", "val", "test"}`` -> video ids in the order of
            ``train_eval``, ``val`` and ``test``.
        num_classes: classes in the store.
        glosses: class names, index = label.
        train_size: number of training clips.
    """

    train: object
    train_eval: object
    val: object
    test: object
    ids: dict
    num_classes: int
    glosses: list
    train_size: int


def temporal_window(stored: int, frames: int, rng: np.random.Generator | None) -> slice:
    """Which stored frames feed the model: a random window when training, the centre otherwise."""
    if frames > stored:
        raise ValueError(f"the model takes {frames} frames but the clip holds {stored}")
    slack = stored - frames
    start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    return slice(start, start + frames)


def clip_transform(
    clip: np.ndarray,
    frames: int,
    size: int,
    rng: np.random.Generator | None = None,
    crop_scale: tuple[float, float] = (0.7, 1.0),
    flip: bool = False,
) -> np.ndarray:
    """Cut a model input from a stored clip.

    Args:
        clip: uint8 ``(T, H, W, 3)`` (a memory map is fine: only the window is read).
        frames: frames the model takes (<= T).
        size: output side.
        rng: training randomness; None = evaluation (centre window, full frame).
        crop_scale: area share kept by the random resized crop.
        flip: random horizontal flip (training only).

    Returns:
        uint8 ``(frames, size, size, 3)``, contiguous.
    """
    window = clip[temporal_window(clip.shape[0], frames, rng)]
    h, w = window.shape[1:3]
    if rng is not None:
        # Random resized crop, square, one box for the whole clip (the same
        # box in every frame keeps the motion intact).
        area = rng.uniform(*crop_scale) * h * w
        side = int(round(min(np.sqrt(area), h, w)))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        window = window[:, y0 : y0 + side, x0 : x0 + side]
        if flip and rng.random() < 0.5:
            window = window[:, :, ::-1]
    if window.shape[1:3] == (size, size):
        return np.ascontiguousarray(window)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        cv2.resize(np.ascontiguousarray(window[t]), (size, size), dst=out[t], interpolation=cv2.INTER_LINEAR)
    return out
