"""Decode just the sampled frames of a video range.

Decoder choice (measured by ``benchmarks/preprocess.py``; DESIGN.md has the
first figures): OpenCV is the fastest on h264 here and degrades gracefully on
damaged files (it returns the frames it could decode where decord raises), so
it is the primary decoder. ``grab()`` decodes a frame without the BGR
conversion, and only the sampled frames are ``retrieve()``-d: frames between
samples cost decoding only, frames after the range cost nothing.

PyAV is the fallback for containers OpenCV's bundled FFmpeg refuses to open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# FFmpeg's own messages ("moov atom not found"): fatal ones only. OpenCV
# reads this when its FFmpeg backend first opens a file. The value is
# FFmpeg's AV_LOG_FATAL; QUIET (-8) is not accepted by OpenCV's parser.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["DecodeError", "Decoded", "decode_frames", "probe"]

# OpenCV's seek costs about as much as decoding 20-30 frames (measured on
# 640x360 h264: seek+grab 100-200 ms vs 1.8 ms a frame sequentially), so
# short lead-ins are cheaper to decode through.
SEEK_MIN_FRAMES = 32

# A corrupt file is a recorded skip, not console noise: OpenCV's warnings
# go quiet; errors still print.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

# One decode thread per process: preprocessing parallelises over videos with
# --workers, and FFmpeg's own threads would oversubscribe the cores.
cv2.setNumThreads(1)


class DecodeError(ValueError):
    """A video that cannot be opened or holds no decodable frame."""


@dataclass(frozen=True)
class Decoded:
    """Frames decoded from one file.

    Attributes:
        frames: ``{index: BGR uint8 HxWx3}`` for each wanted index reached.
        frame_count: frames the container declares (can be wrong).
        decoded_until: index of the last frame actually decoded; below
            ``max(wanted)`` when the file ends early (truncated or a wrong
            declared count).
        fps: the file's real frame rate.
        width: frame width in pixels.
        height: frame height in pixels.
        decoder: ``opencv`` or ``pyav``.
    """

    frames: dict[int, np.ndarray]
    frame_count: int
    decoded_until: int
    fps: float
    width: int
    height: int
    decoder: str


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: empty file (0 bytes); re-download it")


def probe(path: str | Path) -> Decoded:
    """Container facts (frame count, fps, size) without decoding frames."""
    return decode_frames(path, [])


def decode_frames(path: str | Path, wanted) -> Decoded:
    """Decode the frames at the 0-based indices ``wanted`` (any order, repeats ok).

    ``wanted`` may also be a function of the declared frame count returning
    the indices, so the file is opened once even when the range depends on
    its length (``frame_end == -1``).

    Raises:
        FileNotFoundError: no such file.
        DecodeError: the file cannot be opened by any decoder, or is empty.
    """
    path = Path(path)
    _check_exists(path)
    try:
        return _decode_opencv(path, wanted)
    except DecodeError as first_error:
        try:
            return _decode_pyav(path, wanted)
        except DecodeError:
            raise first_error from None


def _plan(wanted, count: int) -> list[int]:
    if callable(wanted):
        wanted = wanted(count)
    return sorted({int(i) for i in wanted})


def _decode_opencv(path: Path, wanted) -> Decoded:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise DecodeError(f"{path}: OpenCV/FFmpeg cannot open the file (corrupt or not a video)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width <= 0 or height <= 0:
            raise DecodeError(f"{path}: no video stream")
        wanted = _plan(wanted, count)
        frames: dict[int, np.ndarray] = {}
        pos = 0
        if wanted and wanted[0] >= SEEK_MIN_FRAMES:
            # FFmpeg's seek lands on the keyframe before the target and decodes
            # forward to it, so the frame index stays exact; it saves decoding
            # a long lead-in (WLASL's YouTube instances start at frame ~2000
            # by the median). Only trust it when the position reads back.
            if cap.set(cv2.CAP_PROP_POS_FRAMES, wanted[0]) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == wanted[0]:
                pos = wanted[0]
            else:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        last = pos - 1
        for target in wanted:
            while pos <= target:
                if not cap.grab():
                    break
                last = pos
                pos += 1
            if last != target:
                break  # the file ended before this frame
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                break
            frames[target] = frame
        if wanted and not frames and last < 0:
            raise DecodeError(f"{path}: no decodable frame (corrupt or truncated file)")
        return Decoded(frames, count, last, fps, width, height, "opencv")
    finally:
        cap.release()


def _decode_pyav(path: Path, wanted) -> Decoded:
    import av  # imported lazily: only needed when OpenCV fails

    # As for OpenCV: the failure is recorded as a skip reason, not printed.
    av.logging.set_level(av.logging.FATAL)

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise DecodeError(f"{path}: PyAV cannot open the file ({e})") from None
    try:
        if not container.streams.video:
            raise DecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        wanted = _plan(wanted, int(stream.frames or 0))
        want = set(wanted)
        frames: dict[int, np.ndarray] = {}
        last = -1
        stop = wanted[-1] if wanted else -1
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i > stop:
                    break
                last = i
                if i in want:
                    frames[i] = frame.to_ndarray(format="bgr24")
        except av.error.FFmpegError:
            pass  # damaged tail: keep what decoded, like OpenCV does
        if wanted and last < 0:
            raise DecodeError(f"{path}: no decodable frame (corrupt or truncated file)")
        return Decoded(frames, int(stream.frames or 0), last, fps, width, height, "pyav")
    finally:
        container.close()
