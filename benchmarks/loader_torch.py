"""PyTorch input pipeline: clips/s and peak RSS of the clip-store DataLoader vs the alternatives.

Compares, at 20 frames x 224², batch 8, training augmentation on:

- ``store``: ``wlasl.loader_torch`` over the clip store, 0/1/2 workers (host side
  only: its crop runs on the device, see benchmarks/loader.py);
- ``decode``: decoding the mp4 at every step (``wlasl.video.decode_frames`` +
  bbox crop + resize per sample, then the same augmentation), 0/2 workers;
- ``ram_f32``: the seed project's way, every clip held in RAM as float32.

Each measurement runs in its own process, so peak RSS (``ru_maxrss``, of the
process and of its largest worker) is its own. Each mode runs at two store
sizes to show which memory grows with the data.

    python benchmarks/loader_torch.py                      # ~3-5 min on 2 cores
    python benchmarks/loader_torch.py --clips 24 72 --batches 15 --out results/bench/loader_torch.json
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from benchmarks.results import write_results  # noqa: E402

FRAMES, SIZE, BATCH = 20, 224, 8


def _rss_mb() -> tuple[float, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(self_kb / 1024, 1), round(child_kb / 1024, 1)


def _make_store(work: Path, per_gloss: int, width: int, height: int) -> tuple[Path, Path]:
    from wlasl.prepare import PrepareConfig, run_prepare
    from wlasl.synthetic import make_synthetic

    raw, store = work / "raw", work / "store"
    if not (store / "manifest.csv").is_file():
        make_synthetic(raw, glosses=3, per_gloss=per_gloss, width=width, height=height, broken=False)
        run_prepare(
            PrepareConfig(metadata=raw / "WLASL_v0.3.json", videos=raw / "videos", out=store, frames=FRAMES, size=SIZE, workers=2),
            progress=False,
        )
    return store, raw / "videos"


def _decode_dataset(store, videos: Path, n: int, seed: int = 0):
    """Decode-per-step baseline: what training from the mp4 files would do for every sample."""
    import cv2
    import numpy as np
    import torch

    from wlasl.geometry import sample_indices
    from wlasl.transforms import clip_transform
    from wlasl.video import decode_frames

    rows = [r for r in store.rows if r["split"] == "train"][:n]

    class Decode(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            r = rows[i]
            idx = sample_indices(int(r["frame_start"]) - 1, int(r["frame_end"]) - 1, FRAMES)
            dec = decode_frames(videos / f"{r['video_id']}.mp4", idx)
            x0, y0, x1, y1 = map(int, r["crop"].split())
            clip = np.stack(
                [cv2.cvtColor(cv2.resize(dec.frames[int(k)][y0:y1, x0:x1], (SIZE, SIZE)), cv2.COLOR_BGR2RGB) for k in idx]
            )
            out = clip_transform(clip, FRAMES, SIZE, np.random.default_rng((seed, i)))
            return torch.from_numpy(out), int(r["label"])

    return Decode()


def child(mode: str, store_path: str, videos: str, n: int, workers: int, batches: int) -> dict:
    """One measurement (runs in a fresh process)."""
    import numpy as np
    import torch

    from utils.core.config import config_from_dict
    from wlasl.clip_store import ClipStore
    from wlasl.loader_torch import make_loaders

    store = ClipStore(store_path)
    if mode == "store":
        cfg = config_from_dict(
            {"model": {"name": "x3d_xs", "frames": FRAMES, "size": SIZE},
             "data": {"root": store_path, "batch_size": BATCH, "workers": workers, "max_clips": n}}
        )  # fmt: skip
        loader = make_loaders(store, cfg).train
    elif mode == "decode":
        loader = torch.utils.data.DataLoader(
            _decode_dataset(store, Path(videos), n), batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
            persistent_workers=workers > 0,
        )  # fmt: skip
    elif mode == "ram_f32":
        # The seed project: decode once, keep every clip as normalised float32 in RAM.
        entries = store.split("train")[:n]
        data = np.stack([store.load(e, mmap=False).astype(np.float32) / 255.0 for e in entries])
        labels = torch.tensor([e.label for e in entries])
        tensor = torch.from_numpy(data)

        def batches_of_ram():
            while True:
                idx = torch.randperm(len(entries))[:BATCH]
                yield tensor[idx].clone(), labels[idx]

        loader = None
    else:
        raise ValueError(f"mode expected store, decode or ram_f32, received {mode!r}")

    def stream(loader):
        epoch = 0
        while True:
            if loader is None:
                yield from batches_of_ram()
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = stream(loader)
    next(it)  # warm-up: worker start, first pages
    start = time.perf_counter()
    for _ in range(batches):
        clips, _ = next(it)
        clips = clips["clips"] if isinstance(clips, dict) else clips  # the store's batches: inputs dict
        assert clips.shape[:2] == (BATCH, FRAMES)
    elapsed = time.perf_counter() - start
    # Workers count in RUSAGE_CHILDREN only once they have exited and been reaped.
    it.close()
    del it, loader
    gc.collect()
    rss, rss_child = _rss_mb()
    return {"mode": mode, "clips": n, "workers": workers, "clips_per_s": round(batches * BATCH / elapsed, 1),
            "peak_rss_mb": rss, "worker_peak_rss_mb": rss_child}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, nargs="+", default=[24, 72], help="training clips used, per measurement")
    p.add_argument("--batches", type=int, default=12, help="timed batches of 8 per measurement")
    p.add_argument("--video-px", type=int, nargs=2, default=[320, 240], metavar=("W", "H"),
                   help="raw synthetic video size (WLASL's are 256² to 1280x720); decode cost grows with it")
    p.add_argument("--work", type=Path, help="where the synthetic store goes (default: a temp dir)")
    p.add_argument("--out", type=Path, help="write the results as JSON here too")
    p.add_argument("--child", nargs=6, metavar=("MODE", "STORE", "VIDEOS", "N", "WORKERS", "BATCHES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        mode, store, videos, n, workers, batches = args.child
        print(json.dumps(child(mode, store, videos, int(n), int(workers), int(batches))))
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_loader_torch_"))
    per_gloss = int(max(args.clips) / 3 / 0.6) + 2  # train is ~60% of the clips
    t = time.perf_counter()
    store, videos = _make_store(work, per_gloss, *args.video_px)
    print(f"store {store} ready in {time.perf_counter() - t:.0f} s", flush=True)
    plan = [("store", w) for w in (0, 1, 2)] + [("decode", 0), ("decode", 2), ("ram_f32", 0)]
    results = []
    for n in args.clips:
        for mode, workers in plan:
            cmd = [sys.executable, __file__, "--child", mode, str(store), str(videos), str(n), str(workers), str(args.batches)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{r['mode']:8s} clips={r['clips']:4d} workers={r['workers']}  {r['clips_per_s']:7.1f} clips/s  "
                  f"peak RSS {r['peak_rss_mb']:7.1f} MB (worker {r['worker_peak_rss_mb']:.1f} MB)", flush=True)  # fmt: skip
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
