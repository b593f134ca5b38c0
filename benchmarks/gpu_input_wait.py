"""Does the input pipeline keep the GPU busy? clips/s and input-wait share, old vs new loader path.

    python benchmarks/gpu_input_wait.py --json $OUT/gpu_input_wait.json    # GPU node: bf16, ~5 min
    python benchmarks/gpu_input_wait.py --device cpu --steps 3             # the same code on a CPU (tiny)

For MoViNet-a0 and I3D (Keras engine) and X3D-XS (PyTorch engine), each in
its own process, on a page-cached store of random uint8 clips at the
model's own frames and size, it trains ``--steps`` steps (after
``--warmup``) with each path and times every step from asking for the
batch to the loss on the host (the engines read the loss every step):

- ``old``: the pre-issue-19 loaders: each clip cut on the host (random
  window, random resized crop with OpenCV, flip) in ``--workers`` loader
  workers (DataLoader processes / tf.data parallel calls), then batched;
- ``new``: ``wlasl.loader_torch`` / ``wlasl.loader_tf``: whole uint8 batches
  from ``--workers`` threads, the crop cut on the device by
  ``Loaders.augment`` inside the step, as the engines do.

Reported per model and path: clips/s, the share of step time spent
waiting for the next batch (target: under 10% for the new path), median
step and mean wait in ms. For the new path also the largest difference
between the crop run on the device and on the CPU (<= 1 grey level
expected). Mixed precision is on (bf16 where the GPU has it); on a CPU it
falls back to float32, and MoViNet uses (2+1)D convolutions there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

import numpy as np  # noqa: E402

from benchmarks.results import write_results  # noqa: E402

MODELS = ("movinet_a0", "x3d_xs", "i3d")
SEED, CROP = 0, (0.7, 1.0)


def _cfg(name: str, store: Path, args):
    from models.train import resolve
    from utils.core.config import config_from_dict

    options = {"conv_type": "2plus1d"} if args.device == "cpu" and name.startswith("movinet") else {}
    return resolve(config_from_dict(
        {"model": {"name": name, "frames": args.frames, "size": args.size, "options": options},
         "data": {"root": str(store), "batch_size": args.batch, "workers": args.workers, "flip": True},
         "train": {"mixed_precision": True, "seed": SEED, "lr": 1e-3}}
    ))  # fmt: skip


def _forever(epoch_batches):
    """Batches of epoch 0, 1, 2, ... without end."""
    epoch = 0
    while True:
        yield from epoch_batches(epoch)
        epoch += 1


def _old_torch(store, cfg):
    """The pre-issue-19 PyTorch loader: per-clip crop in DataLoader workers, pinned batches."""
    import torch

    from wlasl.augment import clip_rng
    from wlasl.transforms import clip_transform

    entries, frames, size = store.split("train"), cfg.model.frames, cfg.model.size

    class Clips(torch.utils.data.Dataset):
        epoch = 0

        def __len__(self):
            return len(entries)

        def __getitem__(self, i):
            rng = clip_rng(SEED, self.epoch, i)
            clip = clip_transform(store.load(entries[i]), frames, size, rng, crop_scale=CROP, flip=True)
            return torch.from_numpy(clip), entries[i].label

    loader = torch.utils.data.DataLoader(
        Clips(), batch_size=cfg.data.batch_size, shuffle=True, num_workers=cfg.data.workers, drop_last=True,
        pin_memory=torch.cuda.is_available(), persistent_workers=cfg.data.workers > 0,
        generator=torch.Generator().manual_seed(SEED),
    )  # fmt: skip
    return _forever(lambda _epoch: iter(loader))


def _new_torch(store, cfg):
    from wlasl.loader_torch import make_loaders

    loaders = make_loaders(store, cfg)

    def epoch(e):
        loaders.train.sampler.set_epoch(e)
        return iter(loaders.train)

    return _forever(epoch), loaders.augment


def _run_torch(name, store, args) -> dict:
    import torch
    import torch.nn.functional as F

    from models.train import build_model

    cfg = _cfg(name, store, args)
    device = torch.device(args.device)
    model = build_model(cfg, store.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)

    def step(clips, labels):
        labels = labels.to(device, non_blocking=True)
        with autocast:
            loss = F.cross_entropy(model(clips).float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()  # the host waits for the step, as the engine's running sums do

    model.train()
    out = {"precision": "bf16" if bf16 else "float32"}
    old = _old_torch(store, cfg)
    out["old"] = _timed(old, lambda x, y: step(x.to(device, non_blocking=True), y), args)
    del old
    new, augment = _new_torch(store, cfg)
    out["new"] = _timed(new, lambda x, y: step(augment(x, device), y), args)
    inputs, _ = next(new)
    on_device = augment(inputs, device).cpu().numpy().astype(np.int16)
    out["new"]["crop_max_diff"] = int(np.abs(on_device - augment(inputs, "cpu").numpy()).max())
    return out


def _old_tf(store, cfg):
    """The pre-issue-19 tf.data loader: per-clip crop in a numpy_function per clip, then batched."""
    from utils.core.tf_env import tf
    from wlasl.augment import clip_rng
    from wlasl.transforms import clip_transform

    entries, frames, size = store.split("train"), cfg.model.frames, cfg.model.size
    labels = tf.constant([e.label for e in entries], tf.int32)

    def epoch_ds(epoch):
        def read(i):
            rng = clip_rng(SEED, epoch, int(i))
            return clip_transform(store.load(entries[int(i)]), frames, size, rng, crop_scale=CROP, flip=True)

        def load(i):
            clip = tf.numpy_function(read, [i], tf.uint8, stateful=False)
            clip.set_shape((frames, size, size, 3))
            return clip, labels[i]

        order = np.random.default_rng((SEED, epoch)).permutation(len(entries))
        ds = tf.data.Dataset.from_tensor_slices(order).map(
            load, num_parallel_calls=max(1, cfg.data.workers), deterministic=True
        )
        return iter(ds.batch(cfg.data.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    return _forever(epoch_ds)


def _run_keras(name, store, args) -> dict:
    from models import engine_keras
    from models.train import build_model
    from utils.core.tf_env import tf, tf_keras
    from wlasl.loader_tf import make_loaders

    cfg = _cfg(name, store, args)
    model = build_model(cfg, store.num_classes)  # in the engine's scope: seed, dtype policy
    optimizer = engine_keras.make_optimizer(cfg.train, model.trainable_variables)
    optimizer.build(model.trainable_variables)
    out = {"precision": tf_keras.mixed_precision.global_policy().name}
    # The engine's own compiled train step (private: this measures exactly what fit() runs).
    steps = engine_keras._Steps(model, optimizer, cfg, lambda x: x)
    out["old"] = _timed(_old_tf(store, cfg), lambda x, y: [float(v) for v in steps.train(x, y)], args)
    loaders = make_loaders(store, cfg)
    steps = engine_keras._Steps(model, optimizer, cfg, loaders.augment)
    new = _forever(lambda e: iter(loaders.train.epoch(e)))
    out["new"] = _timed(new, lambda x, y: [float(v) for v in steps.train(x, y)], args)
    inputs, _ = next(new)
    gpu = tf.config.list_logical_devices("GPU")
    with tf.device(gpu[0].name if gpu else "/CPU:0"):
        on_device = tf.function(loaders.augment)(inputs).numpy().astype(np.int16)
    with tf.device("/CPU:0"):
        on_cpu = tf.function(loaders.augment)(inputs).numpy()
    out["new"]["crop_max_diff"] = int(np.abs(on_device - on_cpu).max())
    return out


def _timed(batches, step, args) -> dict:
    """Run warm-up + timed steps; per step: wait = asking for the batch, total = wait + the step."""
    waits, totals = [], []
    for k in range(args.warmup + args.steps):
        start = time.perf_counter()
        x, y = next(batches)
        got = time.perf_counter()
        step(x, y)
        if k >= args.warmup:
            waits.append(got - start)
            totals.append(time.perf_counter() - start)
    total = sum(totals)
    return {
        "clips_per_s": round(args.steps * args.batch / total, 1),
        "input_wait_share": round(sum(waits) / total, 4),
        "step_ms_median": round(1000 * statistics.median(totals), 2),
        "wait_ms_mean": round(1000 * statistics.mean(waits), 2),
    }


def child(name: str, args) -> dict:
    from benchmarks.loader import make_store
    from models.registry import get_model
    from wlasl.clip_store import ClipStore

    spec = get_model(name)
    args.frames, args.size = args.frames or spec.frames, args.size or spec.size
    root = make_store(args.root / f"s{args.size}_f{args.frames}_n{args.clips}", clips=args.clips, size=args.size,
                      frames=args.frames)  # fmt: skip
    store = ClipStore(root)
    run = _run_torch if spec.framework == "torch" else _run_keras
    try:
        result = run(name, store, args)
    except ModuleNotFoundError as e:  # a recorded skip: e.g. no TensorFlow in a PyTorch-only image
        return {"model": name, "skipped": f"{e}; install the suite's requirements for {spec.framework} models"}
    return {"model": name, "frames": args.frames, "size": args.size, "batch": args.batch, "workers": args.workers,
            "device": args.device, **result}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"default: {' '.join(MODELS)}")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when there is a GPU")
    p.add_argument("--steps", type=int, default=30, help="timed steps per path")
    p.add_argument("--warmup", type=int, help="untimed steps first (tracing, autotune); default 5, 1 on cpu")
    p.add_argument("--batch", type=int, help="clips per step; default 16, 2 on cpu")
    p.add_argument("--workers", type=int, default=4, help="loader workers of both paths")
    p.add_argument("--frames", type=int, help="default: the model's (20); 8 on cpu")
    p.add_argument("--size", type=int, help="default: the model's (172 / 224); 64 on cpu")
    p.add_argument("--clips", type=int, help="clips in each store; default 128, 16 on cpu")
    p.add_argument("--root", type=Path, default=Path("/tmp/slr_bench_input_wait"), help="where the stores go")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = args.device == "cpu"
    for key, gpu_value, cpu_value in (("warmup", 5, 1), ("batch", 16, 2), ("frames", None, 8), ("size", None, 64),
                                      ("clips", 128, 16)):  # fmt: skip
        if getattr(args, key) is None:
            setattr(args, key, cpu_value if cpu else gpu_value)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0

    results = []
    for name in args.models:
        cmd = [sys.executable, __file__, "--child", name, "--device", args.device, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--workers", str(args.workers),
               "--clips", str(args.clips), "--root", str(args.root)]  # fmt: skip
        cmd += [f"--{k}={getattr(args, k)}" for k in ("frames", "size") if getattr(args, k)]
        t = time.perf_counter()
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-3000:]}", file=sys.stderr, flush=True)
            results.append({"model": name, "error": out.stderr[-3000:]})
        else:
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            if "skipped" in r:
                print(f"{name:11} skipped: {r['skipped']}", flush=True)
            for path in ("old", "new") if "skipped" not in r else ():
                f = r[path]
                extra = f"  crop max diff {f['crop_max_diff']}" if "crop_max_diff" in f else ""
                print(f"{name:11} {path}: {f['clips_per_s']:8.1f} clips/s  input wait {100 * f['input_wait_share']:5.1f}%  "
                      f"step {f['step_ms_median']:8.1f} ms  wait {f['wait_ms_mean']:7.1f} ms  "
                      f"[{r['precision']}, {r['frames']}x{r['size']}², batch {r['batch']}, {r['workers']} workers, "
                      f"{time.perf_counter() - t:.0f} s]{extra}", flush=True)  # fmt: skip
        write_results(args.json, results)  # after every model, so a run cut short keeps what it measured
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
