"""Submit a grid of training runs (models x seeds) as one job array, and watch it.

Examples:
    # 6 MoViNet/X3D models x 3 seeds on WLASL100, one SLURM array (resources: [train] of the profile)
    python main/sweep.py --models movinet_a0,movinet_a1,movinet_a2,x3d_xs,x3d_s,i3d --seeds 3 --subset 100
    # every model on one store of your own, small batches, a preset, 2 CPUs and 16 GB per task
    python main/sweep.py --models x3d_xs,s3d --store data/wlasl100_112 --batch-size 4 --config my.yaml --cpus 2 --mem 16
    # stores named by size: data/wlasl3_64 for every model
    python main/sweep.py --models x3d_xs,movinet_a0 --subset 3 --size 64 --frames 8 --fit
    # a workstation without SLURM: the same grid as local processes
    python main/sweep.py --models x3d_xs,s3d --seeds 2 --cluster local --dry-run
    # state of every task, test top-1 once its run record is complete, why a task failed and its log
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

from utils.cluster.profile import load_profile  # noqa: E402
from utils.cluster.submit import ResourceError, cluster_nodes, fit_config  # noqa: E402
from utils.cluster.sweep import check_stores, default_cluster, plan_sweep, submit_sweep, sweep_status  # noqa: E402
from utils.core.config import load_preset  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main/sweep.py",
        description="Submit models x seeds as one submitit job array (SLURM or local); `status` lists the tasks.",
        epilog=__doc__.split("Examples:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. movinet_a0,x3d_s")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per model (default 1)")
    g = p.add_argument_group("data")
    g.add_argument("--subset", type=int, default=100,
                   help="WLASL-N: trains on <data-root>/wlasl<N>_<size> (default 100)")  # fmt: skip
    g.add_argument("--size", type=int,
                   help="input side in pixels, and the store <data-root>/wlasl<N>_<size> (default: the model's, "
                   "172 MoViNet, 224 the others)")  # fmt: skip
    g.add_argument("--store", help="one clip store for every model (instead of <data-root>/wlasl<N>_<size>)")
    g.add_argument("--data-root", default="data", help="clip stores folder (default data)")
    g.add_argument("--results", default="results", help="results root (default results)")
    g = p.add_argument_group("training (every run)")
    g.add_argument("--config", help="YAML preset (model/data/train sections) for every run; options here win")
    g.add_argument("--epochs", type=int, help="epochs per run (default: the training default)")
    g.add_argument("--batch-size", type=int, help="clips per step (default: the training default)")
    g.add_argument("--frames", type=int, help="frames per clip (default: the model's)")
    g.add_argument("--dry-run", action="store_true", help="each run: a few clips, 2 steps, 1 epoch")
    g = p.add_argument_group("scheduling")
    g.add_argument("--name", help="sweep name, its folder under <results>/sweeps/ (default wlasl<subset>)")
    g.add_argument("--cluster", choices=["slurm", "local"], help="default: slurm when sinfo answers, else local")
    g.add_argument("--profile", type=Path, default=ROOT / "slurm" / "cluster.toml",
                   help="cluster profile ([train] resources; slurm/local.toml for the local cluster)")  # fmt: skip
    g.add_argument("--cpus", type=int, help="CPUs per task (default: the profile's train cpus_per_task)")
    g.add_argument("--mem", type=int, help="memory per task in GB (default: the profile's train mem_gb)")
    g.add_argument("--no-gpu", action="store_true", help="drop the profile's GPU request (a CPU-only cluster)")
    g.add_argument("--fit", action="store_true", help="shrink CPUs, memory and GPUs to the largest node")
    g.add_argument("--timeout-min", type=int,
                   help="wall time per task (default: the profile's train time_min, else 60)")  # fmt: skip
    g.add_argument("--parallel", type=int, help="at most N tasks at once (SLURM)")
    return p


def status_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main/sweep.py status", description="List a sweep's tasks, states and top-1.")
    p.add_argument("--name", help="sweep name (default: every sweep under <results>/sweeps/)")
    p.add_argument("--results", default="results", help="results root (default results)")
    return p


def show_status(args) -> int:
    root = Path(args.results) / "sweeps"
    try:
        files = [root / args.name / "sweep.json"] if args.name else sorted(root.glob("*/sweep.json"))
        if not files:
            raise FileNotFoundError(f"no sweeps under {root}; submit one with: python main/sweep.py --models ...")
        for f in files:
            tasks = sweep_status(f)
            print(f"sweep {f.parent.name} ({f})")
            print(f"  {'model':<12} {'seed':>4} {'job':>10} {'state':<12} {'top1':>6}  run")
            for t in tasks:
                top1 = f"{t.top1:.4f}" if t.top1 is not None else "-"
                print(f"  {t.model:<12} {t.seed:>4} {t.job_id:>10} {t.state:<12} {top1:>6}  {t.run_id}")
                if t.reason or t.log:
                    print(f"      why: {t.reason or '(unknown)'}\n      log: {t.log}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]:
        return show_status(status_parser().parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        train = load_profile(args.profile)["train"]
        overrides = {k: v for k, v in (("cpus_per_task", args.cpus), ("mem_gb", args.mem)) if v}
        if args.no_gpu:
            overrides["gpus"] = None
        train = dataclasses.replace(train, **overrides)
        cluster = args.cluster or default_cluster()
        if cluster == "slurm" and args.fit:
            train, changed = fit_config(train, cluster_nodes(train.partition))
            if changed:
                print(f"fitted to the largest node: {', '.join(changed)}")
        name = f"wlasl{args.subset}" if args.name is None else args.name
        tasks = plan_sweep(
            [m.strip() for m in args.models.split(",") if m.strip()],
            args.seeds,
            subset=args.subset,
            data_root=args.data_root,
            results=args.results,
            name=name,
            store=args.store,
            preset=load_preset(args.config) if args.config else None,
            train={"epochs": args.epochs} if args.epochs else None,
            model={k: v for k, v in (("frames", args.frames), ("size", args.size)) if v} or None,
            data={"batch_size": args.batch_size} if args.batch_size else None,
            dry_run=args.dry_run,
        )
        check_stores(tasks, subset=args.subset)
        sweep, _ = submit_sweep(
            tasks,
            name=name,
            results=args.results,
            cluster=cluster,
            slurm=train,
            timeout_min=args.timeout_min or train.time_min or 60,
            parallel=args.parallel,
        )
    except (FileNotFoundError, KeyError, TypeError, ValueError, ResourceError, RuntimeError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(
        f"submitted {len(tasks)} tasks to {cluster} ({sweep}); follow them with: "
        f"python main/sweep.py status --name {name} --results {args.results}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
