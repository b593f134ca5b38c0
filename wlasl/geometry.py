"""Crop and temporal-sampling arithmetic (pure functions, no I/O).

Kept apart from decoding so the edge cases (bbox past the frame, short
ranges, ``frame_end == -1``) are tested without videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BBOX_SLACK", "RENDITION_HEIGHTS", "BoxFit", "FrameRange", "fit_bbox", "resolve_range", "sample_indices",
           "square_crop", "step_indices"]  # fmt: skip

# A bbox may overrun its frame by this fraction of the frame's side and still be
# taken as measured on this file (clamped): person detectors' boxes touch the edge.
BBOX_SLACK = 0.05
# Frame heights of the renditions video sites serve (240p ... 2160p). WLASL measured
# some bboxes on another rendition of the same video than the one a user downloads
# (68011: bbox for 854x480, file 636x360; 17086: for 1280x720, file 736x414).
RENDITION_HEIGHTS = (144, 240, 360, 480, 540, 576, 720, 1080, 1440, 2160)
# At most this much larger than the file (360p against 1080p): beyond it a bbox
# outside the frame is more likely wrong than measured elsewhere.
MAX_RENDITION_SCALE = 3.0


@dataclass(frozen=True)
class FrameRange:
    """A resolved, 0-based, inclusive frame range in the real file.

    Attributes:
        first: first frame index (0-based).
        last: last frame index (0-based, inclusive).
        clamped: the metadata asked for frames past the real end.
    """

    first: int
    last: int
    clamped: bool

    @property
    def length(self) -> int:
        return self.last - self.first + 1


def resolve_range(frame_start: int, frame_end: int, frame_count: int) -> FrameRange:
    """Turn WLASL's 1-based ``frame_start``/``frame_end`` into file indices.

    Args:
        frame_start: 1-based first frame.
        frame_end: 1-based inclusive last frame, or -1 for "to the end".
        frame_count: frames the file really holds.

    Raises:
        ValueError: the range starts past the end of the file.
    """
    if frame_count < 1:
        raise ValueError(f"the video has no frames (frame_count={frame_count})")
    first = frame_start - 1
    if first >= frame_count:
        raise ValueError(
            f"frame_start {frame_start} is past the end of the video ({frame_count} frames)"
        )
    if frame_end == -1:
        return FrameRange(first, frame_count - 1, clamped=False)
    last = frame_end - 1
    if last >= frame_count:
        return FrameRange(first, frame_count - 1, clamped=True)
    return FrameRange(first, last, clamped=False)


def sample_indices(first: int, last: int, frames: int) -> np.ndarray:
    """``frames`` indices spread uniformly over ``[first, last]``.

    A range shorter than ``frames`` repeats frames (evenly, by rounding), so
    every clip has the same length; the caller records that as padding.
    """
    if frames < 1:
        raise ValueError(f"frames expected >= 1, received {frames}")
    if last < first:
        raise ValueError(f"empty range: first {first} > last {last}")
    # Centre of each of `frames` equal bins: symmetric, and never both ends
    # exactly, which matches how uniform temporal sampling is usually done.
    n = last - first + 1
    centers = (np.arange(frames) + 0.5) * n / frames - 0.5
    return first + np.clip(np.round(centers), 0, n - 1).astype(np.int64)


def step_indices(first: int, last: int, frames: int, step: int = 1) -> tuple[np.ndarray, bool]:
    """``frames`` indices ``step`` apart, centred in ``[first, last]``; uniform when they do not fit.

    ``step == 1`` is :func:`sample_indices` (uniform over the whole range).
    With ``step > 1`` (the seed thesis takes 20 frames every 2nd frame) the
    indices span ``1 + (frames - 1) * step`` frames, centred in the range
    (an odd surplus frame goes after the window). A range shorter than that
    span falls back to uniform sampling over the whole range, which the
    caller records (like padding).

    Returns:
        ``(indices, fell_back)``: int64 indices in time order, and whether
        the fallback was taken.
    """
    if step < 1:
        raise ValueError(f"frame step expected >= 1, received {step}")
    if step == 1:
        return sample_indices(first, last, frames), False
    if frames < 1:
        raise ValueError(f"frames expected >= 1, received {frames}")
    if last < first:
        raise ValueError(f"empty range: first {first} > last {last}")
    span = 1 + (frames - 1) * step
    length = last - first + 1
    if span > length:
        return sample_indices(first, last, frames), True
    start = first + (length - span) // 2
    return start + step * np.arange(frames, dtype=np.int64), False


def square_crop(
    bbox: tuple[float, float, float, float],
    width: int,
    height: int,
    margin: float = 0.1,
) -> tuple[int, int, int, int]:
    """A square crop around ``bbox``, grown by ``margin``, inside the frame.

    The square's side is the bbox's longer side times ``1 + 2 * margin``,
    capped at the frame's shorter side; the square is centred on the bbox and
    then shifted (not shrunk) to lie inside the frame, so the signer keeps
    their aspect ratio after resizing.

    Args:
        bbox: ``(xmin, ymin, xmax, ymax)`` in source pixels.
        width: frame width in pixels.
        height: frame height in pixels.
        margin: extra context on each side, as a fraction of the bbox side.

    Returns:
        ``(x0, y0, x1, y1)`` integer pixel box, ``x1``/``y1`` exclusive.

    Raises:
        ValueError: the bbox has zero area or lies outside the frame.
    """
    xmin, ymin, xmax, ymax = bbox
    if xmax <= xmin or ymax <= ymin:
        raise ValueError(f"zero-area bbox {list(bbox)}")
    if margin < 0:
        raise ValueError(f"margin expected >= 0, received {margin}")
    # Intersect with the frame first: WLASL boxes sometimes overrun it.
    cx0, cy0 = max(xmin, 0), max(ymin, 0)
    cx1, cy1 = min(xmax, width), min(ymax, height)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"bbox {list(bbox)} lies outside the {width}x{height} frame")
    side = max(cx1 - cx0, cy1 - cy0) * (1.0 + 2.0 * margin)
    side = int(round(min(side, width, height)))
    x0 = int(round((cx0 + cx1) / 2 - side / 2))
    y0 = int(round((cy0 + cy1) / 2 - side / 2))
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return x0, y0, x0 + side, y0 + side


@dataclass(frozen=True)
class BoxFit:
    """A metadata bbox fitted to the decoded frame (:func:`fit_bbox`).

    Attributes:
        bbox: ``(xmin, ymin, xmax, ymax)`` in this file's pixels.
        status: ``""`` (it fits), ``bbox_clamped`` or ``bbox_rescaled``.
        detail: what was done, for the report.
    """

    bbox: tuple[float, float, float, float]
    status: str = ""
    detail: str = ""


def fit_bbox(bbox: tuple[float, float, float, float], width: int, height: int) -> BoxFit:
    """Fit a WLASL bbox to the frame it will be cut from, by one stated rule.

    1. It lies inside the frame: used as it is.
    2. It overruns the frame by at most :data:`BBOX_SLACK` of the frame's
       side: clamped to the frame (``bbox_clamped``).
    3. It overruns by more, but fits the smallest common rendition of the
       same video (:data:`RENDITION_HEIGHTS`, same aspect ratio) that is
       larger than the file, and at most :data:`MAX_RENDITION_SCALE` times
       larger: it was measured there, and is scaled down to this file
       (``bbox_rescaled``).
    4. Otherwise it cannot be placed: ``ValueError`` (a ``bbox`` skip).

    Raises:
        ValueError: a zero-area bbox, or one that no rule places.
    """
    xmin, ymin, xmax, ymax = (float(v) for v in bbox)
    if xmax <= xmin or ymax <= ymin:
        raise ValueError(f"zero-area bbox {list(bbox)}")
    overrun = max(xmax / width - 1, ymax / height - 1, -xmin / width, -ymin / height)
    if overrun <= 0:
        return BoxFit((xmin, ymin, xmax, ymax))
    if overrun <= BBOX_SLACK:
        return BoxFit(
            (xmin, ymin, xmax, ymax), "bbox_clamped",
            f"bbox {list(bbox)} overruns the {width}x{height} frame by {overrun:.1%} (<= {BBOX_SLACK:.0%}): clamped to it",
        )  # fmt: skip
    for ref_h in RENDITION_HEIGHTS:
        scale = ref_h / height
        ref_w = width * scale
        if scale <= 1 or min(xmin, ymin) < -BBOX_SLACK * ref_h:
            continue
        if scale > MAX_RENDITION_SCALE:
            break
        if xmax <= ref_w * (1 + BBOX_SLACK) and ymax <= ref_h * (1 + BBOX_SLACK):
            fitted = (xmin / scale, ymin / scale, xmax / scale, ymax / scale)
            return BoxFit(
                fitted, "bbox_rescaled",
                f"bbox {list(bbox)} lies outside the {width}x{height} file but inside its {round(ref_w)}x{ref_h} "
                f"rendition, where it was measured: scaled by {1 / scale:.4f} to {[round(v) for v in fitted]}",
            )  # fmt: skip
    raise ValueError(
        f"bbox {list(bbox)} lies outside the {width}x{height} frame, by more than a rendition of the video up to "
        f"{MAX_RENDITION_SCALE:g}x its size explains; check the video against the metadata"
    )
