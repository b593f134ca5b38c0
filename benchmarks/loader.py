"""Training input pipelines, host side: clips/s of each loader beside the numpy ceiling.

    python benchmarks/loader.py --size 172 --clips 96 --json OUT.json
    python benchmarks/loader.py --frameworks torch --seconds 1     # quicker

For each framework (each in its own process) on a page-cached store of
random uint8 clips (all train; the cost does not depend on the content):

- ``ceiling``: numpy alone, one core: stack ``batch`` memory-mapped clips
  (the temporal window of each) into a batch; what memory allows;
- ``workers``: the framework's training loader (``wlasl.loader_torch`` /
  ``wlasl.loader_tf``) at 0, 1 and 2 workers: batches ready on the host,
  before any device; ``cores``: the CPU the loader's process got meanwhile
  (CPU time / wall time, all threads), which bounds what workers can add
  on a shared machine;
- ``augment_cpu``: the crop the engines run on the device
  (``Loaders.augment``), timed on this CPU: what a CPU-only run pays;
- ``cv2_loop``: the old per-clip CPU path (random window, random resized
  crop with cv2, one core), the baseline the device crop replaces.

Every figure is the best of ``--repeats`` timed passes of about
``--seconds`` each (other processes share this machine's cores).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

import numpy as np  # noqa: E402

from benchmarks.results import write_results  # noqa: E402

WORKERS = (0, 1, 2)


def make_store(root: Path, *, clips: int, size: int, frames: int) -> Path:
    """A clip store of ``clips`` random clips (all train, 3 classes), reused when present."""
    from utils.core.files import atomic_write_text
    from wlasl.clip_store import MANIFEST_COLUMNS

    if (root / "manifest.csv").is_file():
        return root
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(clips):
        vid = f"{i:05d}"
        np.save(root / "clips" / f"{vid}.npy", rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))
        row = dict.fromkeys(MANIFEST_COLUMNS, "")
        row.update(video_id=vid, gloss=f"g{i % 3}", label=i % 3, split="train", signer_id=0, path=f"clips/{vid}.npy")
        rows.append(row)
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(root / "labels.txt", "g0\ng1\ng2\n")
    atomic_write_text(root / "store.json", json.dumps({"frames": frames, "size": size, "margin": 0.1, "num_classes": 3}))
    return root


def _best_rate(fn, *, seconds: float, repeats: int) -> tuple[float, float]:
    """Best clips/s of ``repeats`` passes, and the CPU cores the process used in that pass.

    ``fn(deadline)`` returns the clips it delivered. Cores = process CPU time
    (every thread) / wall time: on a shared machine it shows whether more
    workers could get more CPU at all.
    """
    best = (0.0, 0.0)
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        n = fn(start + seconds)
        wall = time.perf_counter() - start
        best = max(best, (n / wall, (time.process_time() - cpu) / wall))
    return best


def _ceiling(store, frames: int, batch: int, seconds: float, repeats: int) -> tuple[float, float]:
    entries = store.split("train")

    def run(deadline):
        n = 0
        while time.perf_counter() < deadline:
            for s in range(0, len(entries) - batch + 1, batch):
                np.stack([store.load(e)[:frames] for e in entries[s : s + batch]])
                n += batch
        return n

    return _best_rate(run, seconds=seconds, repeats=repeats)


def _cv2_loop(store, frames: int, size: int, batch: int, seconds: float, repeats: int) -> tuple[float, float]:
    from wlasl.transforms import clip_transform

    entries = store.split("train")

    def run(deadline):
        n, epoch = 0, 0
        while time.perf_counter() < deadline:
            for s in range(0, len(entries) - batch + 1, batch):
                out = np.empty((batch, frames, size, size, 3), np.uint8)
                for j, i in enumerate(range(s, s + batch)):
                    rng = np.random.default_rng((0, epoch, i))
                    out[j] = clip_transform(store.load(entries[i]), frames, size, rng)
                n += batch
            epoch += 1
        return n

    return _best_rate(run, seconds=seconds, repeats=repeats)


def _cfg(store_dir: str, frames: int, size: int, batch: int, workers: int):
    from utils.core.config import config_from_dict

    return config_from_dict(
        {"model": {"name": "bench", "frames": frames, "size": size},
         "data": {"root": store_dir, "batch_size": batch, "workers": workers}}
    )  # fmt: skip


def _stream_rate(stream, seconds, repeats) -> tuple[float, float]:
    """clips/s of an endless generator of ``(inputs, labels)`` training batches."""
    next(stream)  # worker start-up is not throughput

    def run(deadline):
        n = 0
        while time.perf_counter() < deadline:
            _, labels = next(stream)
            n += int(labels.shape[0])
        return n

    rate = _best_rate(run, seconds=seconds, repeats=repeats)
    stream.close()
    return rate


def _torch_rate(store, store_dir, frames, size, batch, workers, seconds, repeats) -> tuple[float, float]:
    from wlasl.loader_torch import make_loaders

    train = make_loaders(store, _cfg(store_dir, frames, size, batch, workers)).train

    def epochs():
        for epoch in itertools.count():
            train.sampler.set_epoch(epoch)
            yield from train

    return _stream_rate(epochs(), seconds, repeats)


def _tf_rate(store, store_dir, frames, size, batch, workers, seconds, repeats) -> tuple[float, float]:
    from wlasl.loader_tf import make_loaders

    train = make_loaders(store, _cfg(store_dir, frames, size, batch, workers)).train

    def epochs():
        for epoch in itertools.count():
            yield from train.epoch(epoch)

    return _stream_rate(epochs(), seconds, repeats)


def _augment_rate(framework, store, store_dir, frames, size, batch, seconds, repeats) -> tuple[float, float]:
    """clips/s of the device-side crop run on this CPU (what a CPU-only run pays per step)."""
    if framework == "torch":
        from wlasl.loader_torch import make_loaders

        loaders = make_loaders(store, _cfg(store_dir, frames, size, batch, 0))
        inputs, _ = next(iter(loaders.train))

        def crop():
            return loaders.augment(inputs, "cpu")
    else:
        from utils.core.tf_env import tf
        from wlasl.loader_tf import make_loaders

        loaders = make_loaders(store, _cfg(store_dir, frames, size, batch, 0))
        inputs, _ = next(iter(loaders.train.epoch(0)))
        graph = tf.function(loaders.augment)  # as in the engine's train step

        def crop():
            return graph(inputs).numpy()

    crop()  # tracing / first-touch is not throughput

    def run(deadline):
        n = 0
        while time.perf_counter() < deadline:
            crop()
            n += batch
        return n

    return _best_rate(run, seconds=seconds, repeats=repeats)


def child(framework: str, store_dir: str, frames: int, size: int, batch: int, seconds: float, repeats: int) -> dict:
    """All figures of one framework (runs in a fresh process)."""
    import cv2

    from wlasl.clip_store import ClipStore

    cv2.setNumThreads(1)  # every CPU figure is per core (the ops' thread pools too, below)
    if framework == "tf":
        from utils.core.tf_env import tf  # import cost outside the timings

        tf.config.threading.set_intra_op_parallelism_threads(1)
    else:
        import torch

        torch.set_num_threads(1)
    store = ClipStore(store_dir)
    rate = _torch_rate if framework == "torch" else _tf_rate
    out = {"ceiling": _ceiling(store, frames, batch, seconds, repeats)[0]}
    loaders = {str(w): rate(store, store_dir, frames, size, batch, w, seconds, repeats) for w in WORKERS}
    out["workers"] = {w: r for w, (r, _) in loaders.items()}
    out["cores"] = {w: c for w, (_, c) in loaders.items()}
    out["augment_cpu"] = _augment_rate(framework, store, store_dir, frames, size, batch, seconds, repeats)[0]
    out["cv2_loop"] = _cv2_loop(store, frames, size, batch, seconds, repeats)[0]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=172, help="stored and model input side (px)")
    p.add_argument("--clips", type=int, default=96, help="clips in the store")
    p.add_argument("--frames", type=int, default=20, help="frames per clip (stored = model)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0, help="length of one timed pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per figure (the best counts)")
    p.add_argument("--frameworks", nargs="+", choices=["torch", "tf"], default=["torch", "tf"])
    p.add_argument("--root", type=Path, default=Path("/tmp/slr_bench_loader"), help="where the store goes")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        figures = child(args.child, args.store, args.frames, args.size, args.batch, args.seconds, args.repeats)
        print(json.dumps(figures))
        return 0

    store = make_store(args.root / f"s{args.size}_f{args.frames}_n{args.clips}", clips=args.clips, size=args.size,
                       frames=args.frames)  # fmt: skip
    results = {}
    for fw in args.frameworks:
        cmd = [sys.executable, __file__, "--child", fw, "--store", str(store), "--size", str(args.size),
               "--frames", str(args.frames), "--batch", str(args.batch), "--seconds", str(args.seconds),
               "--repeats", str(args.repeats)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{fw} measurement failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[fw] = json.loads(out.stdout.strip().splitlines()[-1])

    print(
        f"{args.size}² x {args.frames} frames, batch {args.batch}, {args.clips} clips; clips/s (best of {args.repeats})"
    )
    print(f"{'':6} {'ceiling':>8} | {'w0':>7} {'w1':>7} {'w2':>7} | {'w0/ceil':>7} {'w2/w1':>6} | {'cores w0/w1/w2':>14} | "
          f"{'aug CPU':>7} {'w0+aug':>7} | {'cv2 loop':>8}")  # fmt: skip
    for fw, r in results.items():
        w, c = r["workers"], r["cores"]
        serial = 1 / (1 / w["0"] + 1 / r["augment_cpu"])  # a CPU-only run, one core: read then crop
        print(f"{fw:6} {r['ceiling']:>8.0f} | {w['0']:>7.0f} {w['1']:>7.0f} {w['2']:>7.0f} | "
              f"{w['0'] / r['ceiling']:>7.2f} {w['2'] / w['1']:>6.2f} | {c['0']:>4.2f} {c['1']:>4.2f} {c['2']:>4.2f} | "
              f"{r['augment_cpu']:>7.0f} {serial:>7.0f} | {r['cv2_loop']:>8.0f}")  # fmt: skip
    print("w0/ceil: host side at 0 workers over the numpy ceiling (target >= 0.5); w2/w1 (target > 1);")
    print("cores: CPU time / wall time of the loader's process (all threads): what it could get on this machine;")
    print("aug CPU: the device crop run on this CPU; w0+aug: host and crop in turn (a CPU-only run);")
    print("cv2 loop: the old per-clip CPU path (window, crop, cv2 resize), one core")
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
