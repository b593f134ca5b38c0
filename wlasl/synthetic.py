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

__all__ = ["PATTERNS", "REALSIZE_SOURCES", "make_realsize", "make_synthetic", "main", "synthetic_parser", "synthetic_store", "write_mp4"]

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


def write_mp4(path: Path, frames, fps: float, *, preset: str = "ultrafast", gop: int = 12, crf: int = 18) -> None:
    """Encode BGR frames (any iterable: frames are encoded as they come) as h264 mp4, yuv420p.

    Args:
        path: the file to write.
        frames: BGR uint8 (H, W, 3) arrays, all of one size.
        fps: frame rate of the file.
        preset: x264 preset. ``ultrafast`` (the default, quick for tests)
            has no B-frames and no CABAC; ``veryfast`` and slower encode like
            web video (CABAC, B-frames), which costs more to decode.
        gop: keyframe interval in frames.
        crf: x264 constant quality (lower = more bits).
    """
    from fractions import Fraction

    import av

    # faststart puts the index (moov) first, as streamed web video has it, so
    # a download cut short still opens and yields its first frames.
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                # Keyframes every `gop` frames, as in web video: seeking has to
                # decode forward from a keyframe, which the decoder tests rely on.
                stream.options = {"preset": preset, "g": str(gop), "crf": str(crf)}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"write_mp4({path}): no frames to write")
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


# WLASL's common source sizes (most files are 720p or 1080p, whole-range, 1-3 s).
REALSIZE_SOURCES = ((1280, 720), (1920, 1080))


def _signer_frames(rng: np.random.Generator, width: int, height: int, n_frames: int, label: int):
    """Yield BGR frames of a signer-sized figure whose hands trace the class's pattern.

    The figure fills the frame height like a WLASL signer (head, torso,
    arms, hands); a textured backdrop, a slight camera shake and sensor
    noise give the encoder real work, so decoding costs what camera
    footage costs.
    """
    pattern, angle = _class_path(label)
    # A room-like backdrop: large smooth blotches (a few per frame width).
    smooth = cv2.resize(rng.integers(60, 190, (6, 10, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    grain = cv2.resize(rng.integers(0, 30, (height // 2, width // 2), dtype=np.uint8), (width, height))
    bg = cv2.add(smooth, cv2.cvtColor(grain, cv2.COLOR_GRAY2BGR))
    noise = [rng.integers(0, 7, (height, width, 3), dtype=np.uint8) for _ in range(3)]
    cx, unit = width / 2 + rng.uniform(-0.1, 0.1) * width, height / 10
    skin = tuple(int(c) for c in rng.integers(90, 200, 3))
    shirt = tuple(int(c) for c in rng.integers(20, 160, 3))
    shoulder_y, hip_y = int(3.3 * unit), int(10.5 * unit)
    for t in range(n_frames):
        frame = np.roll(bg, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
        # Torso with stripes (texture moving with the body), then the head.
        sway = 0.15 * unit * np.sin(t / 9)
        body = (int(cx + sway), int(hip_y))
        cv2.ellipse(frame, body, (int(2.2 * unit), int(7 * unit)), 0, 180, 360, shirt, -1, cv2.LINE_AA)
        for k in range(-2, 3):
            x = body[0] + int(k * 0.8 * unit)
            cv2.line(frame, (x, shoulder_y), (x, hip_y), tuple(c // 2 for c in shirt), max(1, int(unit / 8)))
        cv2.circle(frame, (body[0], int(1.8 * unit)), int(1.2 * unit), skin, -1, cv2.LINE_AA)
        p = PATTERNS[pattern](t / max(1, n_frames - 1)) * 2.0 - 1.0
        for side in (-1, 1):
            shoulder = (body[0] + side * int(1.8 * unit), shoulder_y)
            hx = body[0] + side * unit * (1.2 + 1.5 * (p * np.cos(angle) + 1))
            hy = 5.5 * unit - 2.5 * unit * p * (np.sin(angle) + 0.6 * side)
            hand = (int(hx), int(hy))
            cv2.line(frame, shoulder, hand, shirt, int(0.6 * unit), cv2.LINE_AA)
            cv2.circle(frame, hand, int(0.45 * unit), skin, -1, cv2.LINE_AA)
        frame = cv2.subtract(cv2.add(frame, noise[t % 3]), noise[(t + 1) % 3])
        yield frame


def make_realsize(
    out: str | Path,
    *,
    videos: int = 8,
    sources: tuple[tuple[int, int], ...] = REALSIZE_SOURCES,
    frames: tuple[int, int] = (30, 90),
    glosses: int = 2,
    seed: int = 0,
    first_id: int = 70000,
) -> dict:
    """Write WLASL-like sources: 720p/1080p h264, 30-90 frames, whole range, a signer filling the height.

    What real WLASL files look like to a decoder (web-video h264 with
    CABAC and B-frames, a keyframe a second), for the preprocessing
    benchmark; :func:`make_synthetic` makes the small files the tests use.

    Args:
        out: directory; receives ``WLASL_v0.3.json`` and ``videos/``.
        videos: number of videos, alternating over ``sources``.
        sources: ``(width, height)`` frame sizes.
        frames: inclusive range of frame counts.
        glosses: number of classes (hand-motion patterns).
        seed: everything is reproducible from it.
        first_id: video ids count up from here.

    Returns:
        ``{"metadata", "videos", "frames"}``: paths and the total frame count.
    """
    out = Path(out)
    folder = out / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = [{"gloss": f"motion{g}_{_class_path(g)[0]}", "instances": []} for g in range(glosses)]
    total = 0
    for k in range(videos):
        width, height = sources[k % len(sources)]
        n_frames = int(rng.integers(frames[0], frames[1] + 1))
        fps = (29.97, 25.0, 23.976)[k % 3]
        label = k % glosses
        video_id = f"{first_id + k:05d}"
        write_mp4(
            folder / f"{video_id}.mp4", _signer_frames(rng, width, height, n_frames, label), fps,
            preset="veryfast", gop=30, crf=20,
        )
        total += n_frames
        # The signer's box as WLASL draws it: about 0.7 of the height wide, head to frame bottom.
        half = int(0.35 * height)
        bbox = [width // 2 - half, int(0.05 * height), width // 2 + half, height]
        split = ("train", "train", "val", "test")[k % 4]
        entries[label]["instances"].append(
            {"bbox": bbox, "fps": 25, "frame_end": -1, "frame_start": 1, "instance_id": k, "signer_id": k % 5,
             "source": "synthetic-realsize", "split": split, "url": f"synthetic://{video_id}", "variation_id": 0,
             "video_id": video_id}
        )
    meta = out / "WLASL_v0.3.json"
    meta.write_text(json.dumps(entries, indent=1))
    return {"metadata": meta, "videos": folder, "frames": total}


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


def synthetic_parser(module: str, description: str, *, out: str, per_gloss: int, unit: str) -> argparse.ArgumentParser:
    """The command line both synthetic sets share (``python -m wlasl.synthetic`` and ``wlasl.synthetic_pose``)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--out", required=True, help=out)
    parser.add_argument("--glosses", type=int, default=3, help="number of classes (default 3)")
    parser.add_argument("--per-gloss", type=int, default=per_gloss, help=f"{unit} per class (default {per_gloss})")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> None:
    parser = synthetic_parser(
        "wlasl.synthetic",
        "Write a synthetic mini-WLASL (real mp4 files, v0.3 JSON, nslt) whose classes differ by motion.",
        out="directory to write into",
        per_gloss=8,
        unit="videos",
    )
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
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
