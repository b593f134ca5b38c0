"""PyTorch clip models on the CPU: a training step in the default memory layout against ``channels_last_3d``.

The registry entry of a model that trains faster in ``channels_last_3d`` on a
CPU says so (``ModelSpec.channels_last_cpu``) and the PyTorch engine then
uses that layout there unless a run sets ``train.channels_last``. This
benchmark is the measurement behind those entries: each model from the
registry, random uint8 clips, cross-entropy, the suite's optimizer; the two
layouts alternate within one process (same threads, same machine state),
and the figure is the median step time of each and their ratio.

X3D's channel-wise 3x3x3 convolutions are the reason: PyTorch's CPU backward
of a depthwise 3D convolution in the default layout is many times slower
than its forward pass, and much less so in ``channels_last_3d``. Measured on
2 shared cores (speed-up of a training step): X3D-XS 2.1x and X3D-S 2.3x at
8 x 8 x 32², both 2.1x at 4 x 16 x 112²; S3D 1.0x and 1.4x; ViViT 0.96x at
8 x 8 x 32² (left off).

    python benchmarks/channels_last.py                       # 8 x 8 x 32²: about a minute on 2 cores
    python benchmarks/channels_last.py --frames 16 --size 112 --batch 4 --out results/bench/channels_last.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from benchmarks.results import write_results  # noqa: E402
from benchmarks.step_args import step_parser  # noqa: E402

MODELS = ("x3d_xs", "x3d_s", "s3d", "vivit")
NUM_CLASSES = 100


def step_times(name: str, args) -> dict:
    import torch

    import models  # noqa: F401  (registers the models)
    from models._torch_optim import PolicyOptimizer
    from models.engine_torch import set_channels_last
    from models.policy import optimizer_settings
    from models.registry import get_model
    from utils.core.config import TrainConfig

    torch.manual_seed(0)
    model = get_model(name).build(num_classes=NUM_CLASSES, frames=args.frames, size=args.size, dropout=0.0)
    opt = PolicyOptimizer(model.parameters(), optimizer_settings(TrainConfig()))
    clips = torch.randint(0, 256, (args.batch, args.frames, args.size, args.size, 3), dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (args.batch,))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    times = {"default": [], "channels_last_3d": []}
    for _ in range(args.steps + 1):  # the first round of each layout warms up
        for layout in times:
            set_channels_last(model, layout != "default")
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(clips), labels)
            opt.opt.zero_grad()
            loss.backward()
            opt.step(scaler)
            times[layout].append(time.perf_counter() - start)
    out = {layout: statistics.median(t[1:]) for layout, t in times.items()}
    return {"model": name, "default_s": out["default"], "channels_last_3d_s": out["channels_last_3d"],
            "speedup": out["default"] / out["channels_last_3d"],
            "listed": get_model(name).channels_last_cpu}  # fmt: skip


def main(argv=None) -> None:
    p = step_parser(__doc__, MODELS, steps=5, steps_help="timed steps per layout (after one warm-up step each)")
    args = p.parse_args(argv)
    results = []
    print(f"training step on the CPU, {args.batch} x {args.frames} x {args.size}², median of {args.steps}")
    print(f"{'model':10} {'default s':>10} {'cl3d s':>8} {'speed-up':>9}  registry says channels_last_cpu")
    for name in args.models.split(","):
        r = step_times(name, args)
        results.append(r)
        print(f"{name:10} {r['default_s']:10.3f} {r['channels_last_3d_s']:8.3f} {r['speedup']:8.2f}x  {r['listed']}")
    write_results(args.out, {"shape": [args.batch, args.frames, args.size], "results": results})


if __name__ == "__main__":
    main()
