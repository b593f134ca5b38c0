"""Recognise the sign in a raw video with a run's model or one of its exports.

The video is cut by :func:`wlasl.prepare.make_clip`, the function that made
the run's clip store (same decoder, frame range, bbox crop, temporal sampling
and resize, with the store's geometry), and then by the evaluation
transform (centre window), so a video that is in the store gives exactly
its stored clip and the logits evaluation gave it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.export.contract import model_input, read_contract, store_geometry
from utils.core.argv import parse_strictly
from utils.core.metrics import softmax

__all__ = ["Prediction", "check_window", "parse_bbox", "parse_predict_argv", "predict_parser", "predict_video", "video_clip"]

_MAX_PIXEL = 100_000  # larger than any video frame: a box beyond it is a typo


@dataclass
class Prediction:
    """What ``predict_video`` found.

    Attributes:
        video: the video path.
        source: ``run`` or ``export:<name>``.
        top: ``[{"label", "gloss", "prob"}]``, most probable first.
        logits: the model's logits ``(C,)``.
        crop: the square cut from each frame ``(x0, y0, x1, y1)``.
        frame_range: resolved 1-based ``(first, last)`` frames sampled from.
        notes: preprocessing notes (``padded``, ``clamped``, ``short_file``).
        stream: per-frame running predictions (``--stream``): ``[{"frame", "gloss", "prob"}]``.
    """

    video: str
    source: str
    top: list[dict]
    logits: np.ndarray
    crop: tuple[int, int, int, int]
    frame_range: tuple[int, int]
    notes: tuple[str, ...] = ()
    stream: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["logits"] = [float(v) for v in self.logits]
        return out


def parse_bbox(text: str | None) -> tuple[int, int, int, int] | None:
    """``"x0,y0,x1,y1"`` -> ints (None stays None).

    Raises:
        ValueError: not four integers with x0 < x1 and y0 < y1.
    """
    if text is None:
        return None
    try:
        # float first ("10.0" is 10); inf and nan are no pixel (int() of them raises OverflowError / ValueError)
        box = tuple(int(float(v)) for v in text.split(","))
    except (ValueError, OverflowError):
        box = ()
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1] or min(box) < 0 or max(box) > _MAX_PIXEL:
        raise ValueError(f"--bbox expected x0,y0,x1,y1 in pixels (0..{_MAX_PIXEL}) with x0 < x1 and y0 < y1, "
                         f"received {text!r}")  # fmt: skip
    return box


def check_window(start: int | None, end: int | None, top: int = 1) -> tuple[int, int]:
    """``(start, end)`` of a frame window (default 1 and -1: the whole video), checked with ``top``.

    Raises:
        ValueError: not 1 <= start <= end (end -1 = to the end), or top < 1.
    """
    start = 1 if start is None else start
    end = -1 if end is None else end
    if start < 1 or (end != -1 and end < start):
        raise ValueError(f"--start/--end expected 1 <= start <= end (1-based frames; end -1 = to the end), received {start}..{end}")
    if top < 1:
        raise ValueError(f"--top expected >= 1, received {top}")
    return start, end


def predict_parser(epilog: str = "") -> argparse.ArgumentParser:
    """The command line of ``main/predict.py`` (what the experiment planner checks an export's options with)."""
    p = argparse.ArgumentParser(
        prog="main/predict.py",
        description="Top glosses of a raw video, cut like the run's clip store, through the run's model or an export.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", type=Path, help="a video file (mp4, ...)")
    p.add_argument("--run", required=True, type=Path, help="run directory (results/runs/<run_id>)")
    p.add_argument("--export", help="use RUN/exports/<NAME> instead of the run's framework model")
    p.add_argument("--bbox", help="signer box x0,y0,x1,y1 in source pixels (default the whole frame)")
    p.add_argument("--start", type=int, help="first frame, 1-based (default 1)")
    p.add_argument("--end", type=int, help="last frame, 1-based inclusive (default the last)")
    p.add_argument("--top", type=int, default=5, help="glosses to list (default 5)")
    p.add_argument("--stream", action="store_true", help="stream MoViNet runs: print the running prediction after each frame")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def parse_predict_argv(argv: list[str]) -> argparse.Namespace:
    """What ``main/predict.py ARGV`` would be asked, checked now (options spelled out, bbox and window valid).

    Raises:
        ValueError: an option or value the script refuses.
    """
    args = parse_strictly(predict_parser(), argv)
    parse_bbox(args.bbox)
    check_window(args.start, args.end, args.top)
    return args


def video_clip(video: str | Path, geometry: dict, *, bbox=None, start: int | None = None, end: int | None = None):
    """Cut a raw video into the clip preprocessing would store for it (:func:`wlasl.prepare.make_clip`).

    Args:
        video: a video file.
        geometry: the store's ``store.json`` geometry (``frames``, ``size``, ``margin``, ...).
        bbox: signer box ``(x0, y0, x1, y1)`` in source pixels; None = the whole frame.
        start: first frame, 1-based (default 1).
        end: last frame, 1-based inclusive (default -1: to the end).

    Returns:
        :class:`wlasl.prepare.MadeClip`.

    Raises:
        FileNotFoundError: no such video.
        ValueError: unreadable video, a bbox outside the frame, or a bad frame range.
    """
    from wlasl.metadata import Instance
    from wlasl.prepare import ClipSkip, PrepareConfig, make_clip
    from wlasl.video import DecodeError, probe

    video = Path(video)
    if video.is_dir():
        raise FileNotFoundError(f"{video} is a folder, expected a video file (e.g. raw/videos/69241.mp4)")
    if not video.is_file():
        raise FileNotFoundError(f"video not found: {video}")
    start, end = check_window(start, end)
    try:
        info = probe(video)
    except DecodeError as e:
        raise ValueError(f"unreadable video: {e}") from None
    box = tuple(bbox) if bbox is not None else (0, 0, info.width, info.height)
    inst = Instance(video_id=video.stem, gloss="", label=-1, split="predict", signer_id=-1, bbox=box,
                    frame_start=start, frame_end=end, fps_nominal=0.0)  # fmt: skip
    known = {f.name for f in dataclasses.fields(PrepareConfig)} - {"metadata", "videos", "out"}
    cfg = PrepareConfig(metadata=video, videos=video.parent, out=video.parent, **{k: v for k, v in geometry.items() if k in known})
    try:
        return make_clip(video, inst, cfg)
    except ClipSkip as e:
        if e.reason == "bbox":
            raise ValueError(f"{video}: --bbox {list(box)} does not fit the {info.width}x{info.height} video ({e.detail}); "
                             f"give x0,y0,x1,y1 inside 0..{info.width}, 0..{info.height}") from None  # fmt: skip
        if e.reason == "frame_range":
            raise ValueError(f"{video}: --start/--end: {e.detail}") from None
        raise ValueError(f"unreadable video: {e.detail}") from None


def _geometry(run_dir: Path, contract: dict | None) -> tuple[dict, int, int]:
    """(store geometry, model frames, model size) from the export contract or the run's config and store."""
    if contract is not None:
        pre = contract["preprocessing"]
        geometry, frames, size = pre.get("store"), pre["frames"], pre["size"]
    else:
        from models.restore import read_run_config

        cfg = read_run_config(run_dir)
        frames, size = cfg.model.frames, cfg.model.size
        geometry = store_geometry(cfg.data.root)
    if not geometry:
        raise FileNotFoundError(
            f"{run_dir}: the clip geometry (frames, size, margin) comes from the run's store.json, which is not there; "
            "pass --export NAME (an export's contract.json holds it) or make the store available again"
        )
    return geometry, frames, size


def predict_video(video, run_dir, *, export: str | None = None, bbox=None, start=None, end=None, top: int = 5,
                  stream: bool = False, threads: int = 1) -> Prediction:  # fmt: skip
    """Top glosses of a raw video (see the module docstring).

    Raises:
        FileNotFoundError: no video, no run directory, or no model in it.
        ValueError: unreadable video, bad bbox or frame range.
        ExportError: no such export, or no streaming model for ``stream``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json); pass --run results/runs/<run_id>")
    check_window(start, end, top)
    contract = read_contract(run_dir / "exports" / export) if export else None
    geometry, frames, size = _geometry(run_dir, contract)
    made = video_clip(video, geometry, bbox=bbox, start=start, end=end)
    x = model_input(made.clip, frames, size)
    running = None
    if export:
        from models.export.runtime import open_export

        glosses = contract["classes"]
        runner = open_export(run_dir / "exports" / export, threads=threads, stream=stream)
        running = list(runner.frames(x)) if stream else None
        logits = running[-1] if stream else runner.logits(x)
    else:
        from models.restore import restore_run

        restored = restore_run(run_dir)
        glosses = restored.glosses
        if stream:
            from models.export.stream import build_stream_graph

            running = list(build_stream_graph(restored).frames(x))
            logits = running[-1]
        else:
            from models.export.runtime import FrameworkRunner

            logits = FrameworkRunner(restored, threads=threads).logits(x)
    probs = softmax(np.asarray(logits, np.float64))[0]
    order = np.argsort(-probs, kind="stable")[:top]
    per_frame = []
    for t, lg in enumerate(running or []):
        p = softmax(np.asarray(lg, np.float64))[0]
        per_frame.append({"frame": t + 1, "gloss": glosses[int(p.argmax())], "prob": float(p.max())})
    return Prediction(
        video=str(video),
        source=f"export:{export}" if export else "run",
        top=[{"label": int(i), "gloss": glosses[int(i)], "prob": float(probs[i])} for i in order],
        logits=np.asarray(logits, np.float32)[0],
        crop=tuple(int(v) for v in made.crop),
        frame_range=(made.range.first + 1, made.range.last + 1),
        notes=made.notes,
        stream=per_frame,
    )


