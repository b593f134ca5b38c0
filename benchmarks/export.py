"""Exported files vs the original framework: file size and median CPU latency per clip, float32 and int8.

For each run it exports float32 and int8 (``models.export.export_run``: tflite
for Keras runs, onnx for PyTorch runs), then times the original model
(TensorFlow / PyTorch) and both files on the same test clips, interleaved in
one loop, one CPU thread each (a phone-like core), and prints sizes and
latencies with their ratio to the original. A stream MoViNet run adds its
streaming file's latency per frame.

Without ``--run`` it makes what it measures: a synthetic store and two short
runs (X3D-XS, PyTorch; MoViNet-A0 with (2+1)D convs, plain and stream, Keras) at
``--frames`` x ``--size``².

    python benchmarks/export.py                                   # ~5-10 min on 2 busy cores (building MoViNet three times is most of it)
    python benchmarks/export.py --run results/runs/x3d_s-wlasl100_224-s0 --out results/bench/export.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install


def _make_runs(work: Path, frames: int, size: int) -> list[Path]:
    from models.train import run
    from utils.core.config import config_from_dict
    from wlasl.synthetic import synthetic_store

    store = synthetic_store(work, frames=frames, size=size, glosses=3, per_gloss=8, width=2 * size, height=2 * size, seed=0)
    runs = []
    makes = (
        ("x3d_xs", "x3d_xs", {}),
        ("movinet_a0_2plus1d", "movinet_a0", {"options": {"conv_type": "2plus1d"}}),
        ("movinet_a0_stream", "movinet_a0", {"stream": True, "options": {"conv_type": "2plus1d"}}),
    )
    for run_id, model, extra in makes:
        cfg = config_from_dict({
            "model": {"name": model, "frames": frames, "size": size, "dropout": 0.0, **extra},
            "data": {"root": str(store), "batch_size": 4, "workers": 0},
            "train": {"epochs": 1, "steps_per_epoch": 2, "lr": 1e-3, "seed": 0},
            "results": str(work / "results"), "run_id": run_id, "dry_run": True,
        })  # fmt: skip
        run(cfg)
        runs.append(work / "results" / "runs" / run_id)
    return runs


def _time_all(runners: dict, clips, repeats: int) -> dict[str, float]:
    """Median ms per clip of each runner over ``repeats`` passes, interleaved clip by clip (after a warm-up call each).

    Interleaving puts the machine's load swings on every runner alike.
    """
    import numpy as np

    for runner in runners.values():
        runner.logits(clips[0])
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for x in clips:
            for name, runner in runners.items():
                t0 = time.perf_counter()
                runner.logits(x)
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) * 1000.0 for name, t in times.items()}


def bench_run(run_dir: Path, *, calibration: int, repeats: int, threads: int) -> list[dict]:
    from models.export import export_run, open_export
    from models.export.contract import read_contract, store_clips
    from models.export.runtime import FrameworkRunner
    from models.restore import restore_run

    restored = restore_run(run_dir)
    fmt = "tflite" if restored.spec.framework == "keras" else "onnx"
    rows, runners = [], {}
    for int8 in (False, True):
        t0 = time.perf_counter()
        try:
            out = export_run(run_dir, fmt, int8=int8, calibration=calibration, threads=threads, log=lambda line: print(f"  {line}", file=sys.stderr))
        except ValueError as e:  # ExportError: an op without int8 kernel (I3D's CONV_3D)
            rows.append({"run": run_dir.name, "what": f"{fmt} {'int8' if int8 else 'float32'}", "error": str(e)})
            continue
        metrics = json.loads((out / "metrics.json").read_text())
        runners[out.name] = (open_export(out, threads=threads), metrics, time.perf_counter() - t0, read_contract(out))
    cfg = restored.cfg.model
    clips = store_clips(restored.cfg.data.root, "test", frames=cfg.frames, size=cfg.size, limit=8)[2]
    original = FrameworkRunner(restored, threads=threads)
    ms_all = _time_all({"original": original, **{name: entry[0] for name, entry in runners.items()}}, clips, repeats)
    base = ms_all["original"]
    for name, (runner, metrics, export_s, contract) in runners.items():
        ms = ms_all[name]
        row = {
            "run": run_dir.name, "what": f"{fmt} {metrics['precision']}", "size_mb": round(metrics["size_bytes"] / 1e6, 3),
            "ms_per_clip": round(ms, 2), "original_ms_per_clip": round(base, 2), "speedup": round(base / ms, 2),
            "top1": metrics["exported"]["top1"], "top1_original": metrics["original"]["top1"],
            "max_abs_logit_diff": metrics["max_abs_logit_diff"], "export_s": round(export_s, 1),
        }  # fmt: skip
        if contract.get("stream"):
            stream = open_export(runner.path.parent, threads=threads, stream=True)
            t = [time.perf_counter()]
            for _ in stream.frames(clips[0]):
                t.append(time.perf_counter())
            row["stream_ms_per_frame"] = round(1000 * (t[-1] - t[1]) / max(1, len(t) - 2), 2)
            row["stream_size_mb"] = round(metrics["stream"]["size_bytes"] / 1e6, 3)
        rows.append(row)
    original_size = sum(p.stat().st_size for p in (run_dir / "checkpoints").glob("best-*"))
    rows.append({"run": run_dir.name, "what": f"original ({restored.spec.framework} checkpoint)", "size_mb": round(original_size / 1e6, 3),
                 "ms_per_clip": round(base, 2), "original_ms_per_clip": round(base, 2), "speedup": 1.0})  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, action="append", default=[], help="finished run directory (repeatable); default: make two")
    p.add_argument("--frames", type=int, default=8, help="clip length of the runs it makes (default 8)")
    p.add_argument("--size", type=int, default=64, help="side of the runs it makes (default 64)")
    p.add_argument("--calibration", type=int, default=8, help="train clips calibrating int8 (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the clips (default 3)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per runtime (default 1)")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.run or _make_runs(Path(tmp), args.frames, args.size)
        rows = [r for run_dir in runs for r in bench_run(run_dir, calibration=args.calibration, repeats=args.repeats, threads=args.threads)]
    print(f"{'run':<22} {'what':<30} {'MB':>8} {'ms/clip':>9} {'orig ms':>9} {'speedup':>8} {'top1':>6} {'max|dlogit|':>11} {'stream ms/frame':>15}")
    for r in rows:
        if "error" in r:
            print(f"{r['run']:<22} {r['what']:<30} refused: {r['error'][:150]}")
            continue
        print(f"{r['run']:<22} {r['what']:<30} {r['size_mb']:>8.2f} {r['ms_per_clip']:>9.2f} {r['original_ms_per_clip']:>9.2f} "
              f"{r['speedup']:>7.2f}x {r.get('top1', float('nan')):>6.2f} {r.get('max_abs_logit_diff', float('nan')):>11.2e} "
              f"{r.get('stream_ms_per_frame', float('nan')):>15.2f}")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
