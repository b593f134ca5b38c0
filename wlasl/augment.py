"""Training augmentation: drawn on the host as a box, applied on the device to the whole batch.

A clip's view (temporal window, square crop box, flip) is a pure function of
``(seed, epoch, index)`` and is drawn here, once, for every path: the
reference CPU transform (:func:`wlasl.transforms.clip_transform`) and the
loaders, whose host side only reads the window and ships the box (five
integers per clip). The crop, resize and flip then run where the model
runs (:func:`augment_torch`, :func:`augment_tf`).

Every path samples like OpenCV's ``INTER_LINEAR`` on the cut box
(half-pixel centres, the box's edge pixels repeated), so the device output
matches the reference up to rounding: OpenCV and PyTorch's uint8 path use
fixed-point weights, the float paths float32; at most 1 grey level apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOXES",
    "CLIPS",
    "INDEX",
    "View",
    "augment_tf",
    "augment_torch",
    "boxes",
    "centre_view",
    "clip_rng",
    "draw_view",
]

# Keys of a training batch's inputs (see wlasl.loader_torch / wlasl.loader_tf).
CLIPS, INDEX, BOXES = "clips", "index", "boxes"


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


def boxes(views: list[View]) -> np.ndarray:
    """The views' boxes as one int32 array ``(B, 5)``: y0, x0, height, width, flip (what the device needs)."""
    return np.array([[v.y0, v.x0, v.height, v.width, int(v.flip)] for v in views], np.int32).reshape(-1, 5)


def augment_torch(inputs, device=None, *, size: int):
    """Move a batch to ``device`` (non-blocking) and cut its views: uint8 ``(B, T, size, size, 3)``.

    Each clip's box is resized with ``F.interpolate`` (bilinear, half-pixel
    centres, no antialias: OpenCV's ``INTER_LINEAR`` on the cut box). On
    the CPU it runs on uint8 (PyTorch's vectorised uint8 path); CUDA has
    bilinear kernels for floating types only, so there it runs on float32.

    Args:
        inputs: a training batch's inputs (dict: clips uint8 ``(B, T, H, W, 3)``,
            boxes int32 ``(B, 5)``, index) or plain uint8 clips (moved only).
        device: where the model runs (None: where the clips are).
        size: the model's input side.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True) if device is not None else inputs
    clips = inputs[CLIPS].to(device, non_blocking=True) if device is not None else inputs[CLIPS]
    b, t, h, w, c = clips.shape
    work = clips if clips.device.type == "cpu" else clips.float()
    out = torch.empty((b, t, size, size, c), dtype=work.dtype, device=clips.device)
    for i, (y0, x0, bh, bw, flip) in enumerate(inputs[BOXES].tolist()):  # boxes stay on the host
        crop = work[i, :, y0 : y0 + bh, x0 : x0 + bw].permute(0, 3, 1, 2)  # (T, C, h, w)
        if (bh, bw) != (size, size):
            # A cut box is not a dense channels-last tensor; made one, it takes the vectorised
            # kernels (10x faster on uint8 here than on the strided view).
            crop = crop.contiguous(memory_format=torch.channels_last)
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        out[i] = (crop.flip(-1) if flip else crop).permute(0, 2, 3, 1)
    return out if out.dtype == torch.uint8 else out.round_().clamp_(0, 255).to(torch.uint8)


def _tf_taps(tf, lo, extent, size: int):
    """Bilinear taps of ``size`` outputs over ``[lo, lo + extent)`` per clip: first, second, weight of second."""
    extent = tf.cast(extent, tf.float32)[:, None]
    # Half-pixel centres, clamped to the box: OpenCV INTER_LINEAR on the cut box.
    src = tf.clip_by_value((tf.range(size, dtype=tf.float32) + 0.5) * (extent / size) - 0.5, 0.0, extent - 1.0)
    first = tf.floor(src)
    second = tf.minimum(first + 1.0, extent - 1.0)
    lo = tf.cast(lo, tf.float32)[:, None]
    return tf.cast(first + lo, tf.int32), tf.cast(second + lo, tf.int32), src - first


def augment_tf(inputs, *, size: int):
    """Cut a batch's views where the graph runs (the GPU when there is one): uint8 ``(B, T, size, size, 3)``.

    Separable bilinear (two gathers and a lerp per axis, batched over every
    clip), so it compiles under XLA and needs no per-clip loop.

    Args:
        inputs: a training batch's inputs (dict: clips uint8 ``(B, T, H, W, 3)``,
            boxes int32 ``(B, 5)``, index) or plain uint8 clips (returned as they are).
        size: the model's input side.
    """
    from utils.core.tf_env import tf

    if not isinstance(inputs, dict):
        return inputs
    box = inputs[BOXES]
    rows = _tf_taps(tf, box[:, 0], box[:, 2], size)
    cols = _tf_taps(tf, box[:, 1], box[:, 3], size)
    flip = tf.cast(box[:, 4], tf.bool)[:, None]
    cols = [tf.where(flip, tf.reverse(v, [1]), v) for v in cols]
    # float before gathering: TF's GPU gather kernels cover float types, not
    # uint8, and a CPU fallback would take the whole batch through the host.
    x = tf.cast(inputs[CLIPS], tf.float32)

    def lerp(x, taps, dim):
        first, second, weight = taps
        a = tf.gather(x, first, axis=dim, batch_dims=1)
        b = tf.gather(x, second, axis=dim, batch_dims=1)
        weight = weight[:, None, :, None, None] if dim == 2 else weight[:, None, None, :, None]
        return a + (b - a) * weight

    out = lerp(lerp(x, rows, 2), cols, 3)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
