"""Run a whole study from one experiment file: stores -> runs, tuning -> ensembles, exports -> report, on SLURM or here.

Examples:
    # the seed thesis table on SLURM: preprocessing arrays, a training array per store, the report
    python main/experiment.py run experiments/thesis_wlasl100.yaml
    # what it would submit, with the exact sbatch commands and dependencies (no cluster needed)
    python main/experiment.py run experiments/thesis_wlasl100.yaml --dry-run
    # a tiny try-out: one seed, one epoch, jobs shrunk to the largest node
    python main/experiment.py run experiments/thesis_wlasl100.yaml --set runs.*.seeds=1 --set runs.*.options.epochs=1 --fit
    # the same plan in order on a machine without SLURM (what `make demo` does)
    python main/experiment.py run experiments/demo.yaml --local
    # every store, run, study, ensemble and export: pending, running, requeued, completed, failed (why, log)
    python main/experiment.py status experiments/thesis_wlasl100.yaml
Running `run` again submits only what is missing: finished stores and completed runs are
skipped, failed or cancelled ones (and what depends on them) go again and resume from their
checkpoints, queued jobs are not submitted twice. Paths inside the file are relative to the
repo root. See docs/experiments.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without install

from utils.cluster.shell import command_line  # noqa: E402
from utils.cluster.slurm import ResourceError  # noqa: E402
from utils.core.argv import script_parser  # noqa: E402
from utils.experiment import load_experiment, make_plan  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(
        "main/experiment.py",
        "Run an experiment file as SLURM jobs chained with --dependency, or in order on this machine; "
        "`status` shows where it stands, `report` writes its table.",
        __doc__,
    )
    p.add_argument("command", choices=["run", "status", "report", "step"], help="run: submit (or --local); status; "
                   "report: the table of the experiment's runs (what its report job runs); step KEY: one ensemble "
                   "or export step (what its job runs)")  # fmt: skip
    p.add_argument("file", type=Path, help="experiment file, e.g. experiments/thesis_wlasl100.yaml")
    p.add_argument("key", nargs="?", help="step: the task, e.g. ensemble:rgb_pose or export:x3d_onnx")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the file (repeatable; * = every item): runs.*.seeds=1, "
                   "stores.wlasl100_172.size=112, cluster.train.cpus_per_task=2")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="run: print the plan and the sbatch commands; submit nothing")
    p.add_argument("--local", action="store_true", help="run: the same plan in order here, without SLURM")
    p.add_argument("--fit", action="store_true", help="run: shrink each job's CPUs, memory and GPUs to the largest node")
    p.add_argument("--workers", type=int, default=2, help="--local: preprocessing processes (default 2)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    file = args.file.resolve()
    os.chdir(ROOT)  # paths in experiment files are relative to the repo root, as in the jobs
    from utils.cluster import runner, status

    try:
        shown = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
        plan = make_plan(load_experiment(shown, args.set))
        if args.command == "status":
            print(status.format_status(plan, status.plan_status(plan)))
            return 0
        if args.command == "report":
            status.experiment_report(plan)
            return 0
        if args.command == "step":
            if args.key not in plan.outputs or args.key.split(":")[0] not in ("ensemble", "export"):
                raise ValueError(f"step expected an ensemble or export of {shown}: "
                                 f"{[k for k in plan.outputs if k.startswith(('ensemble:', 'export:'))]}")  # fmt: skip
            from utils.steps import run_step

            return run_step(plan, args.key)
        if args.dry_run or args.local:
            print(f"experiment {plan.exp.name} -> {plan.exp.results}: {len(plan.steps)} steps")
            for step in plan.steps:
                after = ", ".join(f"{t} {s}" for t, s in step.after)
                print(f"  {step.name} ({step.kind}{'; ' + after if after else ''})")
                print("".join(f"    {key}: {command_line(argv)}\n" for key, argv in step.tasks), end="")
        if args.local:
            if args.dry_run:
                print("--local: these commands run in order here, then the report; nothing is run now")
                return 0
            return runner.run_local(plan, report=status.experiment_report, workers=args.workers)
        runner.execute(plan, fit=args.fit, dry_run=args.dry_run)
    except (FileNotFoundError, KeyError, TypeError, ValueError, ResourceError, RuntimeError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    if not args.dry_run:
        print(f"results: {plan.exp.results} (runs/, tables/, logs/); follow with: "
              f"python main/experiment.py status {shown}" + "".join(f" --set {s}" for s in args.set))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
