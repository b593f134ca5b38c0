"""The keypoint stage: WLASL metadata + raw videos -> keypoint store (MediaPipe Holistic).

Per instance: every frame of its 1-based range (clamped to the file, a
uniform sample of ``max_frames`` when longer, noted ``capped``) goes through
MediaPipe Holistic (``model_complexity=1``, the only one whose models its
0.10.21 wheel ships; tracking restarts for each video), and the body, hand
and face-subset landmarks land in ``keypoints/<video_id>.npz`` plus a
manifest row (layout: :mod:`wlasl.keypoint_store`). Instance selection,
sharding, workers that survive a kill, skip reasons, rows, manifest and
report are the preprocessing stage's own code (:mod:`wlasl.stage`).

Runs in the pose environment (``.venv-pose``): this module and what it
imports use only numpy, OpenCV, MediaPipe, tqdm, ``wlasl`` and
``utils.core``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from utils.core.argv import parse_strictly
from utils.core.files import atomic_save_npz, atomic_write_text, file_sha256
from wlasl.geometry import resolve_range, sample_indices
from wlasl.keypoint_store import FACE_SUBSET, KEYPOINT_COLUMNS, MAX_KEYPOINT_FRAMES, NUM_KEYPOINTS, PARTS, part_slices
from wlasl.metadata import Instance
from wlasl.stage import (
    Outcome,
    Stage,
    StageConfig,
    open_store,
    pending_instance,
    run_configured,
    source_fields,
    stage_options,
    stage_parser,
)
from wlasl.video import DecodeError, open_video

__all__ = ["STAGE", "KeypointConfig", "extract_instance", "keypoint_config", "keypoint_parser", "landmarks_to_array",
           "parse_keypoint_argv", "run_keypoints"]  # fmt: skip

SKIP_REASONS = ("missing", "corrupt", "frame_range", "video_id")


def _frames_without(rows: list[dict]) -> dict:
    """Report fields: per clip, the source frames (1-based) with no person and with no hand."""
    no_person = {r["video_id"]: r["no_person"] for r in rows if r.get("no_person")}
    no_hands = {r["video_id"]: r["no_hands"] for r in rows if r.get("no_hands")}
    total = sum(int(r["frames"]) for r in rows)
    return {
        "frames_total": total,
        "frames_no_person": sum(len(v) for v in no_person.values()),
        "frames_no_hands": sum(len(v) for v in no_hands.values()),
        "no_person": no_person,
        "no_hands": no_hands,
    }


STAGE = Stage(
    name="keypoint clips",
    report="keypoints_report.json",
    columns=KEYPOINT_COLUMNS,
    skip_reasons=SKIP_REASONS,
    notes=("clamped", "capped", "short_file"),
    data_dirs=("keypoints",),
    script="main/extract_keypoints.py",
    store="keypoint store",
    description=(
        "Run MediaPipe Holistic on every frame of each WLASL instance's range and store body, "
        "hand and face keypoints (keypoint store: manifest.csv, labels.txt, keypoints/*.npz, "
        "keypoints_report.json). Same instance selection, frame ranges, skips, sharding and resuming "
        "as main/preprocess.py."
    ),
    extra=_frames_without,
)


@dataclass(frozen=True)
class KeypointConfig(StageConfig):
    """What ``main/extract_keypoints.py`` is asked to do: the shared stage options
    (:class:`wlasl.stage.StageConfig`; ``out`` is the keypoint store, each of the
    ``workers`` holds one MediaPipe graph, ~16 frames/s) and its own.

    Attributes:
        max_frames: at most this many frames per clip (a longer range is
            sampled uniformly and noted ``capped``).
    """

    max_frames: int = 200

    def __post_init__(self):
        if not 1 <= self.max_frames <= MAX_KEYPOINT_FRAMES:
            raise ValueError(f"--max-frames expected 1..{MAX_KEYPOINT_FRAMES}, received {self.max_frames}")
        super().__post_init__()


_HOLISTIC = None  # one graph per process, reset for every video


@contextlib.contextmanager
def _quiet_fd2():
    """Silence file descriptor 2 (C++ code writes there directly, below Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _holistic():
    global _HOLISTIC
    if _HOLISTIC is None:
        # MediaPipe's C++ logs (glog/absl) would print a screen per worker.
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import mediapipe as mp

        # model_complexity=1: its pose model (pose_landmark_full) is in the
        # wheel; 0 and 2 would download theirs at run time.
        _HOLISTIC = mp.solutions.holistic.Holistic(
            static_image_mode=False, model_complexity=1, smooth_landmarks=True, refine_face_landmarks=False
        )
    else:
        _HOLISTIC.reset()  # tracking must not carry over from the previous video
    return _HOLISTIC


def landmarks_to_array(results) -> tuple[np.ndarray, np.ndarray]:
    """One frame's Holistic results -> ``(points (K, 3) float32, present (4,) bool)``.

    Body joints carry MediaPipe's visibility as confidence; hand and face
    landmarks 1.0 when their part was found; a missing part stays zero.
    """
    points = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    present = np.zeros(len(PARTS), bool)
    slices = part_slices()
    sources = {
        "body": (results.pose_landmarks, None),
        "left_hand": (results.left_hand_landmarks, None),
        "right_hand": (results.right_hand_landmarks, None),
        "face": (results.face_landmarks, FACE_SUBSET),
    }
    for p, (name, _n) in enumerate(PARTS):
        found, keep = sources[name]
        if found is None:
            continue
        marks = found.landmark if keep is None else [found.landmark[k] for k in keep]
        conf = [m.visibility for m in marks] if name == "body" else [1.0] * len(marks)
        points[slices[name]] = [(m.x, m.y, c) for m, c in zip(marks, conf)]
        present[p] = True
    return points, present


def extract_instance(inst: Instance, cfg: KeypointConfig) -> Outcome:
    """Extract one clip's keypoints (or say why not). Safe to call again: finished clips are kept."""
    todo = pending_instance(inst, cfg, "keypoints", ".npz")
    if isinstance(todo, Outcome):
        return todo
    npz_path, row_path, video = todo
    points, present, frames = [], [], []
    try:
        with open_video(video) as reader:
            info = reader.info
            try:
                rng = resolve_range(inst.frame_start, inst.frame_end, info.frame_count)
            except ValueError as e:
                return Outcome(inst.video_id, "skipped", "frame_range", str(e))
            capped = rng.length > cfg.max_frames
            wanted = sample_indices(rng.first, rng.last, cfg.max_frames) if capped else np.arange(rng.first, rng.last + 1)
            # Each (re)started graph makes MediaPipe's C++ side print absl
            # warnings that no setting silences ("Feedback manager requires a
            # model with a single signature", one per model per video):
            # harmless, so fd 2 is muted while MediaPipe runs. Python errors
            # still raise; the progress bar draws between clips.
            with _quiet_fd2():
                model = _holistic()
                for i, rgb in reader.frames(sorted(set(wanted.tolist())), None, None):
                    rgb.flags.writeable = False  # lets MediaPipe read it without a copy
                    p, pres = landmarks_to_array(model.process(rgb))
                    points.append(p)
                    present.append(pres)
                    frames.append(i)
            decoded_until = reader.decoded_until
    except DecodeError as e:
        return Outcome(inst.video_id, "skipped", "corrupt", str(e))
    if not frames:
        return Outcome(inst.video_id, "skipped", "corrupt", f"{video}: no decodable frame in {rng.first}..{rng.last}")
    # The file ended before the last wanted frame (a truncated file or a wrong header).
    short = decoded_until < int(wanted[-1])
    notes = [n for n, on in (("clamped", rng.clamped), ("capped", capped), ("short_file", short)) if on]
    pts = np.stack(points).astype(np.float16)
    pres = np.stack(present)
    idx = np.asarray(frames, np.int32)
    atomic_save_npz(npz_path, points=pts, present=pres, frames=idx)
    hands = pres[:, 1] | pres[:, 2]
    last = rng.last if "short_file" not in notes else decoded_until
    row = {
        **source_fields(inst),
        "frame_start": rng.first + 1,
        "frame_end": last + 1,
        "frame_count": info.frame_count if "short_file" not in notes else decoded_until + 1,
        "fps_nominal": inst.fps_nominal,
        "fps_real": round(info.fps, 3),
        "sha256": file_sha256(video),
        "width": info.width,
        "height": info.height,
        "frames": len(idx),
        **{f"frames_{name}": int(pres[:, p].sum()) for p, (name, _n) in enumerate(PARTS)},
        "decoder": info.decoder,
        "status": "+".join(notes) or "ok",
        "path": f"keypoints/{inst.video_id}.npz",
        # Not manifest columns: the report lists them (1-based source frames).
        "no_person": [int(i) + 1 for i in idx[~pres[:, 0]]],
        "no_hands": [int(i) + 1 for i in idx[~hands]],
    }
    # The row lands after the arrays: a row on disk means a whole clip on disk.
    atomic_write_text(row_path, json.dumps(row))
    return Outcome(inst.video_id, "written", notes=tuple(notes))


def _open_store(cfg: KeypointConfig, glosses: list[str]) -> None:
    meta = {
        "schema_version": 1,
        "kind": "keypoints",
        "parts": [list(p) for p in PARTS],
        "face_subset": list(FACE_SUBSET),
        "num_keypoints": NUM_KEYPOINTS,
        "max_frames": cfg.max_frames,
        "num_classes": len(glosses),
        "subset": cfg.subset,
        "metadata": str(cfg.metadata),
        "nslt": str(cfg.nslt) if cfg.nslt else None,
        "extractor": "mediapipe holistic 0.10.21, model_complexity 1",
        "drop_duplicates": cfg.drop_duplicates,
    }
    keys = ("kind", "num_keypoints", "max_frames", "num_classes", "drop_duplicates")
    open_store(cfg.out, STAGE, meta, keys, glosses, assumed={"drop_duplicates": False})


def run_keypoints(cfg: KeypointConfig, progress: bool = True) -> dict:
    """Extract this shard's instances, then assemble the store's manifest and report.

    Returns:
        The assembled report (also written to ``keypoints_report.json``).
    """
    return run_configured(STAGE, cfg, make_store=_open_store, work=extract_instance, progress=progress)


def keypoint_parser(epilog: str = "") -> argparse.ArgumentParser:
    """The command line of ``main/extract_keypoints.py`` (what the experiment planner checks a store's options with)."""
    p = stage_parser(STAGE, epilog)
    p.add_argument(
        "--max-frames",
        type=int,
        default=200,
        help=f"at most this many frames per clip, 1..{MAX_KEYPOINT_FRAMES}; a longer range is sampled uniformly "
        "(noted capped) (default 200)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes, one MediaPipe graph each (default 1)")
    return p


def keypoint_config(args: argparse.Namespace) -> KeypointConfig:
    """The KeypointConfig of parsed ``main/extract_keypoints.py`` options (every value checked).

    Raises:
        ValueError: a value out of its range, or a bad ``--shard``.
    """
    return KeypointConfig(**stage_options(args), max_frames=args.max_frames)


def parse_keypoint_argv(argv: list[str]) -> KeypointConfig:
    """What ``main/extract_keypoints.py ARGV`` would do, checked now (options spelled out, every value in range).

    Raises:
        ValueError: an option or value the script refuses.
    """
    return keypoint_config(parse_strictly(keypoint_parser(), argv))
