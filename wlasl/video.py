"""Decode the frames of a video range, cropped and scaled on the way out of the decoder.

WLASL clips are short (1-3 s), mostly whole-range and often 720p/1080p, so
every frame of the range is decoded anyway and the decoder is the limit
(issue 14). What is left to save is everything after it, so a wanted frame
is cropped *before* any colour conversion and only the crop is scaled:

* **PyAV** (primary): one FFmpeg filter graph per video, ``crop`` (a
  pointer shift, no copy) then ``scale`` straight from the decoder's YUV to
  RGB at the output size. ``area`` is an antialiasing box filter cheap at
  these ratios (~1 ms a frame from a 1080² crop); ``full_chroma_int``
  interpolates chroma at the output resolution: without it swscale's
  conversion reads ~2 grey levels dark. Against a float reference (BT.601
  conversion of the planes, float ``INTER_AREA``) the mean error is
  0.5-0.9 grey levels, below the previous full-frame OpenCV path's 1.6.
* **OpenCV** (fallback, and the only decoder in the pose environment,
  which has no PyAV): ``grab()`` every frame, ``retrieve()`` (full-frame
  BGR) only the wanted ones, then crop, ``INTER_AREA`` and BGR->RGB.

Both number frames in presentation order from 0, exactly as a sequential
read does; seeking (long lead-ins) keeps the numbering exact (see
:mod:`wlasl.video_readers`). Colours follow FFmpeg's default BT.601 conversion,
as OpenCV and most training pipelines decode. Frames come out RGB uint8.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# FFmpeg's own messages ("moov atom not found"): fatal ones only. OpenCV
# reads this when its FFmpeg backend first opens a file. The value is
# FFmpeg's AV_LOG_FATAL; QUIET (-8) is not accepted by OpenCV's parser.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import numpy as np  # noqa: E402

from wlasl.video_readers import READERS, SEEK_MIN_FRAMES, Box, DecodeError, Reader, VideoInfo  # noqa: E402

__all__ = ["DECODERS", "SEEK_MIN_FRAMES", "DecodeError", "Decoded", "VideoInfo", "decode_frames", "open_video", "probe"]

# Tried in this order; a decoder that cannot be imported (the pose
# environment has no PyAV) is passed over.
DECODERS = ("pyav", "opencv")

@dataclass(frozen=True)
class Decoded:
    """Frames decoded from one file.

    Attributes:
        frames: ``{index: RGB uint8 array}`` for each wanted index reached;
            ``(size, size, 3)`` when a size was asked, else the crop (or the
            whole frame).
        frame_count: frames the container declares (can be wrong).
        decoded_until: index of the last frame actually decoded; below
            ``max(wanted)`` when the file ends early.
        fps, width, height, decoder: as in :class:`VideoInfo`.
        decode_s: CPU seconds spent decoding.
        scale_s: CPU seconds spent cropping, scaling and converting.
    """

    frames: dict[int, np.ndarray]
    frame_count: int
    decoded_until: int
    fps: float
    width: int
    height: int
    decoder: str
    decode_s: float = 0.0
    scale_s: float = 0.0


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: empty file (0 bytes); re-download it")


_READERS = READERS  # tests swap a reader here


def open_video(path: str | Path, *, threads: int = 1, decoders: Iterable[str] = DECODERS) -> Reader:
    """Open ``path`` with the first decoder of ``decoders`` that can; use as a context manager.

    Raises:
        FileNotFoundError: no such file.
        DecodeError: empty, or no decoder can open it (the first one's message).
    """
    path = Path(path)
    _check_exists(path)
    first_error = None
    for name in decoders:
        try:
            return _READERS[name](path, threads)
        except ImportError:
            continue  # e.g. no PyAV in the pose environment
        except DecodeError as e:
            first_error = first_error or e
        except Exception as e:  # a file one reader cannot open goes to the next
            first_error = first_error or DecodeError(f"{path}: {name} cannot open the file ({type(e).__name__}: {e})")
    raise first_error or DecodeError(f"{path}: none of the decoders {tuple(decoders)} is installed")


def probe(path: str | Path) -> VideoInfo:
    """Container facts (frame count, fps, size) without decoding frames."""
    with open_video(path) as video:
        return video.info


def decode_frames(
    path: str | Path,
    wanted: Iterable[int] | Callable[[int], Iterable[int]],
    *,
    crop: Box | Callable[[int, int], Box] | None = None,
    size: int | None = None,
    threads: int = 1,
    decoders: Iterable[str] = DECODERS,
) -> Decoded:
    """Decode the frames at the 0-based indices ``wanted`` (any order, repeats ok), as RGB.

    Args:
        path: the video file.
        wanted: indices, or a function of the declared frame count that
            returns them (the file is opened once even when the range
            depends on its length, ``frame_end == -1``).
        crop: ``(x0, y0, x1, y1)`` pixel box (exclusive ends), or a function
            of ``(width, height)`` returning one; None = the whole frame.
        size: scale the crop to ``size`` x ``size``; None = no scaling.
        threads: FFmpeg decoding threads per video.
        decoders: tried in order; the next one is tried when a decoder cannot
            open the file, decodes no frame of it, or raises anything while
            reading it.

    Exceptions raised by the ``wanted`` and ``crop`` functions propagate
    unchanged, so a caller can tell its own refusals from decoding errors.

    Raises:
        FileNotFoundError: no such file.
        DecodeError: no decoder can open the file or decode a frame of it.
    """
    path = Path(path)
    _check_exists(path)
    decoders = tuple(decoders)
    first_error = None
    for name in decoders:
        try:
            with open_video(path, threads=threads, decoders=(name,)) as video:
                info = video.info
                indices = _call(wanted, info.frame_count) if callable(wanted) else wanted
                indices = sorted({int(i) for i in indices})
                box = _call(crop, info.width, info.height) if callable(crop) else crop
                frames = dict(video.frames(indices, box, size)) if indices else {}
                if indices and video.decoded_until < 0:
                    raise DecodeError(f"{path}: no decodable frame (corrupt or truncated file)")
                return Decoded(
                    frames, info.frame_count, video.decoded_until, info.fps, info.width, info.height,
                    info.decoder, video.decode_s, video.scale_s,
                )
        except _CallerError as e:
            raise e.error from None
        except DecodeError as e:
            first_error = first_error or e
        except Exception as e:  # a reader that breaks on a file hands it to the next one
            first_error = first_error or DecodeError(f"{path}: {name} failed ({type(e).__name__}: {e})")
    raise first_error or DecodeError(f"{path}: none of the decoders {decoders} is installed")


class _CallerError(Exception):
    """Carries an exception raised by the caller's ``wanted`` or ``crop`` function past the readers' fallback."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # re-raised unchanged by decode_frames
        raise _CallerError(e) from e
