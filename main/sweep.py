"""Submit a grid of training runs (models x seeds) as one job array, and watch it.

Examples:
    # 6 MoViNet/X3D models x 3 seeds on WLASL100, one SLURM array (resources: [train] of the profile)
    python main/sweep.py --models movinet_a0,movinet_a1,movinet_a2,x3d_xs,x3d_s,i3d --seeds 3 --subset 100
    # a workstation without SLURM: the same grid as local processes
    python main/sweep.py --models x3d_xs,s3d --seeds 2 --cluster local --dry-run
    # state of every task, and test top-1 once its run record is complete
    python main/sweep.py status
    python main/sweep.py status --name wlasl100
A preempted or timed-out task checkpoints and requeues itself, and resumes its run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without install

from utils.cluster.sbatch import load_profile  # noqa: E402
from utils.cluster.sweep import default_cluster, plan_sweep, submit_sweep, sweep_status  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main/sweep.py",
        description="Submit models x seeds as one submitit job array (SLURM or local); `status` lists the tasks.",
        epilog=__doc__.split("Examples:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. movinet_a0,x3d_s")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per model (default 1)")
    p.add_argument(
        "--subset", type=int, default=100, help="WLASL-N: trains on <data-root>/wlasl<N>_<size> (default 100)"
    )
    p.add_argument("--name", help="sweep name, its folder under <results>/sweeps/ (default wlasl<subset>)")
    p.add_argument("--cluster", choices=["slurm", "local"], help="default: slurm when sinfo answers, else local")
    p.add_argument(
        "--profile", type=Path, default=ROOT / "slurm" / "cluster.toml", help="cluster profile ([train] resources)"
    )
    p.add_argument("--data-root", default="data", help="clip stores folder (default data)")
    p.add_argument("--results", default="results", help="results root (default results)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the training default)")
    p.add_argument("--frames", type=int, help="frames per clip (default: the model's)")
    p.add_argument("--size", type=int, help="input side in pixels (default: the model's)")
    p.add_argument(
        "--timeout-min", type=int, help="wall time per task (default: the profile's train time_min, else 60)"
    )
    p.add_argument("--parallel", type=int, help="at most N tasks at once (SLURM)")
    p.add_argument("--dry-run", action="store_true", help="each run: a few clips, 2 steps, 1 epoch")
    p.add_argument("--no-gpu", action="store_true", help="drop the profile's GPU request (a CPU-only cluster)")
    return p


def status_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main/sweep.py status", description="List a sweep's tasks, states and top-1.")
    p.add_argument("--name", help="sweep name (default: every sweep under <results>/sweeps/)")
    p.add_argument("--results", default="results", help="results root (default results)")
    return p


def show_status(args) -> int:
    root = Path(args.results) / "sweeps"
    files = [root / args.name / "sweep.json"] if args.name else sorted(root.glob("*/sweep.json"))
    if not files:
        print(f"error: no sweeps under {root}; submit one with: python main/sweep.py --models ...", file=sys.stderr)
        return 2
    for f in files:
        try:
            tasks = sweep_status(f)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"sweep {f.parent.name} ({f})")
        print(f"  {'model':<12} {'seed':>4} {'job':>10} {'state':<12} {'top1':>6}  run")
        for t in tasks:
            top1 = f"{t.top1:.4f}" if t.top1 is not None else "-"
            print(f"  {t.model:<12} {t.seed:>4} {t.job_id:>10} {t.state:<12} {top1:>6}  {t.run_id}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]:
        return show_status(status_parser().parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        train = load_profile(args.profile)["train"]
        if args.no_gpu:
            train = dataclasses.replace(train, gpus=None)
        cluster = args.cluster or default_cluster()
        name = args.name or f"wlasl{args.subset}"
        tasks = plan_sweep(
            [m.strip() for m in args.models.split(",") if m.strip()],
            args.seeds,
            subset=args.subset,
            data_root=args.data_root,
            results=args.results,
            name=name,
            train={"epochs": args.epochs} if args.epochs else None,
            model={k: v for k, v in (("frames", args.frames), ("size", args.size)) if v} or None,
            dry_run=args.dry_run,
        )
        sweep, _ = submit_sweep(
            tasks,
            name=name,
            results=args.results,
            cluster=cluster,
            slurm=train,
            timeout_min=args.timeout_min or train.time_min or 60,
            parallel=args.parallel,
        )
    except (FileNotFoundError, KeyError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"submitted {len(tasks)} tasks to {cluster} ({sweep}); follow them with: python main/sweep.py status --name {name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
