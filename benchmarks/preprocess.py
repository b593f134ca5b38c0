"""Preprocessing at the decoder's limit: the suite beside decode-only and a naive baseline.

    python benchmarks/preprocess.py [--cases realsize,real,small] [--videos 12] [--repeats 3]

Cases (each a set of h264 files and a v0.3 JSON):

* ``realsize``: WLASL-like sources from :func:`wlasl.synthetic.make_realsize`
  (720p and 1080p, 30-90 frames, whole range, a signer filling the height,
  web-video h264 with B-frames), where every frame must be decoded anyway.
* ``real``: the real sample clips (1280x720) when ``--real-videos`` holds
  them (each used 3 times over); left out otherwise.
* ``small``: the earlier 256² set, one in eight a sign 400-800 frames into a
  longer video (where seeking pays).

Modes, each in its own process, timed from the outside (``os.wait4``), so
CPU time and peak RSS include interpreter start-up and imports:

* ``decode-opencv``: ``VideoCapture.grab()`` on every frame of the range
  (issue 14's decode-only reference);
* ``decode-pyav``: PyAV decoding every frame of the range, 1 thread (the
  suite's decoder), and ``decode-pyav-2thr`` with 2 FFmpeg threads;
* ``suite``: ``main/preprocess.py`` with 1 and 2 workers (and with
  ``--decode-threads 2``);
* ``previous``: the suite before issue 14 (grab every frame, retrieve
  full-frame BGR for the sampled ones, INTER_AREA, BGR->RGB);
* ``naive``: decode and convert every frame, crop and resize each, keep T.

Each mode runs ``--repeats`` times, interleaved (paired runs); the table
shows medians and the share of CPU in each step (decode / convert /
crop+resize / write; the suite's crop, scale and conversion are one
swscale pass). Targets (issue 14): suite <= 1.2x decode-only CPU on the
real-size case, peak RSS < 200 MB for one worker.
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

MODES = {
    "decode-opencv": "decode-only, OpenCV grab() (issue 14's reference)",
    "decode-pyav": "decode-only, PyAV 1 thread (the suite's decoder)",
    "decode-pyav-2thr": "decode-only, PyAV 2 threads",
    "suite": "suite, 1 worker",
    "suite-2thr": "suite, 1 worker, --decode-threads 2",
    "suite-2w": "suite, 2 workers",
    "previous": "previous suite (full-frame BGR, INTER_AREA)",
    "naive": "naive (convert + resize every frame)",
}
STEPS = ("decode", "convert", "crop+resize", "write")


# ---- the modes (run in a child process) -----------------------------------------------------


def _jobs(raw: Path, frames: int):
    """(path, sampled indices, range first, range last, bbox) per instance with a video."""
    import av

    from wlasl.geometry import resolve_range, sample_indices
    from wlasl.metadata import load_wlasl

    _, instances = load_wlasl(raw / "WLASL_v0.3.json")
    for inst in instances:
        path = raw / "videos" / f"{inst.video_id}.mp4"
        if path.is_file():
            with av.open(str(path)) as c:  # the declared count, as the suite reads it
                count = c.streams.video[0].frames
            rng = resolve_range(inst.frame_start, inst.frame_end, count)
            yield path, sample_indices(rng.first, rng.last, frames), rng.first, rng.last, inst.bbox


def _decode_opencv(raw: Path, out: Path, frames: int, size: int, steps: dict) -> None:
    import cv2

    for path, _idx, _first, last, _bbox in _jobs(raw, frames):
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        t = time.process_time()
        for _ in range(last + 1):
            if not cap.grab():
                break
        steps["decode"] += time.process_time() - t
        cap.release()


def _decode_pyav(raw: Path, out: Path, frames: int, size: int, steps: dict, threads: int = 1) -> None:
    import av

    for path, _idx, _first, last, _bbox in _jobs(raw, frames):
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.codec_context.thread_count = threads
            stream.codec_context.thread_type = "AUTO" if threads > 1 else "SLICE"
            t = time.process_time()
            for i, _frame in enumerate(c.decode(stream)):
                if i >= last:
                    break
            steps["decode"] += time.process_time() - t


def _previous(raw: Path, out: Path, frames: int, size: int, steps: dict) -> None:
    """The suite before issue 14: only sampled frames converted, but full-frame BGR and INTER_AREA."""
    import cv2
    import numpy as np

    from wlasl.geometry import square_crop

    cv2.setNumThreads(1)
    out.mkdir(parents=True, exist_ok=True)
    clock = time.process_time
    for path, idx, _first, _last, bbox in _jobs(raw, frames):
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        x0, y0, x1, y1 = square_crop(bbox, w, h, 0.1)
        got, pos = {}, 0
        for target in sorted(set(idx.tolist())):
            t = clock()
            while pos <= target and cap.grab():
                pos += 1
            steps["decode"] += clock() - t
            t = clock()
            _, bgr = cap.retrieve()
            steps["convert"] += clock() - t
            t = clock()
            small = cv2.resize(bgr[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
            steps["crop+resize"] += clock() - t
            t = clock()
            got[target] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
            steps["convert"] += clock() - t
        cap.release()
        t = clock()
        np.save(out / f"{path.stem}.npy", np.stack([got[int(i)] for i in idx]))
        steps["write"] += clock() - t


def _naive(raw: Path, out: Path, frames: int, size: int, steps: dict) -> None:
    """What the official WLASL script does: every frame decoded, converted, cropped and resized."""
    import cv2
    import numpy as np

    from wlasl.geometry import square_crop

    out.mkdir(parents=True, exist_ok=True)
    clock = time.process_time
    for path, idx, _first, last, bbox in _jobs(raw, frames):
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        processed = []
        for _ in range(last + 1):
            t = clock()
            ok = cap.grab()
            steps["decode"] += clock() - t
            if not ok:
                break
            t = clock()
            _, frame = cap.retrieve()
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            steps["convert"] += clock() - t
            t = clock()
            x0, y0, x1, y1 = square_crop(bbox, frame.shape[1], frame.shape[0], 0.1)
            processed.append(cv2.resize(frame[y0:y1, x0:x1], (size, size)))
            steps["crop+resize"] += clock() - t
        cap.release()
        t = clock()
        np.save(out / f"{path.stem}.npy", np.stack([processed[i] for i in idx]))
        steps["write"] += clock() - t


def _child(args) -> None:
    if args.mode == "make-sets":
        args.cases = [c for c in args.cases.split(",") if c]
        print(json.dumps({k: str(v) for k, v in _make_sets(Path(args.raw), args).items()}))
        return
    raw, out = Path(args.raw), Path(args.out)
    steps = dict.fromkeys(STEPS, 0.0)
    fn = {
        "decode-opencv": _decode_opencv,
        "decode-pyav": _decode_pyav,
        "decode-pyav-2thr": lambda *a: _decode_pyav(*a, threads=2),
        "previous": _previous,
        "naive": _naive,
    }[args.mode]
    fn(raw, out, args.frames, args.size, steps)
    print(json.dumps(steps))


# ---- the parent: sets, paired runs, the table ------------------------------------------------


def _timed(cmd: list[str]) -> dict:
    """Run ``cmd``; its CPU seconds (user + sys, its reaped children included), wall seconds, peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    # ru_maxrss of wait4 is the largest of the child and its reaped children (the workers).
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "stdout": stdout}


def _run_mode(mode: str, raw: Path, out: Path, args) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    if mode.startswith("suite"):
        cmd = [
            sys.executable, str(REPO / "main" / "preprocess.py"), "--metadata", str(raw / "WLASL_v0.3.json"),
            "--videos", str(raw / "videos"), "--out", str(out), "--frames", str(args.frames),
            "--size", str(args.size), "--no-progress",
            "--workers", "2" if mode == "suite-2w" else "1",
            "--decode-threads", "2" if mode == "suite-2thr" else "1",
        ]
        res = _timed(cmd)
        reports = list((out / "reports").glob("shard-*.json"))
        outcomes = [o for r in reports for o in json.loads(r.read_text())["outcomes"]]
        cpu = {k: sum(o.get("cpu_s", {}).get(k, 0.0) for o in outcomes) for k in ("decode", "scale", "write")}
        # The suite crops, scales and converts in one swscale pass: shown under crop+resize.
        res["steps"] = {"decode": cpu["decode"], "convert": 0.0, "crop+resize": cpu["scale"], "write": cpu["write"]}
    else:
        cmd = [
            sys.executable, __file__, "--child", "--mode", mode, "--raw", str(raw), "--out", str(out),
            "--frames", str(args.frames), "--size", str(args.size),
        ]
        res = _timed(cmd)
        res["steps"] = json.loads(res["stdout"].strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return res


def _make_sets(tmp: Path, args) -> dict[str, Path]:
    from wlasl.synthetic import make_realsize, make_synthetic

    sets = {}
    for case in args.cases:
        raw = tmp / case
        if case == "realsize":
            make_realsize(raw, videos=args.videos, seed=1)
        elif case == "real":
            src = Path(args.real_videos) if args.real_videos else None
            if src is None or not (src / "videos").is_dir():
                print(f"case real: no sample clips at {src} (--real-videos DIR with videos/ and a v0.3 JSON); left out")
                continue
            _copy_real(src, raw)
        elif case == "small":
            common = {"glosses": 2, "width": 256, "height": 256, "broken": False, "noise": 6.0}
            n_long = max(2, args.videos // 8)
            short = make_synthetic(raw, per_gloss=(args.videos - n_long) // 2, lead_in=(0, 2), tail=(0, 3), seed=1, **common)
            long = make_synthetic(raw / "long", per_gloss=n_long // 2, lead_in=(400, 800), tail=(50, 200), seed=2, first_id=80000, **common)
            meta = json.loads(short["metadata"].read_text())
            for entry, extra in zip(meta, json.loads(long["metadata"].read_text())):
                entry["instances"] += extra["instances"]
            for video in long["videos"].iterdir():
                video.rename(short["videos"] / video.name)
            short["metadata"].write_text(json.dumps(meta))
        else:
            raise SystemExit(f"--cases expected realsize, real or small, received {case!r}")
        sets[case] = raw
    return sets


def _copy_real(src: Path, raw: Path, copies: int = 3) -> None:
    """The sample clips' instances, each under ``copies`` ids (symlinks), in a small v0.3 JSON."""
    meta_file = next(p for p in sorted(src.glob("*.json")) if not p.name.startswith("nslt"))
    have = {p.stem for p in (src / "videos").glob("*.mp4")}
    (raw / "videos").mkdir(parents=True)
    entries = []
    for entry in json.loads(meta_file.read_text()):
        insts = []
        for inst in entry["instances"]:
            if inst["video_id"] in have:
                for k in range(copies):
                    vid = f"{inst['video_id']}c{k}"
                    (raw / "videos" / f"{vid}.mp4").symlink_to((src / "videos" / f"{inst['video_id']}.mp4").resolve())
                    insts.append({**inst, "video_id": vid})
        if insts:
            entries.append({"gloss": entry["gloss"], "instances": insts})
    (raw / "WLASL_v0.3.json").write_text(json.dumps(entries))


def _describe(raw: Path) -> str:
    import av

    sizes, frames, n = set(), 0, 0
    for path in sorted((raw / "videos").glob("*.mp4")):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            sizes.add(f"{s.codec_context.width}x{s.codec_context.height}")
            frames += s.frames
            n += 1
    return f"{n} videos, {frames} frames, {', '.join(sorted(sizes))}"


def _table(case: str, raw: Path, runs: dict[str, list[dict]], args) -> None:
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("cpu_s", "wall_s", "rss_mb")} for m, rs in runs.items()}
    steps = {m: {k: statistics.median(r["steps"][k] for r in rs) for k in STEPS} for m, rs in runs.items()}
    ref, naive = med["decode-opencv"], med["naive"]
    print(f"\n== {case}: {_describe(raw)}; {args.frames} frames at {args.size}², median of {args.repeats} paired runs")
    head = f"{'mode':<46} {'CPU s':>6} {'wall s':>7} {'peak MB':>8} {'CPU/dec':>8} {'CPU/naive':>9}"
    print(head + "  " + "  ".join(f"{s:>11}" for s in STEPS) + f"  {'other':>6}")
    for mode, m in med.items():
        share = {k: steps[mode][k] / m["cpu_s"] for k in STEPS}
        other = max(0.0, 1 - sum(share.values()))
        print(
            f"{MODES[mode]:<46} {m['cpu_s']:>6.2f} {m['wall_s']:>7.2f} {m['rss_mb']:>8.0f} "
            f"{m['cpu_s'] / ref['cpu_s']:>7.2f}x {m['cpu_s'] / naive['cpu_s']:>8.2f}x  "
            + "  ".join(f"{share[k]:>10.0%} " for k in STEPS)
            + f"  {other:>5.0%}"
        )
    one, two = med["suite"], med["suite-2w"]
    print(
        f"suite CPU / decode-only: {one['cpu_s'] / ref['cpu_s']:.2f}x vs OpenCV grab, "
        f"{one['cpu_s'] / med['decode-pyav']['cpu_s']:.2f}x vs PyAV (target <= 1.2x); "
        f"vs naive {one['cpu_s'] / naive['cpu_s']:.2f}x CPU; peak RSS {one['rss_mb']:.0f} MB (target < 200)"
    )
    print(
        f"workers 1 -> 2: wall {one['wall_s']:.2f} -> {two['wall_s']:.2f} s ({one['wall_s'] / two['wall_s']:.2f}x), "
        f"CPU {one['cpu_s']:.2f} -> {two['cpu_s']:.2f} s, peak RSS per process {one['rss_mb']:.0f} -> {two['rss_mb']:.0f} MB"
    )
    thr = med["decode-pyav-2thr"]
    print(
        f"decode threads 1 -> 2: wall {med['decode-pyav']['wall_s']:.2f} -> {thr['wall_s']:.2f} s, "
        f"CPU {med['decode-pyav']['cpu_s']:.2f} -> {thr['cpu_s']:.2f} s; suite --decode-threads 2: "
        f"wall {med['suite-2thr']['wall_s']:.2f} s, CPU {med['suite-2thr']['cpu_s']:.2f} s"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="realsize,real", help="comma-separated: realsize, real, small (default realsize,real)")
    p.add_argument("--videos", type=int, default=12, help="videos per synthetic set (default 12)")
    p.add_argument("--repeats", type=int, default=3, help="paired runs per mode; medians are shown (default 3)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    p.add_argument(
        "--real-videos", default=os.environ.get("SLR_REAL_WLASL"),
        help="folder with real WLASL clips (videos/*.mp4 and their v0.3 JSON); default $SLR_REAL_WLASL",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--raw", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    args.cases = [c for c in args.cases.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    for needed in ("decode-opencv", "decode-pyav", "decode-pyav-2thr", "naive", "suite", "suite-2w", "suite-2thr"):
        if needed not in modes:
            modes.append(needed)  # the table's ratios need them
    tmp = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    try:
        t0 = time.perf_counter()
        # In a child process: Linux carries a process's peak RSS over fork and
        # exec, so a parent that rendered 1080p frames would lift every
        # child's figure to its own.
        cmd = [
            sys.executable, __file__, "--child", "--mode", "make-sets", "--raw", str(tmp), "--cases", ",".join(args.cases),
            "--videos", str(args.videos),
        ] + (["--real-videos", args.real_videos] if args.real_videos else [])
        made = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
        for line in made[:-1]:
            print(line)
        sets = {k: Path(v) for k, v in json.loads(made[-1]).items()}
        print(f"sets made in {time.perf_counter() - t0:.0f} s")
        for case, raw in sets.items():
            runs: dict[str, list[dict]] = {m: [] for m in modes}
            for _ in range(args.repeats):
                for mode in modes:
                    runs[mode].append(_run_mode(mode, raw, tmp / "out", args))
            _table(case, raw, runs, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
