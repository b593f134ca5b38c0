"""tf.data over the memory-mapped clip store vs the seed's float32-in-RAM loader.

    python benchmarks/loader_tf.py                    # 172² and 224², 64 and 192 clips
    python benchmarks/loader_tf.py --clips 32 96 --sizes 172

For each input size and store size it writes a clip store of random uint8
clips (20 frames; the loader's cost does not depend on the content), then
runs each loader in its own subprocess (so peak RSS is each loader's own)
for two epochs at batch 8 and prints clips/s and peak RSS side by side:

- ``tfdata``: ``wlasl.loader_tf`` (whole uint8 batches read from the store,
  host side only: the crop runs on the device, see benchmarks/loader.py);
- ``seed``: the seed project's way, every clip decoded to float32 [0, 1] in
  RAM up front, then ``from_tensor_slices().shuffle().batch()``; its
  up-front load time is reported separately and not counted in clips/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

import numpy as np  # noqa: E402

from benchmarks.loader import make_store  # noqa: E402  (one synthetic store for the loader benchmarks)

FRAMES = 20
BATCH = 8


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _worker(kind: str, store_dir: str, size: int, epochs: int, workers: int) -> dict:
    from utils.core.config import config_from_dict
    from utils.core.tf_env import tf
    from wlasl.clip_store import ClipStore

    base_mb = _peak_rss_mb()
    store = ClipStore(store_dir)
    load_s = 0.0
    if kind == "tfdata":
        from wlasl.loader_tf import make_loaders

        cfg = config_from_dict(
            {
                "model": {"name": "bench", "frames": FRAMES, "size": size},
                "data": {"root": store_dir, "batch_size": BATCH, "workers": workers},
            }
        )
        train = make_loaders(store, cfg).train
        epoch_ds = train.epoch
    else:
        t = time.perf_counter()
        entries = store.split("train")
        clips = np.stack([store.load(e, mmap=False).astype(np.float32) / 255.0 for e in entries])
        labels = np.array([e.label for e in entries], np.int32)
        load_s = time.perf_counter() - t
        ds = tf.data.Dataset.from_tensor_slices((clips, labels)).shuffle(len(labels), seed=0).batch(BATCH).prefetch(2)

        def epoch_ds(_epoch):
            return ds

    n, t = 0, time.perf_counter()
    for epoch in range(epochs):
        for _, labels in epoch_ds(epoch):
            n += int(labels.shape[0])
    seconds = time.perf_counter() - t
    return {"clips_per_s": n / seconds, "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base_mb, "load_s": load_s}


def _measure(kind, store_dir, size, epochs, workers) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            kind,
            "--store",
            str(store_dir),
            "--size",
            str(size),
            "--epochs",
            str(epochs),
            "--workers",
            str(workers),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[172, 224])
    p.add_argument("--clips", type=int, nargs="+", default=[64, 192], help="store sizes (clips)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="tf.data parallel reads (the cores here)")
    p.add_argument("--root", type=Path, default=Path("/tmp/slr_bench_loader_tf"))
    p.add_argument("--worker", choices=["tfdata", "seed"], help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.store, args.size, args.epochs, args.workers)))
        return 0

    print(f"batch {BATCH}, {FRAMES} frames, {args.epochs} epochs, {args.workers} tf.data workers")
    print("peak RSS in MB; '+data' = peak minus the RSS right after importing TensorFlow")
    print(
        f"{'size':>5} {'clips':>6} | {'tf.data clips/s':>15} {'RSS':>6} {'+data':>6} | {'seed clips/s':>12} "
        f"{'RSS':>6} {'+data':>6} {'load s':>7} | {'speed x':>7} {'RSS ratio':>9} {'+data ratio':>11}"
    )
    for size in args.sizes:
        for clips in args.clips:
            store_dir = make_store(args.root / f"s{size}_n{clips}", clips=clips, size=size, frames=FRAMES)
            ours = _measure("tfdata", store_dir, size, args.epochs, args.workers)
            seed = _measure("seed", store_dir, size, args.epochs, args.workers)
            ours_data = ours["peak_rss_mb"] - ours["base_rss_mb"]
            seed_data = seed["peak_rss_mb"] - seed["base_rss_mb"]
            print(
                f"{size:>5} {clips:>6} | {ours['clips_per_s']:>15.1f} {ours['peak_rss_mb']:>6.0f} {ours_data:>6.0f} | "
                f"{seed['clips_per_s']:>12.1f} {seed['peak_rss_mb']:>6.0f} {seed_data:>6.0f} {seed['load_s']:>7.1f} | "
                f"{ours['clips_per_s'] / seed['clips_per_s']:>7.2f} {ours['peak_rss_mb'] / seed['peak_rss_mb']:>9.2f} "
                f"{ours_data / seed_data:>11.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
