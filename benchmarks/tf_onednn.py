"""Keras clip models on the CPU: a training step with TensorFlow's oneDNN kernels off against on.

TensorFlow turns oneDNN on by default only on some Intel CPUs; elsewhere (an
AMD EPYC, common on HPC clusters) it uses its Eigen kernels, whose 3D
convolution backward pass is many times slower. ``utils/core/tf_env.py``
therefore sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless the user set it. This
benchmark is the measurement behind that line: each model from the registry,
random uint8 clips, cross-entropy, Adam; each setting runs in its own process
(the variable is read when TensorFlow is imported), the two alternate model by
model, and the figure is the median step time of each and their ratio.

Measured on an AMD EPYC, 2 cores, one thread (step time off / on): at
8 x 8 x 32², I3D 18.2 s / 0.25 s (72x), MoViNet-A0 1.90 / 1.80 s (1.06x),
cnn2d 0.22 / 0.29 s (0.76x); at 8 x 8 x 64², MoViNet-A0 0.95x and cnn2d
1.16x. So oneDNN is what makes I3D trainable there and costs the others at
most a quarter at the smallest shape; one setting for the whole Keras side
stays simpler than one per model. On a CPU where TensorFlow already picks
oneDNN, every ratio is about 1.

    python benchmarks/tf_onednn.py                     # i3d, movinet_a0, cnn2d: a few minutes on 2 cores
    python benchmarks/tf_onednn.py --models i3d --threads 2 --out results/bench/tf_onednn.json
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without install

from benchmarks.results import write_results  # noqa: E402
from benchmarks.step_args import step_parser  # noqa: E402

MODELS = ("i3d", "movinet_a0", "cnn2d")
NUM_CLASSES = 100


def child(name: str, args) -> dict:
    """Runs in the subprocess: the median train-step time of one model, in this process's oneDNN setting."""
    import numpy as np

    import models  # noqa: F401  (registers the models)
    from models.registry import get_model
    from utils.core.tf_env import tf, tf_keras

    tf.random.set_seed(0)
    model = get_model(name).build(num_classes=NUM_CLASSES, frames=args.frames, size=args.size, dropout=0.0)
    opt = tf_keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(0)
    clips = tf.constant(rng.integers(0, 256, (args.batch, args.frames, args.size, args.size, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, NUM_CLASSES, (args.batch,)))
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(clips, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    times = []
    for _ in range(args.steps + 1):  # the first step traces and warms up
        start = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times[1:])}


def measure(name: str, onednn: str, args) -> float:
    """The median step time of ``name`` in a fresh process with ``TF_ENABLE_ONEDNN_OPTS=onednn``."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
    threads = str(args.threads)
    env.update(OMP_NUM_THREADS=threads, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
    cmd = [sys.executable, __file__, "--child", name, "--frames", str(args.frames), "--size", str(args.size),
           "--batch", str(args.batch), "--steps", str(args.steps)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{name} with TF_ENABLE_ONEDNN_OPTS={onednn} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


def main(argv=None) -> None:
    p = step_parser(__doc__, MODELS, steps=3, steps_help="timed steps per setting (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow and OpenMP threads of each process")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: time one model in this process
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    results = []
    print(f"training step on the CPU, {args.batch} x {args.frames} x {args.size}², {args.threads} thread(s), "
          f"median of {args.steps}")  # fmt: skip
    print(f"{'model':12} {'oneDNN off s':>13} {'on s':>8} {'speed-up':>9}")
    for name in args.models.split(","):
        off, on = measure(name, "0", args), measure(name, "1", args)
        results.append({"model": name, "onednn_off_s": off, "onednn_on_s": on, "speedup": off / on})
        print(f"{name:12} {off:13.3f} {on:8.3f} {off / on:8.2f}x")
    write_results(args.out, {"shape": [args.batch, args.frames, args.size], "threads": args.threads,
                             "results": results})  # fmt: skip


if __name__ == "__main__":
    main()
