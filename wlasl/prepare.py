"""The preprocessing stage: WLASL metadata + raw videos -> clip store.

Per instance: decode only the sampled frames of its range, crop to the
signer's bbox (square, with margin, clamped to the frame), resize to
``size``², and write a uint8 (T, H, W, 3) RGB clip plus its manifest row.
Bad input (missing or undecodable file, bbox outside the frame, range past
the end, an unsafe video_id) is a recorded skip, never a crash; see
``prepare_report.json``. Sharding, workers, rows, the manifest and the
report come from the stage runner (:mod:`wlasl.stage`), shared with the
keypoint stage.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from utils.core.argv import parse_strictly
from utils.core.config import MAX_FRAMES, MAX_SIZE
from utils.core.files import atomic_save_npy, atomic_write_text, file_sha256
from wlasl.clip_store import MANIFEST_COLUMNS
from wlasl.geometry import FrameRange, fit_bbox, resolve_range, square_crop, step_indices
from wlasl.metadata import Instance
from wlasl.stage import (
    Outcome,
    Stage,
    StageConfig,
    open_store,
    parse_shard,
    pending_instance,
    run_configured,
    source_fields,
    stage_options,
    stage_parser,
    summary,
)
from wlasl.video import DecodeError, decode_frames

__all__ = ["STAGE", "ClipSkip", "MadeClip", "Outcome", "PrepareConfig", "make_clip", "parse_prepare_argv", "parse_shard",
           "prepare_config", "prepare_parser", "process_instance", "run_prepare", "summary"]  # fmt: skip

SKIP_REASONS = ("missing", "corrupt", "bbox", "frame_range", "video_id")

STAGE = Stage(
    name="clips",
    report="prepare_report.json",
    columns=MANIFEST_COLUMNS,
    skip_reasons=SKIP_REASONS,
    notes=("padded", "clamped", "short_file", "step_fallback", "bbox_clamped", "bbox_rescaled"),
    data_dirs=("clips",),
    script="main/preprocess.py",
    store="clip store",
    description=(
        "Crop WLASL videos to the signer bbox and frame range, sample T frames, "
        "resize, and store uint8 clips (clip store: manifest.csv, labels.txt, clips/*.npy, "
        "prepare_report.json). Missing and broken videos are skipped and reported; reruns "
        "skip finished clips."
    ),
)


@dataclass(frozen=True)
class PrepareConfig(StageConfig):
    """What ``main/preprocess.py`` is asked to do: the shared stage options
    (:class:`wlasl.stage.StageConfig`; ``out`` is the clip store) and its own.

    Attributes:
        frames: T, frames per clip.
        frame_step: 1 = ``frames`` spread uniformly over the range; S > 1 =
            ``frames`` frames S apart, centred in the range (uniform when the
            range is shorter than ``1 + (frames - 1) * S``, noted
            ``step_fallback``).
        size: output side in pixels (172 MoViNet, 224 the others).
        margin: crop context around the bbox, fraction of its side.
        decode_threads: FFmpeg threads per video. 1 (the default) is the
            least CPU per clip; more only shortens the wall time of a run
            with fewer videos than cores (``benchmarks/preprocess.py``).
    """

    frames: int = 20
    frame_step: int = 1
    size: int = 224
    margin: float = 0.1
    decode_threads: int = 1

    def __post_init__(self):
        # Bounded: a clip is frames x size² x 3 bytes in memory (utils.core.config.MAX_FRAMES, MAX_SIZE).
        if not 1 <= self.frames <= MAX_FRAMES:
            raise ValueError(f"--frames expected 1..{MAX_FRAMES}, received {self.frames}")
        if not 1 <= self.frame_step <= MAX_FRAMES:
            raise ValueError(f"--frame-step expected 1..{MAX_FRAMES}, received {self.frame_step}")
        if not 8 <= self.size <= MAX_SIZE:
            raise ValueError(f"--size expected 8..{MAX_SIZE} pixels, received {self.size}")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"--margin expected 0..1 (fraction of the bbox side), received {self.margin}")
        if self.decode_threads < 1:
            raise ValueError(f"--decode-threads expected >= 1, received {self.decode_threads}")
        super().__post_init__()


class ClipSkip(Exception):
    """Why an instance gives no clip: ``reason`` is one of SKIP_REASONS, ``detail`` the message."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _plan(inst: Instance, cfg: PrepareConfig, count: int) -> tuple[FrameRange, np.ndarray, bool]:
    """Resolved range, the frame indices to take, and whether --frame-step fell back to uniform."""
    try:
        rng = resolve_range(inst.frame_start, inst.frame_end, count)
    except ValueError as e:  # the range starts past the end
        raise ClipSkip("frame_range", str(e)) from None
    idx, fell_back = step_indices(rng.first, rng.last, cfg.frames, cfg.frame_step)
    return rng, idx, fell_back


@dataclass(frozen=True)
class MadeClip:
    """One clip cut from a video (:func:`make_clip`), and the facts its manifest row records.

    Attributes:
        clip: uint8 ``(frames, size, size, 3)`` RGB, exactly what the store holds.
        range: the resolved frame range sampled from.
        crop: the square ``(x0, y0, x1, y1)`` cut from each frame.
        decoded: the decoder's result (frame count, fps, decoder, timings).
        notes: ``short_file``, ``clamped``, ``padded``, ``step_fallback``,
            ``bbox_clamped``, ``bbox_rescaled`` (:func:`wlasl.geometry.fit_bbox`).
    """

    clip: np.ndarray
    range: FrameRange
    crop: tuple[int, int, int, int]
    decoded: object
    notes: tuple[str, ...]


def make_clip(video: Path, inst: Instance, cfg: PrepareConfig) -> MadeClip:
    """Decode, crop, sample and resize one instance's clip (no file written).

    Preprocessing (:func:`process_instance`) and ``main/predict.py`` both call
    this, so a raw video given to a trained model is cut exactly like its
    training clips. Reads ``inst.bbox``, ``inst.frame_start``/``frame_end``
    and ``cfg.frames``/``frame_step``/``size``/``margin``/``decode_threads``.

    Raises:
        ClipSkip: the video is missing or undecodable, the bbox lies outside
            the frame, or the range starts past the end (``reason`` says which).
    """

    fits = []

    def crop(width: int, height: int):
        try:
            fit = fit_bbox(inst.bbox, width, height)
            fits.append(fit)
            return square_crop(fit.bbox, width, height, cfg.margin)
        except ValueError as e:
            raise ClipSkip("bbox", str(e)) from None

    notes: list[str] = []
    try:
        # One pass: the plan needs the declared frame count and the crop the
        # frame size, both known once the file is open.
        decoded = decode_frames(
            video, lambda count: _plan(inst, cfg, count)[1], crop=crop, size=cfg.size, threads=cfg.decode_threads
        )
        rng, idx, fell_back = _plan(inst, cfg, decoded.frame_count)
        if decoded.decoded_until < idx.max():
            # The container declared more frames than it holds (truncated file
            # or a wrong header): resample over what really decodes.
            notes.append("short_file")
            rng, idx, fell_back = _plan(inst, cfg, decoded.decoded_until + 1)
            again = decode_frames(video, idx, crop=crop, size=cfg.size, threads=cfg.decode_threads)
            if again.decoded_until < idx.max():
                raise DecodeError(f"{video}: frames {idx.min()}..{idx.max()} do not decode twice alike")
            decoded = replace(
                again, decode_s=decoded.decode_s + again.decode_s, scale_s=decoded.scale_s + again.scale_s
            )
    except FileNotFoundError as e:
        raise ClipSkip("missing", str(e)) from None
    except DecodeError as e:
        raise ClipSkip("corrupt", str(e)) from None
    fit = fits[-1]
    box = square_crop(fit.bbox, decoded.width, decoded.height, cfg.margin)
    if fit.status:
        notes.append(fit.status)
    if rng.clamped:
        notes.append("clamped")
    if rng.length < cfg.frames:
        notes.append("padded")
    if fell_back:
        notes.append("step_fallback")
    # Repeated indices (padding) repeat the frame; the decoder returned RGB
    # crops already at size x size.
    clip = np.stack([decoded.frames[int(i)] for i in idx])
    return MadeClip(clip, rng, box, decoded, tuple(notes))


def process_instance(inst: Instance, cfg: PrepareConfig) -> Outcome:
    """Make one clip (or say why not). Safe to call again: finished clips are kept."""
    todo = pending_instance(inst, cfg, "clips", ".npy")
    if isinstance(todo, Outcome):
        return todo
    clip_path, row_path, video = todo
    try:
        made = make_clip(video, inst, cfg)
    except ClipSkip as e:
        return Outcome(inst.video_id, "skipped", e.reason, e.detail)
    rng, decoded, notes = made.range, made.decoded, made.notes
    t0 = time.process_time()
    atomic_save_npy(clip_path, made.clip)
    row = {
        **source_fields(inst),
        "frame_start": rng.first + 1,
        "frame_end": rng.last + 1,
        "frame_count": decoded.frame_count if "short_file" not in notes else rng.last + 1,
        "fps_nominal": inst.fps_nominal,
        "fps_real": round(decoded.fps, 3),
        "sha256": file_sha256(video),
        "bbox": " ".join(map(str, inst.bbox)),
        "crop": " ".join(map(str, made.crop)),
        "frames": cfg.frames,
        "frame_step": cfg.frame_step,
        "size": cfg.size,
        "decoder": decoded.decoder,
        "status": "+".join(notes) or "ok",
        "path": f"clips/{inst.video_id}.npy",
    }
    # The row lands after the clip: a row on disk means a whole clip on disk.
    atomic_write_text(row_path, json.dumps(row))
    cpu_s = {"decode": decoded.decode_s, "scale": decoded.scale_s, "write": time.process_time() - t0}
    return Outcome(inst.video_id, "written", notes=notes, cpu_s={k: round(v, 5) for k, v in cpu_s.items()})


def _store_meta(cfg: PrepareConfig, glosses: list[str]) -> dict:
    return {
        "schema_version": 1,
        "frames": cfg.frames,
        "frame_step": cfg.frame_step,
        "size": cfg.size,
        "margin": cfg.margin,
        "num_classes": len(glosses),
        "subset": cfg.subset,
        "metadata": str(cfg.metadata),
        "nslt": str(cfg.nslt) if cfg.nslt else None,
        "drop_duplicates": cfg.drop_duplicates,
    }


def _open_store(cfg: PrepareConfig, glosses: list[str]) -> None:
    """Create the store, or check that an existing one was made the same way."""
    keys = ("frames", "size", "frame_step", "margin", "num_classes", "drop_duplicates")
    # Stores made before --frame-step / --drop-duplicates existed: step 1, duplicates kept.
    assumed = {"frame_step": 1, "drop_duplicates": False}
    open_store(cfg.out, STAGE, _store_meta(cfg, glosses), keys, glosses, assumed=assumed)


def run_prepare(cfg: PrepareConfig, progress: bool = True) -> dict:
    """Preprocess this shard's instances, then assemble the store's manifest and report.

    Returns:
        The assembled report (also written to ``prepare_report.json``); its
        ``run`` entry lists the instances this run lost to a killed worker.
    """
    return run_configured(STAGE, cfg, make_store=_open_store, work=process_instance, progress=progress)


def prepare_parser(epilog: str = "") -> argparse.ArgumentParser:
    """The command line of ``main/preprocess.py`` (what the experiment planner checks a store's options with)."""
    p = stage_parser(STAGE, epilog)
    p.add_argument("--frames", type=int, default=20, help=f"frames per clip T, 1..{MAX_FRAMES} (default 20)")
    p.add_argument(
        "--frame-step",
        type=int,
        default=1,
        help="1: spread --frames uniformly over the sign's range (default); S > 1: --frames frames S apart, "
        "centred in the range (the seed thesis: --frames 20 --frame-step 2); ranges too short for that "
        "fall back to uniform sampling and are listed as step_fallback in prepare_report.json",
    )
    p.add_argument("--size", type=int, default=224,
                   help=f"output side in pixels, 8..{MAX_SIZE}: 172 MoViNet, 224 others (default 224)")  # fmt: skip
    p.add_argument("--margin", type=float, default=0.1, help="crop margin around the bbox, fraction of its side (default 0.1)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument(
        "--decode-threads",
        type=int,
        default=1,
        help="FFmpeg threads per video (default 1: least CPU per clip; more only helps a run with fewer "
        "videos than cores)",
    )
    return p


def prepare_config(args: argparse.Namespace) -> PrepareConfig:
    """The PrepareConfig of parsed ``main/preprocess.py`` options (every value checked).

    Raises:
        ValueError: a value out of its range, or a bad ``--shard``.
    """
    return PrepareConfig(**stage_options(args), frames=args.frames, frame_step=args.frame_step, size=args.size,
                         margin=args.margin, decode_threads=args.decode_threads)  # fmt: skip


def parse_prepare_argv(argv: list[str]) -> PrepareConfig:
    """What ``main/preprocess.py ARGV`` would do, checked now (options spelled out, every value in range).

    Raises:
        ValueError: an option or value the script refuses.
    """
    return prepare_config(parse_strictly(prepare_parser(), argv))
