"""Preprocessing throughput: this pipeline vs the naive per-frame baseline.

    python benchmarks/preprocess.py [--videos 24] [--size 256] [--frames 20]

On one synthetic set of h264 videos (256² by default) with WLASL100's mix
of frame ranges (mostly whole short videos, some signs inside long YouTube
videos), in one run, each mode in its own process so peak RSS is its own:

* ``baseline``: what the official WLASL script does: decode every frame with
  OpenCV (BGR->RGB), crop and resize each one in Python, then sample T.
* ``pipeline``: ``wlasl.prepare`` (only sampled frames converted and resized,
  nothing decoded past the range), 1 and 2 workers, on N and 2N videos.
* ``decode``: decode-only time of the chosen decoder on the same frames
  (OpenCV), and of decord and PyAV for the choice of decoder.

Targets (issue 2): >= 3x the baseline, within 1.3x of decode-only, peak RSS
< 1 GB whatever the number of videos, near-linear speed-up 1 -> 2 workers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from wlasl.geometry import resolve_range, sample_indices, square_crop  # noqa: E402
from wlasl.metadata import load_wlasl  # noqa: E402


def _peak_rss_mb() -> float:
    """Peak RSS of this process and of its worker processes, in MB.

    VmHWM, not getrusage(RUSAGE_SELF): Linux carries ru_maxrss across
    fork+exec, so a child would report its parent's peak.
    """
    own = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1])
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024  # KiB -> MiB


def _instances(raw: Path):
    _, instances = load_wlasl(raw / "WLASL_v0.3.json")
    return [i for i in instances if (raw / "videos" / f"{i.video_id}.mp4").is_file()]


def mode_baseline(raw: Path, out: Path, frames: int, size: int) -> int:
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for inst in _instances(raw):
        cap = cv2.VideoCapture(str(raw / "videos" / f"{inst.video_id}.mp4"))
        processed = []
        while True:
            ok, frame = cap.read()  # decodes and converts every frame
            if not ok:
                break
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            h, w = frame.shape[:2]
            x0, y0, x1, y1 = square_crop(inst.bbox, w, h, 0.1)
            processed.append(cv2.resize(frame[y0:y1, x0:x1], (size, size)))
        cap.release()
        rng = resolve_range(inst.frame_start, inst.frame_end, len(processed))
        clip = np.stack([processed[i] for i in sample_indices(rng.first, rng.last, frames)])
        np.save(out / f"{inst.video_id}.npy", clip)
        n += 1
    return n


def mode_pipeline(raw: Path, out: Path, frames: int, size: int, workers: int) -> int:
    from wlasl.prepare import PrepareConfig, run_prepare

    cfg = PrepareConfig(
        metadata=raw / "WLASL_v0.3.json", videos=raw / "videos", out=out, frames=frames, size=size, workers=workers
    )
    return run_prepare(cfg, progress=False)["written"]


def mode_decode(raw: Path, frames: int, decoder: str) -> int:
    """Decode exactly the frames the pipeline needs, and nothing else."""
    from wlasl.video import decode_frames

    n = 0
    for inst in _instances(raw):
        path = raw / "videos" / f"{inst.video_id}.mp4"

        def plan(count, inst=inst):
            r = resolve_range(inst.frame_start, inst.frame_end, count)
            return sample_indices(r.first, r.last, frames)

        if decoder == "opencv":
            decode_frames(path, plan)
        elif decoder == "pyav":
            import av

            with av.open(str(path)) as c:
                stream = c.streams.video[0]
                wanted = set(plan(stream.frames).tolist())
                for i, f in enumerate(c.decode(stream)):
                    if i > max(wanted):
                        break
                    if i in wanted:
                        f.to_ndarray(format="rgb24")
        elif decoder == "decord":
            import decord

            vr = decord.VideoReader(str(path), num_threads=1)
            vr.get_batch(plan(len(vr)).tolist()).asnumpy()
        n += 1
    return n


def _wlasl_like_set(raw: Path, n: int, args) -> Path:
    """``n`` videos with WLASL100's mix of ranges.

    In WLASL100's metadata 90% of instances are whole videos (frame_end -1)
    and ~7% are signs inside long YouTube videos (median frame_start 2150).
    Here: whole short videos, plus one in eight with the sign 400-800 frames
    into a longer video (shorter than real ones, so the figure is
    conservative). Sensor noise makes h264 decode as hard as camera footage.
    """
    from wlasl.synthetic import make_synthetic

    width = int(args.size * args.aspect) // 2 * 2
    n_long = max(2, n // 8)
    common = {"glosses": 2, "width": width, "height": args.size, "broken": False, "noise": 6.0}
    short = make_synthetic(raw, per_gloss=(n - n_long) // 2, lead_in=(0, 2), tail=(0, 3), seed=1, **common)
    long = make_synthetic(
        raw / "long", per_gloss=n_long // 2, lead_in=(400, 800), tail=(50, 200), seed=2, first_id=80000, **common
    )
    meta = json.loads(short["metadata"].read_text())
    for entry, extra in zip(meta, json.loads(long["metadata"].read_text())):
        entry["instances"] += extra["instances"]
    for video in long["videos"].iterdir():
        video.rename(short["videos"] / video.name)
    short["metadata"].write_text(json.dumps(meta))
    return raw


def _child(args) -> None:
    raw, out = Path(args.raw), Path(args.out or args.raw)
    if args.mode == "make-set":
        _wlasl_like_set(raw, args.videos, args)
        return
    # Import everything any mode needs before the clock starts: the figures
    # compare per-clip work, not interpreter start-up.
    import cv2  # noqa: F401

    import wlasl.prepare  # noqa: F401
    import wlasl.video  # noqa: F401

    start = time.perf_counter()
    if args.mode == "baseline":
        n = mode_baseline(raw, out, args.frames, args.size)
    elif args.mode == "pipeline":
        n = mode_pipeline(raw, out, args.frames, args.size, args.workers)
    else:
        n = mode_decode(raw, args.frames, args.mode.split(":")[1])
    wall = time.perf_counter() - start
    print(json.dumps({"clips": n, "wall_s": wall, "rss_mb": _peak_rss_mb()}))


def _run(mode: str, raw: Path, tmp: Path, args, workers: int = 1) -> dict:
    out = tmp / f"out-{mode.replace(':', '-')}-{workers}-{raw.name}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, __file__, "--child", "--mode", mode, "--raw", str(raw), "--out", str(out),
        "--frames", str(args.frames), "--size", str(args.size), "--workers", str(workers),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=24, help="videos in the small set (the large set has twice as many)")
    p.add_argument("--size", type=int, default=256, help="raw video height in pixels (256 as in DESIGN.md's decoder figures)")
    p.add_argument("--aspect", type=float, default=1.0, help="raw width / height (16/9 for WLASL's 1280x720 sources)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--out-size", type=int, default=224, dest="out_size")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--raw", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)


    tmp = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    try:
        sets = {}
        for name, n in (("small", args.videos), ("large", 2 * args.videos)):
            # In a child process too, so this parent stays small (see _peak_rss_mb).
            subprocess.run(
                [sys.executable, __file__, "--child", "--mode", "make-set", "--raw", str(tmp / name),
                 "--videos", str(n), "--size", str(args.size), "--aspect", str(args.aspect)],
                check=True,
            )
            sets[name] = tmp / name
        args.size_raw, args.size = args.size, args.out_size  # clip side for the modes below
        small = sets["small"]
        rows = {
            "baseline (decode all, per-frame crop+resize)": _run("baseline", small, tmp, args),
            "pipeline, 1 worker": _run("pipeline", small, tmp, args, 1),
            "pipeline, 2 workers": _run("pipeline", small, tmp, args, 2),
            "pipeline, 1 worker, 2x videos": _run("pipeline", sets["large"], tmp, args, 1),
            "decode-only opencv (chosen)": _run("decode:opencv", small, tmp, args),
            "decode-only pyav": _run("decode:pyav", small, tmp, args),
            "decode-only decord": _run("decode:decord", small, tmp, args),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = rows["baseline (decode all, per-frame crop+resize)"]
    raw_px = f"{int(args.size_raw * args.aspect) // 2 * 2}x{args.size_raw}"
    print(
        f"\n{args.videos} videos (x2 for the large set; 1 in 8 a sign inside a long video), h264 {raw_px}, "
        f"{args.frames} frames at {args.out_size}² out\n"
    )
    print(f"{'mode':<46} {'clips/s':>9} {'vs baseline':>12} {'peak RSS MB':>12}")
    for name, r in rows.items():
        cps = r["clips"] / r["wall_s"]
        print(f"{name:<46} {cps:>9.1f} {cps / (base['clips'] / base['wall_s']):>11.2f}x {r['rss_mb']:>12.0f}")
    one = rows["pipeline, 1 worker"]
    dec = rows["decode-only opencv (chosen)"]
    two = rows["pipeline, 2 workers"]
    print()
    print(f"pipeline / decode-only time:        {one['wall_s'] / dec['wall_s']:.2f}x  (target <= 1.3x)")
    print(f"share of pipeline time decoding:    {dec['wall_s'] / one['wall_s']:.0%}")
    print(f"speed-up 1 -> 2 workers:            {one['wall_s'] / two['wall_s']:.2f}x  (target ~2x)")
    print(
        f"peak RSS N -> 2N videos:            {one['rss_mb']:.0f} -> {rows['pipeline, 1 worker, 2x videos']['rss_mb']:.0f} MB"
        "  (target flat, < 1024)"
    )


if __name__ == "__main__":
    main()
