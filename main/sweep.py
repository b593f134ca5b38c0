"""Train a grid of models x seeds as one SLURM job array (or here, in order), and watch it.

Examples:
    # 6 models x 3 seeds on WLASL100, one array (resources: [train] of the profile the cluster fits)
    python main/sweep.py --models movinet_a0,movinet_a1,movinet_a2,x3d_xs,x3d_s,i3d --seeds 3 --subset 100
    # every model on one store of your own, small batches, a preset, 2 CPUs and 16 GB per task
    python main/sweep.py --models x3d_xs,s3d --store data/wlasl100_112 --batch-size 4 --config my.yaml --cpus 2 --mem 16
    # stores named by size: data/wlasl3_64 for every model
    python main/sweep.py --models x3d_xs,movinet_a0 --subset 3 --size 64 --frames 8 --fit
    # a workstation without SLURM: the same grid, in order here
    python main/sweep.py --models x3d_xs,s3d --seeds 2 --cluster local --dry-run
    # state of every run, test top-1 once it completed, why a run failed and its log
    python main/sweep.py status
    python main/sweep.py status --name wlasl100
A sweep is an experiment with runs only (results/sweeps/<name>/: runs/, logs/, tables/), submitted,
followed and reported like one; run the same command again to submit only what is missing.
A preempted or timed-out run checkpoints, requeues itself and resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without install

from utils.cluster.runner import choose_profile, default_cluster, execute, run_local  # noqa: E402
from utils.cluster.slurm import ResourceError  # noqa: E402
from utils.cluster.status import experiment_report, format_status, plan_status  # noqa: E402
from utils.core.argv import script_parser  # noqa: E402
from utils.experiment import load_experiment, make_plan, sweep_experiment  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(
        "main/sweep.py",
        "Train models x seeds as one job array (SLURM, or in order here); `status` lists the runs.",
        __doc__,
    )
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. movinet_a0,x3d_s")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per model (default 1)")
    g = p.add_argument_group("data")
    g.add_argument("--subset", type=int, default=100, help="WLASL-N: trains on <data-root>/wlasl<N>_<size> (default 100)")
    g.add_argument("--size", type=int, help="the store <data-root>/wlasl<N>_<size> (default: the model's, 172 MoViNet, "
                   "224 the others); runs train at their store's side")  # fmt: skip
    g.add_argument("--store", help="one store for every model (instead of <data-root>/wlasl<N>_<size>)")
    g.add_argument("--data-root", default="data", help="stores folder (default data)")
    g.add_argument("--results", default="results", help="results root; the sweep goes to <results>/sweeps/<name>")
    g = p.add_argument_group("training (every run)")
    g.add_argument("--config", help="YAML preset (model/data/train sections) for every run; options here win")
    g.add_argument("--epochs", type=int, help="epochs per run (default: the training default)")
    g.add_argument("--batch-size", type=int, help="clips per step (default: the training default)")
    g.add_argument("--frames", type=int, help="frames per clip (default: the model's)")
    g.add_argument("--dry-run", action="store_true", help="each run: a few clips, 2 steps, 1 epoch")
    g = p.add_argument_group("scheduling")
    g.add_argument("--name", help="sweep name, its folder under <results>/sweeps/ (default wlasl<subset>)")
    g.add_argument("--cluster", choices=["slurm", "local"], help="default: slurm when sinfo answers, else local")
    g.add_argument("--profile", help="cluster profile (default: slurm/cluster.toml when its [train] fits the cluster, "
                   "else slurm/local.toml, said when chosen)")  # fmt: skip
    g.add_argument("--cpus", type=int, help="CPUs per run (default: the profile's train cpus_per_task)")
    g.add_argument("--mem", type=int, help="memory per run in GB (default: the profile's train mem_gb)")
    g.add_argument("--no-gpu", action="store_true", help="drop the profile's GPU request (a CPU-only cluster)")
    g.add_argument("--fit", action="store_true", help="shrink CPUs, memory and GPUs to the largest node")
    g.add_argument("--timeout-min", type=int, help="wall time per run (default: the profile's train time_min)")
    g.add_argument("--parallel", type=int, help="at most N runs at once (SLURM)")
    return p


def status_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main/sweep.py status", description="List a sweep's runs, states and top-1.")
    p.add_argument("--name", help="sweep name (default: every sweep under <results>/sweeps/)")
    p.add_argument("--results", default="results", help="results root (default results)")
    return p


def show_status(args) -> int:
    root = Path(args.results) / "sweeps"
    folders = [root / args.name] if args.name else sorted(p.parent for p in root.glob("*/experiment.yaml"))
    old = [p.parent for p in root.glob("*/sweep.json") if not (p.parent / "experiment.yaml").exists()]
    for folder in old:  # submitted with submitit before sweeps became experiments
        print(f"sweep {folder.name}: submitted by an older version (submitit); its runs are under {args.results}/runs/: "
              f"python utils/report.py --results {args.results}")  # fmt: skip
    if not folders and not old:
        print(f"error: no sweeps under {root}; submit one with: python main/sweep.py --models ...", file=sys.stderr)
        return 2
    for folder in folders:
        try:
            plan = make_plan(load_experiment(folder / "experiment.yaml"))
        except (FileNotFoundError, KeyError, TypeError, ValueError) as e:
            print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
            return 2
        print(format_status(plan, plan_status(plan)))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]:
        return show_status(status_parser().parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    train = {k: v for k, v in (("cpus_per_task", args.cpus), ("mem_gb", args.mem), ("time_min", args.timeout_min),
                               ("array_parallel", args.parallel)) if v} | ({"gpus": ""} if args.no_gpu else {})  # fmt: skip
    options = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("frames", args.frames),
                                 ("config", args.config), ("dry_run", args.dry_run)) if v}  # fmt: skip
    try:
        cluster = args.cluster or default_cluster()
        profile = args.profile or choose_profile(train, say=print, slurm=cluster == "slurm")
        exp = sweep_experiment([m.strip() for m in args.models.split(",") if m.strip()], args.seeds,
                               name=args.name or f"wlasl{args.subset}", results=args.results, subset=args.subset,
                               data_root=args.data_root, size=args.size, store=args.store, options=options,
                               profile=profile, cluster={"train": train})  # fmt: skip
        plan = make_plan(exp)
        if cluster == "local":
            return run_local(plan, report=experiment_report)
        execute(plan, fit=args.fit)
    except (FileNotFoundError, KeyError, TypeError, ValueError, ResourceError, RuntimeError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(f"follow it with: python main/sweep.py status --name {exp.name} --results {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
