"""Synthetic mini-WLASL: real mp4 files with the real metadata schema.

For tests and the demo (``python -m wlasl.synthetic --out DIR``). Classes
differ only by *motion*: a hand-like blob travels along the same line in every
class, but forwards, backwards, out-and-back or back-and-out. Every class
visits the same positions, so a single frame cannot tell them apart and only
a model that uses time can. The blob moves inside the signer's bbox on a
random textured background, with a distractor blob outside the bbox.

The set also carries WLASL's awkward cases: ``frame_end == -1``, a
``frame_end`` one past the real end, lead-in frames before ``frame_start``,
files whose real fps (30) differs from the nominal 25, one missing video and
one corrupt video.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

__all__ = ["PATTERNS", "make_synthetic", "main", "synthetic_store", "write_mp4"]

# Position along the path (0..1) as a function of progress (0..1).
PATTERNS = {
    "forward": lambda p: p,
    "backward": lambda p: 1.0 - p,
    "out_and_back": lambda p: 1.0 - abs(2.0 * p - 1.0),
    "back_and_out": lambda p: abs(2.0 * p - 1.0),
}
_PATTERN_NAMES = tuple(PATTERNS)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # Smooth random texture: low-resolution noise scaled up, so backgrounds
    # vary between videos without looking like the blob.
    small = rng.integers(40, 200, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _class_path(label: int) -> tuple[str, float]:
    """Pattern name and line angle (radians) for a class."""
    pattern = _PATTERN_NAMES[label % len(_PATTERN_NAMES)]
    # Beyond 4 classes the line turns; the first 4 share one line, so small
    # test sets are purely temporal.
    angle = (label // len(_PATTERN_NAMES)) * np.pi / 5
    return pattern, angle


def _render_video(
    path: Path,
    rng: np.random.Generator,
    label: int,
    width: int,
    height: int,
    fps: float,
    n_frames: int,
    lead_in: int,
    motion_frames: int,
    bbox: tuple[int, int, int, int],
    noise: float = 0.0,
) -> None:
    pattern, angle = _class_path(label)
    bg = _background(rng, width, height)
    x0, y0, x1, y1 = bbox
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = 0.35 * min(x1 - x0, y1 - y0)
    radius = max(3, int(0.12 * min(x1 - x0, y1 - y0)))
    color = tuple(int(c) for c in rng.integers(200, 256, size=3))
    jitter = rng.normal(0, 0.02, size=2)
    # Distractor: moves at random, outside the bbox, so cropping is useful.
    dx, dy = (x1 + width) / 2 if x1 < width - 8 else x0 / 2, height * rng.uniform(0.2, 0.8)
    frames = []
    for t in range(n_frames):
        p = np.clip((t - lead_in) / max(1, motion_frames - 1), 0.0, 1.0)
        s = PATTERNS[pattern](p) * 2.0 - 1.0  # -1..1 along the line
        bx = cx + (s * np.cos(angle) + jitter[0]) * half
        by = cy + (s * np.sin(angle) + jitter[1]) * half
        frame = bg.copy()
        cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), (90, 90, 90), 1)
        cv2.circle(frame, (int(bx), int(by)), radius, color, -1, lineType=cv2.LINE_AA)
        ddx = dx + rng.normal(0, 2)
        ddy = dy + rng.normal(0, 2)
        cv2.circle(frame, (int(ddx), int(ddy)), max(2, radius // 2), (30, 200, 30), -1)
        if noise:
            # Sensor noise: makes h264 work as hard as on camera footage.
            frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
    write_mp4(path, frames, fps)


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Encode BGR frames as h264 mp4 (what WLASL's files are), yuv420p."""
    from fractions import Fraction

    import av

    height, width = frames[0].shape[:2]
    # faststart puts the index (moov) first, as streamed web video has it, so
    # a download cut short still opens and yields its first frames.
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Keyframes every 12 frames, as in web video: seeking has to decode
        # forward from a keyframe, which the decoder tests rely on.
        stream.options = {"preset": "ultrafast", "g": "12", "crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_synthetic(
    out: str | Path,
    *,
    glosses: int = 3,
    per_gloss: int = 8,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
    broken: bool = True,
    lead_in: tuple[int, int] = (0, 6),
    tail: tuple[int, int] = (0, 5),
    noise: float = 0.0,
    first_id: int = 90000,
) -> dict:
    """Write a mini-WLASL under ``out``.

    Args:
        out: directory; receives ``WLASL_v0.3.json``, ``nslt_<glosses>.json``
            and ``videos/<video_id>.mp4``.
        glosses: number of classes.
        per_gloss: videos per class (split about 60/20/20 train/val/test).
        width: frame width of the raw videos.
        height: frame height of the raw videos.
        seed: everything is reproducible from it.
        broken: add one missing and one corrupt video (both in train).
        lead_in: range of frames before the sign starts (``frame_start - 1``).
        tail: range of frames after the sign ends (when ``frame_end`` is set).
        noise: std of per-pixel sensor noise (0 = clean, fast to decode).
        first_id: video ids count up from here (keep sets apart when merging).

    Returns:
        ``{"metadata", "nslt", "videos", "missing", "corrupt"}`` paths and ids.
    """
    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries, nslt = [], {}
    vid = 0
    n_test = max(1, round(0.2 * per_gloss))
    n_val = max(1, round(0.2 * per_gloss))
    for label in range(glosses):
        instances = []
        for k in range(per_gloss):
            video_id = f"{first_id + vid:05d}"
            vid += 1
            split = "test" if k < n_test else "val" if k < n_test + n_val else "train"
            fps = 30.0 if k % 3 == 0 else 25.0  # metadata always says 25
            motion = int(rng.integers(16, 28))
            lead = int(rng.integers(*lead_in))
            after = int(rng.integers(*tail))
            n_frames = lead + motion + after
            side = int(rng.uniform(0.55, 0.8) * height)
            bx0 = int(rng.integers(0, width - side))
            by0 = int(rng.integers(0, height - side))
            bbox = (bx0, by0, bx0 + side + int(rng.integers(-8, 8)), by0 + side)
            frame_start = lead + 1
            # Cycle through the real-world ways frame_end is written.
            kind = k % 4
            frame_end = {0: -1, 1: lead + motion, 2: n_frames + 1, 3: lead + motion}[kind]
            if kind == 0:
                # -1 means "to the end": let the motion run to the last frame.
                n_frames = lead + motion
            _render_video(videos / f"{video_id}.mp4", rng, label, width, height, fps, n_frames, lead, motion, bbox, noise)
            instances.append(
                {
                    "bbox": list(bbox),
                    "fps": 25,
                    "frame_end": frame_end,
                    "frame_start": frame_start,
                    "instance_id": k,
                    "signer_id": int(rng.integers(0, 10)),
                    "source": "synthetic",
                    "split": split,
                    "url": f"synthetic://{video_id}",
                    "variation_id": 0,
                    "video_id": video_id,
                }
            )
            end = n_frames if frame_end in (-1, n_frames + 1) else frame_end
            nslt[video_id] = {"subset": split, "action": [label, frame_start, end]}
        entries.append({"gloss": f"motion{label}_{_class_path(label)[0]}", "instances": instances})

    missing = corrupt = None
    if broken and glosses and per_gloss > n_test + n_val + 1:
        train0 = [i for i in entries[0]["instances"] if i["split"] == "train"]
        missing = train0[-1]["video_id"]
        (videos / f"{missing}.mp4").unlink()
        corrupt = train0[-2]["video_id"]
        # A truncated header: real files die this way when a download stops.
        data = (videos / f"{corrupt}.mp4").read_bytes()
        (videos / f"{corrupt}.mp4").write_bytes(data[:48])

    meta_path = out / "WLASL_v0.3.json"
    meta_path.write_text(json.dumps(entries, indent=1))
    nslt_path = out / f"nslt_{glosses}.json"
    nslt_path.write_text(json.dumps(nslt))
    return {"metadata": meta_path, "nslt": nslt_path, "videos": videos, "missing": missing, "corrupt": corrupt}


def synthetic_store(
    root: str | Path,
    *,
    frames: int,
    size: int,
    store: str = "store",
    workers: int = 1,
    progress: bool = False,
    **synthetic_kwargs,
) -> Path:
    """A synthetic set under ``root/raw``, preprocessed into ``root/<store>``; returns the store path.

    ``synthetic_kwargs`` go to :func:`make_synthetic` (glosses, per_gloss, seed, ...).
    An existing raw set is reused and finished clips are kept, so it is cheap to call again.
    """
    from wlasl.prepare import PrepareConfig, run_prepare

    root = Path(root)
    raw = root / "raw"
    if not (raw / "WLASL_v0.3.json").is_file():
        make_synthetic(raw, **synthetic_kwargs)
    out = root / store
    cfg = PrepareConfig(
        metadata=raw / "WLASL_v0.3.json", videos=raw / "videos", out=out, frames=frames, size=size, workers=workers
    )
    run_prepare(cfg, progress=progress)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wlasl.synthetic",
        description="Write a synthetic mini-WLASL (real mp4 files, v0.3 JSON, nslt) whose classes differ by motion.",
    )
    parser.add_argument("--out", required=True, help="directory to write into")
    parser.add_argument("--glosses", type=int, default=3, help="number of classes (default 3)")
    parser.add_argument("--per-gloss", type=int, default=8, help="videos per class (default 8)")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-broken", action="store_true", help="leave out the missing and the corrupt video")
    args = parser.parse_args(argv)
    info = make_synthetic(
        args.out,
        glosses=args.glosses,
        per_gloss=args.per_gloss,
        width=args.width,
        height=args.height,
        seed=args.seed,
        broken=not args.no_broken,
    )
    print(f"wrote {info['metadata']}, {info['nslt']} and videos under {info['videos']}")


if __name__ == "__main__":
    main()
