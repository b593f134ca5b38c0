"""The two decoder front-ends behind :mod:`wlasl.video`: PyAV (primary) and OpenCV.

Both number frames in presentation order from 0, exactly as a sequential
read does, and hand out wanted frames as RGB uint8, cropped and scaled when
asked. See :mod:`wlasl.video` for why the PyAV path crops and scales in one
swscale pass straight from the decoder's YUV.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["READERS", "SCALE_FLAGS", "SEEK_MIN_FRAMES", "DecodeError", "Reader", "VideoInfo"]

# A seek costs about as much as decoding 20-30 frames (measured on 640x360
# h264: seek+grab 100-200 ms vs 1.8 ms a frame sequentially), so short
# lead-ins are cheaper to decode through.
SEEK_MIN_FRAMES = 32

# swscale flags of the crop+scale step: ``area`` is an antialiasing box
# filter, cheap at 3-5x; ``full_chroma_int`` interpolates chroma at the
# output resolution (without it the conversion reads ~2 grey levels dark).
SCALE_FLAGS = "area+full_chroma_int"

Box = tuple[int, int, int, int]

# FFmpeg filters that turn a frame with a display rotation of 0/90/180/270
# degrees (counter-clockwise) upright.
_TURN_FILTERS = {0: (), 1: (("transpose", "cclock"),), 2: (("hflip", ""), ("vflip", "")), 3: (("transpose", "clock"),)}


def _quarter_turns(degrees: float) -> int:
    """A display rotation in degrees -> counter-clockwise quarter turns 0..3 (nearest)."""
    return int(round(float(degrees or 0) / 90.0)) % 4


class DecodeError(ValueError):
    """A video that cannot be opened or holds no decodable frame."""


@dataclass(frozen=True)
class VideoInfo:
    """Container facts, read without decoding.

    Attributes:
        frame_count: frames the container declares (can be wrong: truncated
            files and bad headers declare more than they hold).
        fps: the file's real frame rate.
        width: frame width in pixels.
        height: frame height in pixels.
        decoder: ``pyav`` or ``opencv``.
    """

    frame_count: int
    fps: float
    width: int
    height: int
    decoder: str


class Reader:
    """What both decoders offer: ``info``, then ``frames(...)`` once."""

    info: VideoInfo

    def __init__(self) -> None:
        self.decoded_until = -1
        self.decode_s = 0.0
        self.scale_s = 0.0

    def frames(self, wanted: list[int], crop: Box | None, size: int | None) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _PyAVReader(Reader):
    def __init__(self, path: Path, threads: int):
        super().__init__()
        import av

        # PyAV's default log level (None) drops FFmpeg's messages without
        # calling into Python: a damaged file is a recorded skip, not console
        # noise. Any other level routes every message through a Python
        # callback, which deadlocks with frame-threaded decoding (PyAV
        # issues 751, 909): never set one here.
        self._av, self._path = av, path
        try:
            # About 1.6% of real WLASL files carry stream tags that are not
            # UTF-8 (a Latin-1 or GBK handler name); PyAV decodes every tag
            # at open and would raise UnicodeDecodeError. The tags are never
            # read here, so undecodable bytes become U+FFFD.
            self._container = av.open(str(path), metadata_errors="replace")
        except Exception as e:  # whatever PyAV raises at open, the next reader tries
            raise DecodeError(f"{path}: PyAV cannot open the file ({type(e).__name__}: {e})") from None
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError(f"{path}: no video stream")
        stream = self._stream = self._container.streams.video[0]
        # One thread unless asked: --workers parallelises over videos, and
        # FFmpeg's frame threads cost CPU per clip (benchmarks/preprocess.py).
        stream.codec_context.thread_count = threads
        stream.codec_context.thread_type = "AUTO" if threads != 1 else "SLICE"
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        count = int(stream.frames or 0)
        if count <= 0 and stream.duration and stream.time_base and fps:
            # Containers without a frame count (mkv, webm): estimate it from
            # the duration, as OpenCV does; decoding shows the truth.
            count = int(round(float(stream.duration * stream.time_base) * fps))
        cc = stream.codec_context
        # The display rotation (phone videos) is a property of the frames in
        # PyAV, so the first frame is decoded now: the caller's crop is
        # planned in the upright frame, as OpenCV (which turns frames upright
        # itself) and every player show it.
        self._decoding = self._container.decode(stream)
        try:
            self._peeked = next(self._decoding)
        except (StopIteration, av.error.FFmpegError):
            self._peeked = None  # frames() finds nothing either: decode_frames reports it
        self._turns = _quarter_turns(self._peeked.rotation if self._peeked is not None else 0)
        width, height = (int(cc.height), int(cc.width)) if self._turns % 2 else (int(cc.width), int(cc.height))
        self.info = VideoInfo(count, fps, width, height, "pyav")

    def _graph(self, frame, crop: Box | None, size: int | None):
        """crop -> scale (+ YUV->RGB) -> rgb24, built for this frame's geometry."""
        av = self._av
        graph = av.filter.Graph()
        src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name, time_base=frame.time_base)
        nodes = [src]
        # Upright first (the crop box is in upright coordinates): FFmpeg's
        # rotation is counter-clockwise, as np.rot90.
        for turn in _TURN_FILTERS[self._turns]:
            nodes.append(graph.add(*turn))
        if crop is not None:
            x0, y0, x1, y1 = crop
            # exact=1: keep odd offsets (chroma moves by half a sample, well
            # below an output pixel) rather than shifting the luma box.
            nodes.append(graph.add("crop", f"w={x1 - x0}:h={y1 - y0}:x={x0}:y={y0}:exact=1"))
        w = h = size if size is not None else -1
        scale = f"w={w}:h={h}" if size is not None else "w=iw:h=ih"
        nodes.append(graph.add("scale", f"{scale}:flags={SCALE_FLAGS}"))
        nodes.append(graph.add("format", "rgb24"))
        nodes.append(graph.add("buffersink"))
        for a, b in zip(nodes, nodes[1:]):
            a.link_to(b)
        graph.configure()
        return graph, (frame.width, frame.height, frame.format.name)

    def _seek(self, first: int, last: int) -> dict[int, int] | None:
        """Jump to the keyframe before frame ``first``; return ``{pts: index}``, or None to decode from 0.

        Frame indices come from the packets' presentation times, sorted: no
        frame-rate arithmetic, so variable-rate files keep exact numbers.
        Demuxing reads no pixels; it stops a reorder window past ``last``.
        """
        self._rewind()  # the index counts packets from the first one
        pts, keys = [], []
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the end-of-stream marker; edit-list lead-in the decoder drops
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
            if len(pts) > last + 64:  # h264 reorders at most 16 frames
                break
        order = sorted(pts)
        if first >= len(order):
            return None
        before = [k for k in keys if k <= order[first]]
        if not before:
            return None
        self._container.seek(max(before), stream=self._stream, backward=True, any_frame=False)
        return {p: i for i, p in enumerate(order)}

    def frames(self, wanted, crop, size):
        av = self._av
        want = set(wanted)
        first, last = min(wanted), max(wanted)
        index = None
        if first >= SEEK_MIN_FRAMES:
            try:
                index = self._seek(first, last)
            except av.error.FFmpegError:
                index = None
            if index is None:
                self._rewind()
            decoding = self._container.decode(self._stream)
        else:
            # From the start: the frame decoded at open comes first.
            decoding = itertools.chain([self._peeked] if self._peeked is not None else [], self._decoding)
        self._peeked = None
        graph, shape = None, None
        count, prev = -1, None
        clock = time.process_time
        while True:
            t0 = clock()
            try:
                frame = next(decoding)
            except StopIteration:
                break
            except av.error.FFmpegError:
                break  # damaged data: keep what decoded, as OpenCV does
            finally:
                self.decode_s += clock() - t0
            if index is None:
                count += 1
                i = count
            else:
                i = index.get(frame.pts, -1)
                if i < first:
                    continue  # lead-up from the keyframe (or an undecodable leading B-frame)
                if prev is not None and i != prev + 1:
                    raise DecodeError(f"{self._path}: frame order after seeking is not continuous ({prev} -> {i})")
                prev = i
            self.decoded_until = i
            if i in want:
                t0 = clock()
                if graph is None or shape != (frame.width, frame.height, frame.format.name):
                    graph, shape = self._graph(frame, crop, size)
                graph.push(frame)
                rgb = graph.pull().to_ndarray()
                self.scale_s += clock() - t0
                yield i, rgb
            if i >= last:
                break

    def _rewind(self) -> None:
        self._container.seek(0, stream=self._stream, backward=True)

    def close(self) -> None:
        self._container.close()


class _OpenCVReader(Reader):
    def __init__(self, path: Path, threads: int):
        super().__init__()
        import cv2

        # A corrupt file is a recorded skip, not console noise: OpenCV's
        # warnings go quiet; errors still print.
        # (OpenCV 4.x in the pose environment has no cv2.utils.logging: there
        # OPENCV_LOG_LEVEL, set by wlasl.video before cv2 loads, does it.)
        cv_logging = getattr(cv2.utils, "logging", None)
        if cv_logging is not None:
            cv_logging.setLogLevel(cv_logging.LOG_LEVEL_ERROR)
        cv2.setNumThreads(1)
        self._cv2, self._path = cv2, path
        # Its FFmpeg decoder otherwise starts one thread per core.
        try:
            self._cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, max(threads, 1)])
        except Exception as e:  # whatever OpenCV raises at open, the next reader tries
            raise DecodeError(f"{path}: OpenCV cannot open the file ({type(e).__name__}: {e})") from None
        # Frames come upright (the display rotation applied), as from the PyAV reader.
        # OpenCV's FFmpeg backend does this by default; said here so a changed default cannot turn them.
        if hasattr(cv2, "CAP_PROP_ORIENTATION_AUTO"):
            self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        if not self._cap.isOpened():
            self._cap.release()
            raise DecodeError(f"{path}: OpenCV/FFmpeg cannot open the file (corrupt or not a video)")
        cap = self._cap
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width <= 0 or height <= 0:
            self._cap.release()
            raise DecodeError(f"{path}: no video stream")
        count, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
        self.info = VideoInfo(count, fps, width, height, "opencv")

    def frames(self, wanted, crop, size):
        cv2, cap = self._cv2, self._cap
        wanted = sorted(set(wanted))
        pos = 0
        if wanted[0] >= SEEK_MIN_FRAMES:
            # FFmpeg's seek lands on the keyframe before the target and
            # decodes forward to it, so the index stays exact; only trust it
            # when the position reads back.
            if cap.set(cv2.CAP_PROP_POS_FRAMES, wanted[0]) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == wanted[0]:
                pos = wanted[0]
            else:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        clock = time.process_time
        for target in wanted:
            t0 = clock()
            while pos <= target:
                if not cap.grab():
                    break
                self.decoded_until = pos
                pos += 1
            self.decode_s += clock() - t0
            if self.decoded_until != target:
                return  # the file ended before this frame
            t0 = clock()
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                return
            if crop is not None:
                x0, y0, x1, y1 = crop
                bgr = bgr[y0:y1, x0:x1]
            if size is not None:
                interp = cv2.INTER_AREA if bgr.shape[0] >= size else cv2.INTER_LINEAR
                bgr = cv2.resize(bgr, (size, size), interpolation=interp)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self.scale_s += clock() - t0
            yield target, rgb

    def close(self) -> None:
        self._cap.release()


READERS = {"pyav": _PyAVReader, "opencv": _OpenCVReader}
