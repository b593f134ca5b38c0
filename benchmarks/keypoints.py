"""Keypoint extraction speed: MediaPipe Holistic frames per second per core, beside decode-only.

    python benchmarks/keypoints.py [--real-videos DIR] [--videos 4] [--repeats 2]

Runs ``main/extract_keypoints.py`` (which re-runs itself in .venv-pose) with
1 worker on a set of clips, and the same frames decoded only (OpenCV, the
pose environment's decoder), each in its own process timed from outside
(``os.wait4``: CPU seconds include start-up, MediaPipe's graph set-up and
its threads). Frames per second per core = frames / CPU seconds.

Clips: the real WLASL sample clips when ``--real-videos`` (or
$SLR_REAL_WLASL) holds them, else WLASL-like synthetic 720p/1080p sources
(:func:`wlasl.synthetic.make_realsize`). On synthetic figures MediaPipe
finds no person, so it runs only its detector: the real clips' figure is
the one to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _timed(cmd: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    # communicate() reaped it: its rusage is in RUSAGE_CHILDREN; take the difference.
    return {"wall_s": wall, "stdout": stdout, "stderr": stderr, "rc": proc.returncode}


def _cpu_children() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _decode_child(raw: str) -> None:
    """Decode every frame of every instance's range as the extraction does (full-frame RGB), nothing else."""
    from wlasl.geometry import resolve_range
    from wlasl.metadata import load_wlasl
    from wlasl.video import open_video

    _, instances = load_wlasl(Path(raw) / "WLASL_v0.3.json")
    frames = 0
    for inst in instances:
        path = Path(raw) / "videos" / f"{inst.video_id}.mp4"
        if not path.is_file():
            continue
        with open_video(path, decoders=("opencv",)) as video:
            rng = resolve_range(inst.frame_start, inst.frame_end, video.info.frame_count)
            frames += sum(1 for _ in video.frames(list(range(rng.first, rng.last + 1)), None, None))
    print(json.dumps({"frames": frames}))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real-videos", default=os.environ.get("SLR_REAL_WLASL"), help="folder with real WLASL clips and their v0.3 JSON")
    p.add_argument("--videos", type=int, default=4, help="synthetic videos when there are no real ones (default 4)")
    p.add_argument("--repeats", type=int, default=2, help="runs per mode; medians are shown (default 2)")
    p.add_argument("--decode-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.decode_child:
        return _decode_child(args.decode_child)
    pose_py = Path(os.environ.get("SLR_POSE_VENV") or REPO / ".venv-pose") / "bin" / "python"
    if not pose_py.is_file():
        raise SystemExit(f"no pose environment at {pose_py}: run `make pose-setup` first")
    tmp = Path(tempfile.mkdtemp(prefix="bench-kp-"))
    try:
        raw = tmp / "raw"
        src = Path(args.real_videos) if args.real_videos else None
        if src is not None and (src / "videos").is_dir():
            from benchmarks.preprocess import _copy_real

            _copy_real(src, raw, copies=1)
            kind = "real WLASL sample clips"
        else:
            from wlasl.synthetic import make_realsize

            make_realsize(raw, videos=args.videos, seed=2)
            kind = "synthetic 720p/1080p (no person found: detector-only cost)"
        runs = {"extract": [], "decode": []}
        for _ in range(args.repeats):
            out = tmp / "store"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [
                sys.executable, str(REPO / "main" / "extract_keypoints.py"), "--metadata", str(raw / "WLASL_v0.3.json"),
                "--videos", str(raw / "videos"), "--out", str(out), "--no-progress", "--max-frames", "1000",
            ]
            before = _cpu_children()
            res = _timed(cmd)
            if res["rc"] != 0:
                raise SystemExit(f"extraction failed:\n{res['stderr'][-2000:]}")
            report = json.loads((out / "keypoints_report.json").read_text())
            runs["extract"].append({"cpu_s": _cpu_children() - before, "wall_s": res["wall_s"], "frames": report["frames_total"],
                                    "no_person": report["frames_no_person"], "no_hands": report["frames_no_hands"]})
            before = _cpu_children()
            res = _timed([str(pose_py), __file__, "--decode-child", str(raw)])
            frames = json.loads(res["stdout"].strip().splitlines()[-1])["frames"]
            runs["decode"].append({"cpu_s": _cpu_children() - before, "wall_s": res["wall_s"], "frames": frames})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ext, dec = runs["extract"], runs["decode"]
    frames = ext[0]["frames"]
    cpu_e, wall_e = statistics.median(r["cpu_s"] for r in ext), statistics.median(r["wall_s"] for r in ext)
    cpu_d, wall_d = statistics.median(r["cpu_s"] for r in dec), statistics.median(r["wall_s"] for r in dec)
    print(f"\n{kind}: {frames} frames; 1 worker; median of {args.repeats} runs (start-up included)")
    print(f"{'mode':<40} {'CPU s':>7} {'wall s':>7} {'frames/s per core':>18} {'frames/s wall':>14}")
    print(f"{'extract (MediaPipe Holistic, c=1)':<40} {cpu_e:>7.2f} {wall_e:>7.2f} {frames / cpu_e:>18.1f} {frames / wall_e:>14.1f}")
    print(f"{'decode-only (OpenCV, full-frame RGB)':<40} {cpu_d:>7.2f} {wall_d:>7.2f} {dec[0]['frames'] / cpu_d:>18.1f} {dec[0]['frames'] / wall_d:>14.1f}")
    print(f"decoding is {cpu_d / cpu_e:.0%} of the extraction's CPU; frames with no person {ext[0]['no_person']}, no hand {ext[0]['no_hands']}")


if __name__ == "__main__":
    main()
