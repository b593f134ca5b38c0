"""Skeleton videos: a keypoint store drawn as skeletons on black, written as a clip store.

The seed project's other ViViT input: MediaPipe Holistic keypoints drawn on a
black background, which any RGB family then trains on like a video. Input:
a keypoint store (:mod:`wlasl.keypoint_store`, made by
``main/extract_keypoints.py``); output: a clip store (:mod:`wlasl.clip_store`'s
layout: ``store.json``, ``labels.txt``, ``manifest.csv``, ``clips/*.npy``
uint8 ``(T, size, size, 3)``, ``prepare_report.json``), so its runs sit in
the same table as the RGB and pose runs.

Per clip:

- ``frames`` frames sampled uniformly over the stored keypoint frames
  (:func:`wlasl.geometry.sample_indices`; a shorter clip repeats frames and
  is noted ``padded``, as preprocessing does);
- framing: a square of the source frame's shorter side, centred on the
  signer (the median over the clip of the shoulders' midpoint, or of the
  nose when no shoulders were seen), kept inside the frame; the same square
  for every frame of the clip, so motion is not cancelled by re-centring;
  its pixels in the source frame are the row's ``crop``;
- drawing (OpenCV, anti-aliased lines, filled joints; widths scale with
  ``size``), one colour per part, RGB:

  ============  ===============  =================================================
  part          colour (RGB)     what is drawn
  ============  ===============  =================================================
  body          white            shoulders, arms, torso (MediaPipe Pose joints
                (255, 255, 255)  11-24; head and legs left out: the face is drawn
                                 finer, legs are below WLASL's frames)
  left hand     red              21 joints and their bones (MediaPipe Hands'
                (255, 64, 64)    connections); the signer's left
  right hand    blue             the same, the signer's right
                (64, 160, 255)
  face          yellow           the face subset (:data:`wlasl.keypoint_store.FACE_SUBSET`):
                (255, 220, 0)    brows, eyes, lips and the nose tip as dots
  ============  ===============  =================================================

  A part missing in a frame (``present`` False) is not drawn; nor is a body
  joint with confidence (MediaPipe's visibility) below :data:`MIN_VISIBILITY`.

The stage's runner (:mod:`wlasl.stage`) does the rest: resumable per-clip
files, rows written after their clip, the manifest and the report.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.core.files import atomic_save_npy, atomic_write_text
from wlasl.clip_store import MANIFEST_COLUMNS, SOURCE_COLUMNS
from wlasl.geometry import sample_indices
from wlasl.keypoint_store import PARTS, KeypointEntry, KeypointStore, part_slices
from wlasl.stage import Outcome, Stage, check_workers_and_shard, open_store, pending_item, run_stage

__all__ = ["BODY_EDGES", "COLOURS", "HAND_EDGES", "STAGE", "RenderConfig", "draw_frame", "render_clip", "run_render"]

# One colour per part (RGB), in the store's part order.
COLOURS = {
    "body": (255, 255, 255),
    "left_hand": (255, 64, 64),
    "right_hand": (64, 160, 255),
    "face": (255, 220, 0),
}
# MediaPipe Pose joints: shoulders 11/12, elbows 13/14, wrists 15/16, hips 23/24.
BODY_EDGES = ((11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24))
BODY_JOINTS = tuple(sorted({j for e in BODY_EDGES for j in e}))
# MediaPipe Hands: wrist 0; thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20; the palm's edges.
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (9, 10), (10, 11), (11, 12),
    (13, 14), (14, 15), (15, 16),
    (0, 17), (17, 18), (18, 19), (19, 20),
    (5, 9), (9, 13), (13, 17),
)  # fmt: skip
# Below this visibility MediaPipe's body joint is a guess (often off-screen): not drawn.
MIN_VISIBILITY = 0.5
_NOSE, _SHOULDERS = 0, (11, 12)

STAGE = Stage(
    name="skeleton clips",
    report="prepare_report.json",
    columns=MANIFEST_COLUMNS,
    skip_reasons=("unreadable", "video_id"),
    notes=("padded",),
    data_dirs=("clips",),
)


@dataclass(frozen=True)
class RenderConfig:
    """What ``main/render_keypoints.py`` is asked to do.

    Attributes:
        keypoints: the keypoint store to read.
        out: the clip store to write.
        frames: frames per clip (T).
        size: side of the square clips in pixels.
        workers: processes.
        shard: ``(i, n)``: this job handles clips i, i+n, ...
    """

    keypoints: Path
    out: Path
    frames: int = 20
    size: int = 224
    workers: int = 1
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"--frames expected >= 1, received {self.frames}")
        if self.size < 16:
            raise ValueError(f"--size expected >= 16 px (a skeleton needs room), received {self.size}")
        check_workers_and_shard(self.workers, self.shard)


@dataclass(frozen=True)
class _Item:
    """One clip to draw, in the shape the stage runner takes (a ``video_id`` and no metadata ``problem``)."""

    video_id: str
    entry: KeypointEntry
    row: dict
    problem: tuple[str, str] | None = None


def _square(points: np.ndarray, present: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """``(x0, y0, side)`` in source pixels: the shorter side's square, centred on the signer, inside the frame."""
    side = float(min(width, height))
    body = points[:, part_slices()["body"]]
    seen = present[:, 0]
    shoulders = body[seen][:, _SHOULDERS]
    shoulders = shoulders[(shoulders[:, :, 2] >= MIN_VISIBILITY).all(axis=1)]
    if len(shoulders):
        cx, cy = np.median(shoulders[:, :, :2].mean(axis=1), axis=0)
    elif seen.any():
        cx, cy = np.median(body[seen][:, _NOSE, :2], axis=0)
    else:
        cx, cy = 0.5, 0.5
    x0 = float(np.clip(cx * width - side / 2, 0, width - side))
    y0 = float(np.clip(cy * height - side / 2, 0, height - side))
    return x0, y0, side


def draw_frame(points: np.ndarray, present: np.ndarray, *, size: int, box: tuple[float, float, float], width: int,
               height: int) -> np.ndarray:  # fmt: skip
    """One frame's skeleton: uint8 ``(size, size, 3)`` RGB on black.

    Args:
        points: ``(K, 3)`` x, y (relative to the source frame) and confidence.
        present: ``(4,)`` which parts were found.
        size: output side.
        box: ``(x0, y0, side)`` of the source square drawn, in source pixels.
        width, height: the source frame's size (the keypoints' units).
    """
    import cv2

    canvas = np.zeros((size, size, 3), np.uint8)
    x0, y0, side = box
    scale = size / side
    xy = np.stack([(points[:, 0] * width - x0) * scale, (points[:, 1] * height - y0) * scale], axis=1)
    # Sub-pixel positions: OpenCV takes integer points with `shift` fractional bits.
    shift = 4
    fixed = np.round(np.nan_to_num(xy) * (1 << shift)).clip(-(2**24), 2**24).astype(np.int64)
    thick = max(1, round(size / 112))
    slices = part_slices()

    def pt(k: int) -> tuple[int, int]:
        return int(fixed[k, 0]), int(fixed[k, 1])

    def bones(offset: int, edges, ok, colour) -> None:
        for a, b in edges:
            if ok(a) and ok(b):
                cv2.line(canvas, pt(offset + a), pt(offset + b), colour, thick, cv2.LINE_AA, shift)
        for j in sorted({j for e in edges for j in e}):
            if ok(j):
                cv2.circle(canvas, pt(offset + j), thick << shift, colour, -1, cv2.LINE_AA, shift)

    for p, (name, _n) in enumerate(PARTS):
        if not present[p]:
            continue
        start = slices[name].start
        if name == "body":
            bones(start, BODY_EDGES, lambda j: points[j, 2] >= MIN_VISIBILITY, COLOURS[name])
        elif name == "face":
            for k in range(slices[name].start, slices[name].stop):
                cv2.circle(canvas, pt(k), max(1, thick // 2) << shift, COLOURS[name], -1, cv2.LINE_AA, shift)
        else:
            bones(start, HAND_EDGES, lambda j: True, COLOURS[name])
    return canvas


def render_clip(store: KeypointStore, entry: KeypointEntry, *, frames: int, size: int) -> tuple[np.ndarray, tuple, bool]:
    """A keypoint clip drawn: ``(uint8 (frames, size, size, 3), crop box (x0, y0, x1, y1) in source px, padded)``."""
    clip = store.load(entry)
    points, present = clip.points.astype(np.float32), clip.present
    if entry.width < 1 or entry.height < 1:
        raise ValueError(f"width and height expected >= 1 px, received {entry.width}x{entry.height}")
    n = len(points)
    idx = sample_indices(0, n - 1, frames)
    box = _square(points, present, entry.width, entry.height)
    out = np.stack([draw_frame(points[i], present[i], size=size, box=box, width=entry.width, height=entry.height)
                    for i in idx])  # fmt: skip
    x0, y0, side = box
    crop = (round(x0), round(y0), round(x0 + side), round(y0 + side))
    return out, crop, n < frames


def _render_one(item: _Item, cfg: RenderConfig, store: KeypointStore) -> Outcome:
    paths = pending_item(cfg.out, "clips", item.video_id, ".npy")
    if isinstance(paths, Outcome):
        return paths
    clip_path, row_path = paths
    try:
        clip, crop, padded = render_clip(store, item.entry, frames=cfg.frames, size=cfg.size)
    except ValueError as e:  # StoreError is a ValueError: an unreadable or malformed keypoint file
        return Outcome(item.video_id, "skipped", "unreadable", f"{item.entry.path}: {e}")
    atomic_save_npy(clip_path, clip)
    src = item.row
    row = {
        **{k: src[k] for k in SOURCE_COLUMNS},  # as the keypoint store has them
        "bbox": "",
        "crop": " ".join(map(str, crop)),
        "frames": cfg.frames,
        "frame_step": 1,
        "size": cfg.size,
        "decoder": "skeleton",
        "status": "padded" if padded else "ok",
        "path": f"clips/{item.video_id}.npy",
    }
    atomic_write_text(row_path, json.dumps(row))  # after the clip: a row on disk means a whole clip on disk
    return Outcome(item.video_id, "written", notes=("padded",) if padded else ())


def _work(item: _Item, cfg: RenderConfig) -> Outcome:
    return _render_one(item, cfg, _store(str(cfg.keypoints)))


@functools.lru_cache(maxsize=2)
def _store(root: str) -> KeypointStore:
    """The keypoint store, opened once per process (workers open their own)."""
    return KeypointStore(root)


def run_render(cfg: RenderConfig, progress: bool = True) -> dict:
    """Draw this shard's clips, then assemble the clip store's manifest and report.

    Returns:
        The assembled report (also written to ``prepare_report.json``).

    Raises:
        StoreError: no keypoint store at ``cfg.keypoints``, or ``cfg.out``
            holds a store made with another geometry.
    """
    store = KeypointStore(cfg.keypoints)
    meta = {
        "schema_version": 1,
        "kind": "clip",
        "frames": cfg.frames,
        "frame_step": 1,
        "size": cfg.size,
        "margin": None,
        "num_classes": store.num_classes,
        "subset": store.meta.get("subset"),
        "metadata": store.meta.get("metadata"),
        "nslt": store.meta.get("nslt"),
        "rendered_from": str(cfg.keypoints),
        "rendering": {"kind": "skeleton on black", "colours_rgb": {k: list(v) for k, v in COLOURS.items()},
                      "min_visibility": MIN_VISIBILITY, "framing": "source frame's shorter side, centred on the signer"},
    }  # fmt: skip
    open_store(cfg.out, STAGE, meta, ("frames", "size", "num_classes", "rendered_from"), store.labels)
    items = [_Item(e.video_id, e, row) for e, row in zip(store.entries, store.rows)]
    work = functools.partial(_work, cfg=cfg)
    return run_stage(STAGE, out=cfg.out, chosen=items, work=work, shard=cfg.shard, workers=cfg.workers, progress=progress)
