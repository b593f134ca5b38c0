"""What a run's TensorBoard events cost, beside what the run already writes at the same moments.

    python benchmarks/tensorboard_events.py [--epochs 30] [--heartbeats 60] [--classes 100] [--repeats 3]

Per epoch, :class:`models.tensorboard_run.RunBoard` writes 7 scalars where
the lifecycle already rewrites ``history.csv`` (``append_history``, the
baseline); at each heartbeat 2 scalars where it prints a line; at a restart
it rewrites the folder up to the checkpoint, where the engine loads the
checkpoint; at the end it draws 2 images per split (val, test) where
``write_split`` writes that split's files (the baseline). Medians of
``--repeats`` in milliseconds of CPU time (``time.process_time``), and the
event file's size. No GPU, no model: only the writing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from models.evaluation import write_split  # noqa: E402
from models.tensorboard_run import EPOCH_TAGS, RunBoard, split_images  # noqa: E402
from utils.core import tb_events  # noqa: E402
from utils.core.records import append_history  # noqa: E402


def _cpu_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(1e3 * (time.process_time() - t))
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--heartbeats", type=int, default=60, help="heartbeats per epoch (an hour-long epoch: 60)")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    n = args.classes
    labels, logits = rng.integers(0, n, 4 * n), rng.normal(size=(4 * n, n)).astype(np.float32)
    glosses = [f"gloss{i}" for i in range(n)]
    row = {"epoch": 1, **dict.fromkeys(EPOCH_TAGS, 0.5), "val_top2": 0.6, "wall_s": 1.0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        t = time.process_time()
        board = RunBoard(run / "tb", keep_epochs=0, keep_steps=0, hparams={"train.lr": 1e-3})
        rows.append(("open a new run folder", 1e3 * (time.process_time() - t), None))
        step = 0
        for epoch in range(1, args.epochs + 1):
            for _ in range(args.heartbeats):
                step += 1
                board.heartbeat(step, 1.0, 0.5)
            board.epoch({**row, "epoch": epoch})
        history = {"epoch": args.epochs + 1, **row}
        rows.append(("per epoch: 7 scalars vs history.csv", _cpu_ms(lambda: board.epoch({**row, "epoch": args.epochs}), args.repeats),
                     _cpu_ms(lambda: append_history(run, history), args.repeats)))  # fmt: skip
        rows.append(("per heartbeat: 2 scalars", _cpu_ms(lambda: board.heartbeat(step, 1.0, 0.5), args.repeats), None))
        images = {}
        rows.append((f"end, per split: 2 images ({n} classes) vs write_split",
                     _cpu_ms(lambda: images.update(split_images("test", labels, logits, glosses)), args.repeats),
                     _cpu_ms(lambda: write_split(run, "test", glosses * 4, labels, logits, glosses), args.repeats)))  # fmt: skip
        board.finish(args.epochs, {"test": {"top1": 0.5}}, images)
        board.close()
        size = sum(f.stat().st_size for f in tb_events.event_files(run / "tb"))
        half = args.epochs // 2

        def restart():
            RunBoard(run / "tb", keep_epochs=half, keep_steps=half * args.heartbeats, hparams={}).close()

        rows.append((f"restart: keep {half} of {args.epochs} epochs", _cpu_ms(restart, 1), None))
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'tensorboard ms':>14}  {'baseline ms':>11}  ratio")
    for name, ms, base in rows:
        ratio = f"{ms / base:.2f}" if base else ""
        print(f"{name:<{width}}  {ms:>14.2f}  {'' if base is None else f'{base:11.2f}':>11}  {ratio}")
    print(f"event file after {args.epochs} epochs x {args.heartbeats} heartbeats + {len(images)} images: {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
