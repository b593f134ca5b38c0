"""Training augmentation: drawn on the host as indices, applied on the device as one batched op.

A clip's view (temporal window, square crop box, flip) is a pure function of
``(seed, epoch, index)`` and is drawn here, once, for every path: the
reference CPU transform (:func:`wlasl.transforms.clip_transform`) and the
loaders, whose host side only reads the window and turns the box into
bilinear sampling taps (:func:`taps`, a few hundred numbers per clip). The
crop, resize and flip then run where the model runs, on the whole batch, as
two gathers and two lerps (:func:`augment_torch`, :func:`augment_tf`: the
same arithmetic in both frameworks).

The sampling is OpenCV's ``INTER_LINEAR`` (half-pixel centres, edge pixels
repeated at the box border), so the device output matches the reference up
to OpenCV's 11-bit fixed-point weights: at most 1 grey level apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["View", "augment_tf", "augment_torch", "centre_view", "clip_rng", "draw_view", "taps"]

# Keys of a training batch's inputs (see wlasl.loader_torch / wlasl.loader_tf).
CLIPS, INDEX, TAPS, WEIGHTS = "clips", "index", "taps", "weights"


@dataclass(frozen=True)
class View:
    """Which part of a stored clip becomes the model input.

    Attributes:
        start: first stored frame of the temporal window.
        y0, x0: top-left corner of the crop box in stored pixels.
        height, width: the box (square when training).
        flip: mirror left-right.
    """

    start: int
    y0: int
    x0: int
    height: int
    width: int
    flip: bool = False


def clip_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one clip's view: fresh every epoch, the same in every process and on resume."""
    return np.random.default_rng((seed, epoch, index))


def _window_start(stored: int, frames: int, rng: np.random.Generator | None) -> int:
    if frames > stored:
        raise ValueError(f"the model takes {frames} frames but the clip holds {stored}; preprocess with more frames")
    slack = stored - frames
    return int(rng.integers(0, slack + 1)) if rng is not None else slack // 2


def centre_view(*, stored: int, frames: int, height: int, width: int) -> View:
    """The evaluation view: centre window, whole frame."""
    return View(_window_start(stored, frames, None), 0, 0, height, width)


def draw_view(
    rng: np.random.Generator, *, stored: int, frames: int, height: int, width: int, crop_scale=(0.7, 1.0), flip=False
) -> View:
    """A training view: random window, random square box of ``crop_scale`` of the area, random flip.

    The draws keep their order (window, area, y0, x0, flip), so a given
    generator state gives the boxes the suite has always drawn.
    """
    start = _window_start(stored, frames, rng)
    area = rng.uniform(*crop_scale) * height * width
    side = int(round(min(float(np.sqrt(area)), height, width)))
    y0 = int(rng.integers(0, height - side + 1))
    x0 = int(rng.integers(0, width - side + 1))
    mirrored = bool(flip and rng.random() < 0.5)
    return View(start, y0, x0, side, side, mirrored)


def _axis_taps(lo: np.ndarray, extent: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps of ``size`` outputs over ``[lo, lo + extent)`` per clip: (first, second, weight of second)."""
    extent = extent[:, None].astype(np.float64)
    # Half-pixel centres, clamped to the box: cv2.resize INTER_LINEAR on the cut box.
    src = np.clip((np.arange(size) + 0.5) * (extent / size) - 0.5, 0.0, extent - 1)
    first = np.floor(src)
    second = np.minimum(first + 1, extent - 1)
    return first + lo[:, None], second + lo[:, None], src - first


def taps(views: list[View], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sampling taps that cut each view's box out of a stored frame and resize it to ``size``.

    Returns:
        index: int32 ``(B, 2, 2, size)``: [clip, axis (rows, columns), tap (first, second), output pixel],
            in stored pixel coordinates; a flip reverses the column taps.
        weight: float32 ``(B, 2, size)``: weight of the second tap.
    """
    y0, x0, h, w = (np.array([getattr(v, k) for v in views], np.int64) for k in ("y0", "x0", "height", "width"))
    rows, cols = _axis_taps(y0, h, size), _axis_taps(x0, w, size)
    index = np.stack([np.stack(rows[:2], 1), np.stack(cols[:2], 1)], 1).astype(np.int32)
    weight = np.stack([rows[2], cols[2]], 1).astype(np.float32)
    flipped = np.array([v.flip for v in views], bool)
    index[flipped, 1] = index[flipped, 1, :, ::-1]
    weight[flipped, 1] = weight[flipped, 1, ::-1]
    return index, weight


def augment_torch(inputs, device=None):
    """Move a batch to ``device`` (non-blocking) and cut its views: uint8 ``(B, T, size, size, 3)``.

    Args:
        inputs: a training batch's inputs (dict: clips uint8 ``(B, T, H, W, 3)``,
            taps, weights, index) or plain uint8 clips (moved only).
        device: where the model runs (None: where the tensors are).
    """
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True) if device is not None else inputs
    clips, index, weight = (inputs[k].to(device, non_blocking=True) for k in (CLIPS, TAPS, WEIGHTS))
    b, t, _, _, c = clips.shape
    size = index.shape[-1]

    def take(x, dim, idx):  # gather along dim with per-clip indices (B, size)
        shape = [b, 1, 1, 1, 1]
        shape[dim] = size
        full = list(x.shape)
        full[dim] = size
        return torch.gather(x, dim, idx.long().view(shape).expand(full))

    def lerp(x, dim, axis):
        first, second = take(x, dim, index[:, axis, 0]).float(), take(x, dim, index[:, axis, 1]).float()
        shape = [b, 1, 1, 1, 1]
        shape[dim] = size
        return first + (second - first) * weight[:, axis].view(shape)

    rows = lerp(clips, 2, 0)  # uint8 gathers, float math: (B, T, size, W, 3)
    out = lerp(rows, 3, 1)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def augment_tf(inputs):
    """Cut a batch's views where the graph runs (the GPU when there is one): uint8 ``(B, T, size, size, 3)``.

    Args:
        inputs: a training batch's inputs (dict: clips uint8 ``(B, T, H, W, 3)``,
            taps, weights, index) or plain uint8 clips (returned as they are).
    """
    from utils.core.tf_env import tf

    if not isinstance(inputs, dict):
        return inputs
    clips, index, weight = inputs[CLIPS], inputs[TAPS], inputs[WEIGHTS]
    # float before gathering: TF registers no uint8 gather kernel on GPU, and
    # a CPU fallback would put the whole batch through the host again.
    x = tf.cast(clips, tf.float32)

    def lerp(x, axis, dim):
        first = tf.gather(x, index[:, axis, 0], axis=dim, batch_dims=1)
        second = tf.gather(x, index[:, axis, 1], axis=dim, batch_dims=1)
        w = weight[:, axis]
        w = w[:, None, :, None, None] if dim == 2 else w[:, None, None, :, None]
        return first + (second - first) * w

    out = lerp(lerp(x, 0, 2), 1, 3)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
