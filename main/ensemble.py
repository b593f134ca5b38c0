"""Fuse finished runs (e.g. an RGB model and a pose model) by their per-class scores; writes a run directory.

The fused probabilities are the weighted mean of the runs' softmax scores,
clip by clip (matched by video id); with --weights auto the weights are
chosen on the val split (a grid over the simplex, best val top-1, ties to
the more uniform weights). The runs must share their classes and their
val/test clips. The result is a run directory the report lists like any
run (see docs/pose.md, "Fusing runs").

Examples:
    # X3D-S (RGB) + the pose transformer on WLASL100, weights chosen on val
    python main/ensemble.py results/runs/x3d_s-wlasl100_224-s0 results/runs/pose_transformer-wlasl100_pose-s0 \\
        --out results/runs/ensemble-x3d_s+pose_transformer-wlasl100-s0
    # fixed weights (one per run, in order; normalised to sum 1)
    python main/ensemble.py RUN_A RUN_B RUN_C --out results/runs/my_ensemble --weights 2,1,1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from models.ensemble import GRID_STEPS, fuse_runs  # noqa: E402
from utils.core.argv import script_parser  # noqa: E402
from utils.core.records import RecordError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(
        "main/ensemble.py",
        "Fuse finished runs' per-class scores (weighted softmax probabilities) into a new run directory.",
        __doc__,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="two or more completed run directories")
    p.add_argument("--out", required=True, help="the ensemble's run directory (its name is the run id)")
    p.add_argument("--weights", default="auto", help="'auto' (chosen on val) or one weight per run, e.g. 0.6,0.4")
    p.add_argument("--grid-steps", type=int, default=GRID_STEPS,
                   help=f"auto: weights in multiples of 1/N (default {GRID_STEPS})")  # fmt: skip
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        record = fuse_runs(args.runs, args.out, weights=args.weights, grid_steps=args.grid_steps)
    except (FileNotFoundError, RecordError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    weights = ", ".join(f"{m} {w:.2f}" for m, w in zip(record.tags["members"], record.tags["weights"]))
    val, test = record.metrics["val"], record.metrics["test"]
    print(f"ensemble {record.run_id}: weights {weights} ({'chosen on val' if args.weights == 'auto' else 'given'})")
    print(f"  val top1 {val['top1']:.4f}  test top1 {test['top1']:.4f} top5 {test['top5']:.4f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
