"""Training throughput of the pose models beside an RGB model, in the same run: clips per second.

Each model trains for ``--steps`` steps (after ``--warmup``) through what
``models.train.run`` uses: its registered builder at its defaults, its
store's loaders (``wlasl.loader_pose`` over a keypoint store, ``wlasl.loader_torch``
over a clip store), and the engine's step (forward, cross-entropy, backward,
the policy optimizer, :mod:`models._torch_optim`). Reported per model: training
clips/s, the share of the time spent waiting for batches, and the parameter
count. Stores are synthetic: keypoint clips of 30-90 frames (WLASL's range),
RGB clips of ``--rgb-frames`` x ``--rgb-size``² (X3D-XS's own input is
4 x 160²: CPU sizes are smaller).

    python benchmarks/pose_train.py                    # about a minute on 2 shared CPU cores
    python benchmarks/pose_train.py --batch 32 --steps 20 --rgb-size 112 --out results/bench/pose_train.json

Seen here (torch 2.13 CPU, 1 thread, batch 8, load ~11 on 2 cores): x3d_xs
at 8x64² 2.9 clips/s; pose_lstm (50 frames, 1.1 M parameters) 94.5 (33x);
pose_transformer (SPOTER size, 5.9 M) 16.8 (5.8x); the pose loader took
1-5% of the time. One thread by default: with two, each process spins
against the others on shared cores (the same run took 5 min instead of 48 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

POSE_MODELS = ("pose_lstm", "pose_transformer")


def _stores(work: Path, rgb_frames: int, rgb_size: int) -> dict[str, Path]:
    from wlasl.synthetic import synthetic_store
    from wlasl.synthetic_pose import make_synthetic_keypoints

    return {
        "keypoints": make_synthetic_keypoints(work / "pose", glosses=4, per_gloss=30, frames=(30, 90), seed=0),
        "clip": synthetic_store(work / "rgb", frames=rgb_frames, size=rgb_size, glosses=3, per_gloss=12,
                                width=160, height=120, seed=0),  # fmt: skip
    }


def measure(name: str, root: Path, *, frames: int | None, size: int | None, batch: int, steps: int, warmup: int,
            workers: int) -> dict:  # fmt: skip
    """Clips/s of ``steps`` training steps of ``name`` (after ``warmup`` steps), and the time share spent on data."""
    import torch
    import torch.nn.functional as F

    from models import policy
    from models._torch_optim import PolicyOptimizer
    from models.registry import get_model
    from models.train import build_model, loaders_of, open_store, resolve
    from utils.core.config import config_from_dict

    spec = get_model(name)
    cfg = resolve(config_from_dict({
        "model": {"name": name, "frames": frames, "size": size},
        "data": {"root": str(root), "batch_size": batch, "workers": workers},
        "train": {"lr": 1e-3}, "run_id": "bench",
    }), spec)  # fmt: skip
    store = open_store(spec, root, cfg.model.frames)
    loaders = loaders_of(spec).make_loaders(store, cfg)
    model = build_model(cfg, store.num_classes, spec).train()
    opt = PolicyOptimizer(model.parameters(), policy.optimizer_settings(cfg.train))
    scaler = torch.amp.GradScaler("cuda", enabled=False)

    def batches():
        epoch = 0
        while True:
            loaders.train.sampler.set_epoch(epoch)
            yield from loaders.train
            epoch += 1

    feed = batches()
    waited = clips = 0
    for step in range(warmup + steps):
        if step == warmup:
            start, waited, clips = time.perf_counter(), 0.0, 0
        t = time.perf_counter()
        x, y = next(feed)
        waited += time.perf_counter() - t
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step(scaler)
        clips += y.shape[0]
    wall = time.perf_counter() - start
    return {
        "model": name, "input": spec.input, "frames": cfg.model.frames, "size": cfg.model.size, "batch": batch,
        "params": sum(p.numel() for p in model.parameters()), "clips_per_s": round(clips / wall, 1),
        "data_share": round(waited / wall, 3), "steps": steps,
    }  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rgb", default="x3d_xs", help="the RGB model to compare with (default x3d_xs)")
    p.add_argument("--rgb-frames", type=int, default=8, help="RGB clip length (default 8)")
    p.add_argument("--rgb-size", type=int, default=64, help="RGB side in pixels (default 64)")
    p.add_argument("--pose-frames", type=int, default=None, help="pose clip length (default: the models' 50)")
    p.add_argument("--batch", type=int, default=8, help="clips per step, every model (default 8)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per model (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--workers", type=int, default=0, help="loader processes (default 0: all in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's default)")
    p.add_argument("--work", help="folder for the synthetic stores (default: a temporary one)")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)

    import torch

    import models  # noqa: F401  (registers every family)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        print("note: this benchmark trains on the CPU (the engine's device logic is not repeated here)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        t = time.perf_counter()
        stores = _stores(work, args.rgb_frames, args.rgb_size)
        print(f"synthetic stores in {time.perf_counter() - t:.1f} s; torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU thread(s), batch {args.batch}, {args.steps} timed steps each")  # fmt: skip
        common = {"batch": args.batch, "steps": args.steps, "warmup": args.warmup, "workers": args.workers}
        rows = [measure(args.rgb, stores["clip"], frames=args.rgb_frames, size=args.rgb_size, **common)]
        rows += [measure(m, stores["keypoints"], frames=args.pose_frames, size=None, **common) for m in POSE_MODELS]
    base = rows[0]["clips_per_s"]
    print(f"\n{'model':<18}{'input':<28}{'params':>10}{'clips/s':>10}{'vs RGB':>9}{'data':>7}")
    for r in rows:
        shape = f"{r['frames']}x{r['size']}²" if r["size"] else f"{r['frames']} frames x 99 kp"
        print(f"{r['model']:<18}{r['input'] + ' ' + shape:<28}{r['params']:>10,}{r['clips_per_s']:>10.1f}"
              f"{r['clips_per_s'] / base:>8.1f}x{r['data_share']:>7.0%}")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
