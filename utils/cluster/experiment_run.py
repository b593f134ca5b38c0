"""Running an experiment plan: SLURM jobs chained with ``--dependency``, or the same plan in order here.

``submit_plan`` writes one job file per stage under ``<results>/jobs/`` and
submits what is missing: a preprocessing array per unfinished store, a
training array per store with only the runs that are neither completed nor
still queued (``afterok`` on its store's job when that still runs), and the
report (``afterany``, so it runs when some runs fail). What was submitted is
kept in ``<results>/submitted.json`` (job ids only; states always come from
SLURM), so ``run`` again submits nothing twice. ``run_local`` runs the same
commands one after the other on a machine without SLURM.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from utils.cluster.accounting import job_states
from utils.cluster.experiment import Plan, Stage
from utils.cluster.experiment_files import job_file, job_name, run_status_of, store_done, submitted
from utils.cluster.profile import SlurmConfig, profile_from_dict, read_profile_file
from utils.cluster.sbatch import render_sbatch
from utils.cluster.shell import command_line, quote
from utils.cluster.submit import check_fit, cluster_nodes, config_request, fit_config, run_sbatch
from utils.core.files import atomic_write_text
from utils.core.records import write_json

__all__ = ["ROOT", "check_inputs", "compress", "profile_for", "render_stage", "run_local", "submit_plan"]

ROOT = Path(__file__).resolve().parents[2]  # the repo: experiment paths are relative to it
_CPUS = '"${SLURM_CPUS_PER_TASK:-1}"'


def compress(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2,5,7-8`` (an --array value)."""
    parts, start = [], None
    for i, n in enumerate(indices):
        if start is None:
            start = n
        if i + 1 == len(indices) or indices[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ",".join(parts)


def _var(name: str) -> str:
    return re.sub(r"\W", "_", name)


def profile_for(plan: Plan) -> dict[str, SlurmConfig]:
    """The cluster profile named by the file, its ``cluster:`` tables on top, logs under ``<results>/logs``."""
    exp = plan.exp
    path = Path(exp.profile)
    if not path.is_file():
        raise FileNotFoundError(f"{exp.path}: profile {path} not found; use slurm/cluster.toml or slurm/local.toml")
    data = read_profile_file(path)
    for kind, table in exp.cluster.items():
        if isinstance(table, dict) and isinstance(data.get(kind, {}), dict):
            data[kind] = {**data.get(kind, {}), **table}
        else:
            data[kind] = table
    profile = profile_from_dict(data, where=f"{path} + {exp.path} cluster:")
    logs = str((Path(exp.results) / "logs").resolve())
    return {k: dataclasses.replace(cfg, log_dir=logs) for k, cfg in profile.items()}


def render_stage(plan: Plan, stage: Stage, cfg: SlurmConfig) -> tuple[str, str | None]:
    """The job file of a stage and its full ``--array`` range (None for a single job).

    Each array task finds its command in a ``case`` on SLURM_ARRAY_TASK_ID;
    every word of it is quoted (:func:`utils.cluster.shell.quote`).
    """
    if stage.sharded:
        (_, argv), = stage.tasks
        prelude = f"cmd=({command_line(argv)} --workers {_CPUS} --no-progress)"
        array = f"0-{(cfg.array_size or 1) - 1}"
    elif stage.kind == "train":
        lines = ["# ---- the run of each array task", 'case "${SLURM_ARRAY_TASK_ID:-}" in']
        lines += [f"  {i}) cmd=({command_line(argv)}) ;;  # {quote(key)}" for i, (key, argv) in enumerate(stage.tasks)]
        lines += ['  *) echo "error: array task ${SLURM_ARRAY_TASK_ID:-unset} is not in this job; run one task with: '
                  f'SLURM_ARRAY_TASK_ID=N bash {job_file(plan, stage).name}" >&2; exit 2 ;;', "esac"]  # fmt: skip
        prelude = "\n".join(lines)
        array = f"0-{len(stage.tasks) - 1}"
    else:
        (_, argv), = stage.tasks
        prelude, array = f"cmd=({command_line(argv)})", None
    text = render_sbatch(cfg, '"${cmd[@]}"', job_name=job_name(plan, stage), array=array, prelude=prelude,
                         dry_run_flag="--dry-run" if stage.kind == "train" else None, root=str(ROOT),
                         description=f"Experiment {plan.exp.name}: {stage.name}.", source=plan.exp.path, usage=False)  # fmt: skip
    return text, array


def check_inputs(plan: Plan, *, create: bool) -> list[str]:
    """Missing inputs as messages; with ``create``, write the synthetic sets the file asks for."""
    problems = []
    for s in plan.stores:
        if store_done(s.out):
            continue
        if s.synthetic is not None and not Path(s.metadata).is_file():
            if create:
                from wlasl.synthetic import make_synthetic

                make_synthetic(Path(s.metadata).parent, **s.synthetic)
            continue
        for what, path in (("metadata", s.metadata), ("videos", s.videos)):
            if not Path(path).exists():
                problems.append(f"store {s.name}: {what} {path} not found (see docs/experiments.md: what goes where)")
    for r in plan.runs:
        if r.pretrained and not Path(r.pretrained).exists():
            problems.append(f"run {r.run_id}: --pretrained {r.pretrained} not found (put the checkpoints under "
                            "checkpoints/, see docs/experiments.md)")  # fmt: skip
    return problems


def _save(plan: Plan, state: dict) -> None:
    write_json(Path(plan.exp.results) / "submitted.json", state)


def submit_plan(plan: Plan, *, fit: bool = False, dry_run: bool = False, say: Callable[[str], None] = print) -> dict:
    """Submit what is missing, chained with --dependency; returns the (updated) submitted ids.

    Raises:
        FileNotFoundError: inputs or the profile missing; ResourceError: a job fits no node;
        RuntimeError: sbatch refused a job (nothing after it is submitted).
    """
    exp, results = plan.exp, Path(plan.exp.results)
    profile = profile_for(plan)
    problems = check_inputs(plan, create=not dry_run)
    if problems and not dry_run:
        raise FileNotFoundError(f"{exp.path}: " + "; ".join(problems))
    for p in problems:
        say(f"warning: {p}")
    state = submitted(plan)
    ids = [*state["stores"].values(), *state["runs"].values(), *([state["report"]] if state.get("report") else [])]
    live = {} if dry_run else job_states(i.split("_")[0] for i in ids if i)

    def running(job: str | None) -> bool:  # the job, or any task of the array, will still run
        return bool(job) and any(s.active and (j == job or j.startswith(f"{job}_")) for j, s in live.items())

    cfgs = {stage.name: profile[stage.kind] for stage in plan.stages}
    if not dry_run:
        nodes_of: dict = {}
        for stage in plan.stages:
            cfg = cfgs[stage.name]
            nodes = nodes_of.setdefault(cfg.partition, cluster_nodes(cfg.partition))
            if fit:
                cfgs[stage.name], changed = fit_config(cfg, nodes)
                if changed:
                    say(f"{stage.name}: fitted to the largest node: {', '.join(changed)}")
            check_fit(config_request(cfgs[stage.name]), nodes, job=f"experiment {exp.name} {stage.name}",
                      fix=f"python main/experiment.py run {exp.path} --fit (or --set cluster.{stage.kind}.cpus_per_task=N)")  # fmt: skip
        (results / "logs").mkdir(parents=True, exist_ok=True)
        atomic_write_text(results / "experiment.yaml", json.dumps(exp.raw, indent=2) + "\n")

    if dry_run:
        say("sbatch commands, as a script (each job id feeds the next job's --dependency; "
            f"the job files are written under {results / 'jobs'}, nothing is submitted):")

    def send(stage: Stage, extra: list[str], label: str) -> str:
        text, _ = render_stage(plan, stage, cfgs[stage.name])
        path = job_file(plan, stage)
        argv = [*extra, str(path)]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)  # written in a dry run too, to be read
        if dry_run:  # our own $PLACEHOLDERs stay unquoted so the printed script runs as is
            words = " ".join(a if "$" in a else quote(a) for a in argv)
            say(f"{label[1:]}=$(sbatch --parsable {words})")
            return label
        job = run_sbatch(argv, what=f"{stage.name} of experiment {exp.name}")
        say(f"submitted {stage.name}: job {job}" + (f" ({' '.join(extra)})" if extra else ""))
        return job

    new_train, waiting = [], []
    store_dep: dict[str, str | None] = {}
    for stage in (s for s in plan.stages if s.kind == "preprocess"):
        (name, _), = stage.tasks
        out = next(s.out for s in plan.stores if s.name == name)
        old = state["stores"].get(name)
        if store_done(out):
            store_dep[name] = None
        elif running(old):
            store_dep[name] = old.split("_")[0]
            say(f"{stage.name}: job {old} is still queued or running; not submitted again")
        else:
            store_dep[name] = send(stage, [], f"$PREP_{_var(name)}")
            state["stores"][name] = store_dep[name]
            if not dry_run:
                _save(plan, state)
    for stage in (s for s in plan.stages if s.kind == "train"):
        store = stage.name.removeprefix("train-")
        todo = []
        for i, (run_id, _) in enumerate(stage.tasks):
            old = state["runs"].get(run_id)
            if run_status_of(results / "runs" / run_id) == "completed":
                continue
            if running(old):
                waiting.append(old.split("_")[0])
                continue
            todo.append(i)
        if not todo:
            say(f"{stage.name}: nothing to submit ({len(stage.tasks)} runs completed or queued)")
            continue
        extra = [f"--array={compress(todo)}"]
        if store_dep.get(store):
            extra.append(f"--dependency=afterok:{store_dep[store]}")
        job = send(stage, extra, f"$TRAIN_{_var(store)}")
        new_train.append(job)
        for i in todo:
            state["runs"][stage.tasks[i][0]] = f"{job}_{i}"
        if not dry_run:
            _save(plan, state)
    report = next(s for s in plan.stages if s.kind == "report")
    deps = sorted(set(new_train + waiting), key=str)
    old = state.get("report")
    dep_arg = [f"--dependency=afterany:{':'.join(deps)}"] if deps else []
    if running(old):
        if new_train:  # the queued report waits for the new arrays too
            subprocess.run(["scontrol", "update", f"JobId={old}", f"Dependency=afterany:{':'.join(deps)}"],
                           capture_output=True, text=True)  # fmt: skip
            say(f"report: job {old} still queued; now also waits for {', '.join(new_train)}")
        else:
            say(f"report: job {old} is still queued or running; not submitted again")
    elif new_train or not old or (live.get(old) and live[old].state != "COMPLETED") or dry_run:
        state["report"] = send(report, dep_arg, "$REPORT")
        if not dry_run:
            _save(plan, state)
    else:
        say("report: up to date (every run completed or failed before the last report)")
    return state


def run_local(plan: Plan, *, say: Callable[[str], None] = print, workers: int = 2) -> int:
    """The same plan in order on this machine; finished stores and completed runs are skipped.

    Returns:
        0 when every run completed, 1 when some failed (the report still ran), 2 for missing inputs.
    """
    from utils.cluster.experiment_status import experiment_report

    results = Path(plan.exp.results)
    problems = check_inputs(plan, create=True)
    if problems:
        say("error: " + "; ".join(problems))
        return 2
    (results / "logs").mkdir(parents=True, exist_ok=True)
    atomic_write_text(results / "experiment.yaml", json.dumps(plan.exp.raw, indent=2) + "\n")
    for s in plan.stores:
        if store_done(s.out):
            say(f"== store {s.name}: {s.out} is complete; skipped")
            continue
        say(f"== store {s.name}: {command_line(s.argv)}")
        r = subprocess.run([sys.executable, *s.argv[1:], "--workers", str(workers), "--no-progress"], cwd=ROOT)
        if r.returncode != 0 or not store_done(s.out):
            say(f"error: preprocessing {s.name} exited {r.returncode}; its runs are skipped")
    state = submitted(plan)
    state.setdefault("local", {})
    failed = []
    for run in plan.runs:
        store = next(s for s in plan.stores if s.name == run.store)
        if run_status_of(results / "runs" / run.run_id) == "completed":
            say(f"== run {run.run_id}: completed; skipped")
            continue
        if not store_done(store.out):
            failed.append(run.run_id)
            continue
        say(f"== run {run.run_id}: {command_line(run.argv)}")
        r = subprocess.run([sys.executable, *run.argv[1:]], cwd=ROOT)
        state["local"][run.run_id] = r.returncode
        _save(plan, state)
        if r.returncode != 0:
            failed.append(run.run_id)
            say(f"run {run.run_id} exited {r.returncode}; the others go on")
    say(f"== report of {len(plan.runs)} runs")
    experiment_report(plan, say=say)
    return 1 if failed else 0
