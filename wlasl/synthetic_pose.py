"""Synthetic keypoint store: classes that differ only by how the hands move in time.

For the pose models' tests and the demo (``python -m wlasl.synthetic_pose
--out DIR``). It writes a keypoint store directly (the layout of
:mod:`wlasl.keypoint_store`, as ``main/extract_keypoints.py`` would), so no
MediaPipe and no video is needed.

Every clip shows one signer (a body skeleton with small sway, a face, two
hands of 21 joints) whose dominant hand travels along the same line in every
class, but forwards, backwards, out-and-back or back-and-out
(:data:`wlasl.synthetic.PATTERNS`): every class visits the same positions, so
a single frame or the set of frames tells nothing, and only a model that
uses time can tell the classes apart. Clips vary in length, speed, signer
placement and scale, joint noise, and a few frames lose a hand (as
MediaPipe's do).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from utils.core.files import atomic_save_npz, atomic_write_text
from wlasl.keypoint_store import FACE_SUBSET, KEYPOINT_COLUMNS, NUM_KEYPOINTS, PARTS, part_slices
from wlasl.synthetic import PATTERNS, synthetic_parser

__all__ = ["make_synthetic_keypoints", "main"]

_NAMES = tuple(PATTERNS)


def _skeleton(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A resting signer in normalised frame coordinates: body (33), face subset, a hand shape (21)."""
    body = np.zeros((33, 2), np.float32)
    body[0] = (0.5, 0.25)  # nose
    body[1:11] = np.array([0.5, 0.24]) + rng.normal(0, 0.01, (10, 2))  # eyes, ears, mouth
    body[11], body[12] = (0.62, 0.42), (0.38, 0.42)  # shoulders (left is the signer's left)
    body[13], body[14] = (0.66, 0.6), (0.34, 0.6)  # elbows
    body[15:23:2], body[16:23:2] = (0.64, 0.75), (0.36, 0.75)  # left / right wrist and hand points
    body[23], body[24] = (0.58, 0.85), (0.42, 0.85)  # hips
    body[25:33:2], body[26:33:2] = (0.58, 1.05), (0.42, 1.05)  # legs, below the frame as in WLASL
    face = np.array([0.5, 0.25]) + rng.normal(0, 0.03, (len(FACE_SUBSET), 2))
    angles = np.linspace(-0.6, 0.6, 5)
    hand = [(0.0, 0.0)] + [
        (np.sin(a) * r, -np.cos(a) * r) for a in angles for r in (0.02, 0.035, 0.05, 0.062)
    ]
    return {"body": body, "face": face.astype(np.float32), "hand": np.array(hand, np.float32)}


def _clip(rng: np.random.Generator, label: int, frames: int, rest: dict) -> tuple[np.ndarray, np.ndarray]:
    pattern = PATTERNS[_NAMES[label % len(_NAMES)]]
    slices = part_slices()
    scale = rng.uniform(0.85, 1.15)
    shift = rng.normal(0, 0.03, 2)
    points = np.zeros((frames, NUM_KEYPOINTS, 3), np.float32)
    present = np.ones((frames, len(PARTS)), bool)
    # The dominant (right) hand moves between two fixed points in front of the chest.
    start, end = np.array([0.36, 0.72]), np.array([0.58, 0.38])
    for t in range(frames):
        s = pattern(t / max(1, frames - 1))
        sway = 0.01 * np.sin(t / 5 + rng.uniform(0, 0.1))
        right = start + s * (end - start)
        left = np.array([0.64, 0.75]) + rng.normal(0, 0.004, 2)  # the other hand rests
        body = rest["body"].copy()
        body[:, 0] += sway
        body[14] = (body[12] + right) / 2  # the elbow follows the wrist
        body[[16, 18, 20, 22]] = right
        parts = {
            "body": body,
            "left_hand": left + rest["hand"] * [-1, 1],
            "right_hand": right + rest["hand"],
            "face": rest["face"] + [sway, 0],
        }
        for name, xy in parts.items():
            xy = (np.asarray(xy) - 0.5) * scale + 0.5 + shift + rng.normal(0, 0.003, np.shape(xy))
            points[t, slices[name], :2] = xy
            points[t, slices[name], 2] = rng.uniform(0.8, 1.0, len(xy)) if name == "body" else 1.0
    # A few frames lose a hand, as MediaPipe's do: zeros and a False flag.
    for p in (1, 2):
        gone = rng.random(frames) < 0.05
        points[gone, slices[PARTS[p][0]]] = 0
        present[gone, p] = False
    return points.astype(np.float16), present


def make_synthetic_keypoints(
    out: str | Path,
    *,
    glosses: int = 3,
    per_gloss: int = 12,
    frames: tuple[int, int] = (24, 40),
    max_frames: int = 200,
    seed: int = 0,
) -> Path:
    """Write a keypoint store under ``out``; return its path.

    Args:
        out: the store directory.
        glosses: number of classes (motion patterns; beyond 4 they repeat).
        per_gloss: clips per class (split about 60/20/20 train/val/test).
        frames: inclusive range of clip lengths.
        max_frames: recorded in store.json as the extraction cap.
        seed: everything is reproducible from it.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    names = [f"motion{g}_{_NAMES[g % len(_NAMES)]}" for g in range(glosses)]
    n_test = n_val = max(1, round(0.2 * per_gloss))
    rows, k = [], 0
    for label in range(glosses):
        for j in range(per_gloss):
            video_id = f"{95000 + k:05d}"
            k += 1
            t = int(rng.integers(frames[0], frames[1] + 1))
            points, present = _clip(rng, label, t, _skeleton(rng))
            atomic_save_npz(
                out / "keypoints" / f"{video_id}.npz", points=points, present=present, frames=np.arange(t, dtype=np.int32)
            )
            split = "test" if j < n_test else "val" if j < n_test + n_val else "train"
            counts = {f"frames_{name}": int(present[:, p].sum()) for p, (name, _n) in enumerate(PARTS)}
            rows.append(
                {"video_id": video_id, "gloss": names[label], "label": label, "split": split, "signer_id": j % 5,
                 "source": "synthetic-pose", "frame_start": 1, "frame_end": t, "frame_count": t, "fps_nominal": 25.0,
                 "fps_real": 25.0, "sha256": "", "width": 1280, "height": 720, "frames": t, **counts, "decoder": "none",
                 "status": "ok", "path": f"keypoints/{video_id}.npz"}
            )
    lines = [",".join(KEYPOINT_COLUMNS)] + [",".join(str(r[c]) for c in KEYPOINT_COLUMNS) for r in rows]
    atomic_write_text(out / "manifest.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / "labels.txt", "".join(f"{g}\n" for g in names))
    meta = {
        "schema_version": 1, "kind": "keypoints", "parts": [list(p) for p in PARTS], "face_subset": list(FACE_SUBSET),
        "num_keypoints": NUM_KEYPOINTS, "max_frames": max_frames, "num_classes": glosses, "subset": glosses,
        "metadata": None, "nslt": None, "extractor": "synthetic (wlasl.synthetic_pose)",
    }
    atomic_write_text(out / "store.json", json.dumps(meta, indent=2))
    report = {"requested": len(rows), "written": len(rows), "skipped": 0, "skips": [], "synthetic": True}
    atomic_write_text(out / "keypoints_report.json", json.dumps(report, indent=1))
    return out


def main(argv=None) -> None:
    parser = synthetic_parser(
        "wlasl.synthetic_pose",
        "Write a synthetic keypoint store whose classes differ only by hand motion in time.",
        out="store directory to write",
        per_gloss=12,
        unit="clips",
    )
    args = parser.parse_args(argv)
    path = make_synthetic_keypoints(args.out, glosses=args.glosses, per_gloss=args.per_gloss, seed=args.seed)
    print(f"wrote a keypoint store at {path}")


if __name__ == "__main__":
    main()
