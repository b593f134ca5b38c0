"""Small models side by side: training clips/s and parameters of the 2D-CNN baseline, MoViNet-A0 and X3D-XS.

Each model is built from the registry (``get_model(name).build``) with the
same clip shape and class count, and trained for a few steps on random uint8
clips with its engine's optimizer (``engine_keras.make_optimizer`` /
``models._torch_optim.PolicyOptimizer``, Adam at the suite's defaults) and
cross-entropy: the model's own cost, no data loading. Every model runs in
its own process (TensorFlow and PyTorch do not share the cores), one after
the other in the same run; the ratios are against the 2D-CNN. Denormal
floats are flushed to zero on both sides (TensorFlow does it by default,
PyTorch is told to).

MoViNet-A0 runs in its released configuration (``conv_type=3d``), the one its
checkpoints load into; ``--movinet-conv-type 2plus1d`` shows the (2+1)D
variant. Shapes are small so the run takes a couple of minutes on a 2-core
CPU; on a GPU pass the real ones (``--frames 20 --size 224 --batch 16``).

    python benchmarks/small_models.py                       # 8 x 64², batch 4: ~1.5-3 min on 2 cores
    python benchmarks/small_models.py --frames 20 --size 224 --batch 16 --steps 20 --out results/bench/small_models.json
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

from benchmarks.results import write_results  # noqa: E402

MODELS = ("cnn2d", "movinet_a0", "x3d_xs")
NUM_CLASSES = 100  # WLASL100's head


def _clips(batch: int, frames: int, size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, frames, size, size, 3), dtype=np.uint8), rng.integers(0, NUM_CLASSES, batch)


def _keras(name: str, args) -> dict:
    from models.engine_keras import build_scope, make_optimizer
    from models.registry import get_model
    from utils.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from utils.core.tf_env import tf, tf_keras

    cfg = RunConfig(model=ModelConfig(name=name), data=DataConfig(root="-"), train=TrainConfig())
    options = {"conv_type": args.movinet_conv_type} if name.startswith("movinet") else {}
    with build_scope(cfg):
        model = get_model(name).build(num_classes=NUM_CLASSES, frames=args.frames, size=args.size, dropout=0.0, **options)
    opt = make_optimizer(cfg.train, model.trainable_variables)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    x, y = _clips(args.batch, args.frames, args.size)
    x, y = tf.constant(x), tf.constant(y, tf.int32)
    return _time(lambda: float(step(x, y)), args) | {"params": int(model.count_params()), "options": options}


def _torch(name: str, args) -> dict:
    import torch
    import torch.nn.functional as F

    from models import policy
    from models._torch_optim import PolicyOptimizer
    from models.registry import get_model
    from utils.core.config import TrainConfig

    torch.manual_seed(0)
    # TensorFlow's CPU threads flush denormal floats to zero; PyTorch's do not by default, and a freshly
    # initialised X3D then runs 2-7 s steps instead of ~0.35 s on this CPU (8 x 64², batch 4): flush them
    # here too, so the rows compare the models (--keep-denormals shows PyTorch's default).
    if not args.keep_denormals:
        torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = get_model(name).build(num_classes=NUM_CLASSES, frames=args.frames, size=args.size, dropout=0.0).to(device)
    opt = PolicyOptimizer(model.parameters(), policy.optimizer_settings(TrainConfig()))
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # the engine's, off: full precision like the Keras side
    x, y = _clips(args.batch, args.frames, args.size)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    model.train()

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step(scaler)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    return _time(step, args) | {"params": sum(p.numel() for p in model.parameters()), "options": {}}


def _time(step, args) -> dict:
    t0 = time.perf_counter()
    for _ in range(args.warmup):  # tracing / allocation happen here
        step()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # The median step: on a shared machine a neighbour's burst lands in single steps, not in the middle one.
    median = statistics.median(times)
    return {"train_clips_per_s": round(args.batch / median, 3), "step_s": round(median, 4),
            "step_s_min_max": [round(min(times), 4), round(max(times), 4)], "warmup_s": round(warm_s, 2)}  # fmt: skip


def child(args) -> None:
    import models  # noqa: F401  (registers every family)
    from models.registry import get_model

    spec = get_model(args.child)
    out = (_keras if spec.framework == "keras" else _torch)(args.child, args)
    print("RESULT " + json.dumps({"model": args.child, "display": spec.display, "framework": spec.framework, **out}))


def _run_child(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--frames", str(args.frames), "--size", str(args.size),
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--movinet-conv-type", args.movinet_conv_type] + (["--keep-denormals"] if args.keep_denormals else [])  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"model": name, "error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=7, help="timed training steps per model (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (graph tracing, allocation)")
    p.add_argument("--movinet-conv-type", default="3d", choices=["3d", "2plus1d"])
    p.add_argument("--keep-denormals", action="store_true", help="PyTorch: leave denormal floats on (its CPU default)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated registry names (default {','.join(MODELS)})")
    p.add_argument("--out", type=Path, help="also write the results as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    shapes = f"clips {args.batch} x {args.frames} x {args.size}² x 3 uint8, {NUM_CLASSES} classes"
    print(f"shapes: {shapes}; {args.warmup} warm-up + {args.steps} timed Adam steps per model (median), one process each",
          flush=True)  # fmt: skip
    rows = []
    for name in args.models.split(","):
        rows.append(_run_child(name.strip(), args))
        print(f"  {rows[-1]}", flush=True)
    base = next((r for r in rows if r.get("model") == "cnn2d" and "error" not in r), None)
    print(f"\n{'model':<24} {'framework':<9} {'params':>11} {'train clips/s':>14} {'median s/step':>14} {'vs 2D-CNN':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<24} error: {r['error']}")
            continue
        ratio = f"{r['train_clips_per_s'] / base['train_clips_per_s']:.2f}x" if base else "-"
        label = r["display"] + (f" ({r['options']['conv_type']})" if r["options"].get("conv_type") else "")
        print(f"{label:<24} {r['framework']:<9} {r['params']:>11,} {r['train_clips_per_s']:>14.2f} {r['step_s']:>14.3f} {ratio:>10}")
    write_results(args.out, {"shapes": shapes, "steps": args.steps, "rows": rows})
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
