"""Running a plan: what exists and what is queued (:func:`gather`), the planner (:func:`plan_actions`, a pure
function of the plan and those facts), and the executors that carry the actions out.

The one way onto SLURM for experiments and sweeps alike. ``plan_actions``
decides, step by step: a task whose output exists is done; one whose job is
still queued or running is not submitted twice (a queued job whose dependency
can never be met is cancelled instead); everything else is submitted, after
the new or still-queued jobs of the steps it depends on (``afterok`` jobs with
``--kill-on-invalid-dep=yes``, so a failed store cancels its dependants
instead of leaving them waiting forever). A report still queued is made to
wait for new jobs too. :func:`execute` sends the actions with sbatch, scancel
and scontrol (every result checked), prints them as a script (``dry_run``), or
:func:`run_local` runs the same steps in order here. Job ids (never states)
are kept in ``<results>/submitted.json``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from utils.cluster.profile import SlurmConfig, profile_from_dict, read_profile_file
from utils.cluster.render import log_pattern, render_job
from utils.cluster.shell import check_directive, command_line, quote
from utils.cluster.slurm import (
    NEVER,
    JobState,
    ResourceError,
    check_fit,
    cluster_nodes,
    config_request,
    job_states,
    preflight,
    slurm,
)
from utils.core.files import atomic_write_text, make_dirs
from utils.core.records import RecordError, read_record, write_json
from utils.experiment import ROOT, Plan, Step
from wlasl import keypoints, prepare

__all__ = ["Action", "Facts", "choose_profile", "compress", "default_cluster", "execute", "gather", "job_log", "plan_actions",
           "profile_for", "run_local"]  # fmt: skip

_JOB_ID = re.compile(r"\d+(_\d+)?")


@dataclass
class Facts:
    """What exists (outputs of task keys), what was submitted (task key -> job id) and what SLURM says of it."""

    done: set = field(default_factory=set)
    jobs: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    local: dict = field(default_factory=dict)  # task key -> exit code of a --local run

    def state(self, key: str) -> JobState | None:
        """The state of the job of ``key``: an array task falls back to its array (SLURM may keep only that),
        a whole array (a store's shards) is its tasks together: active while one is, else failed if one failed."""
        job = self.jobs.get(key, "")
        if job in self.states or "_" in job:
            return self.states.get(job) or self.states.get(job.split("_")[0])
        tasks = [st for j, st in self.states.items() if j.startswith(f"{job}_")] if job else []
        if not tasks:
            return None
        worst = next((t for t in tasks if t.active), None) or next((t for t in tasks if t.state != "COMPLETED"), tasks[0])
        return dataclasses.replace(worst, requeued=any(t.requeued for t in tasks))

    def active(self, key: str) -> bool:
        st = self.state(key)
        return st is not None and st.active

    def finished(self, key: str, shards: bool) -> bool:
        """Its output exists, unless it is a store whose job failed (written with --strict skips): that is not done."""
        st = self.state(key)
        return key in self.done and not (shards and st is not None and st.failed)


@dataclass(frozen=True)
class Action:
    """``submit`` tasks of a step (after ``(type, job)`` refs; ``step:<name>`` = a job of this round), ``cancel``
    a job that can never run, ``update`` a queued job's dependency, or ``keep`` (nothing to do, and why)."""

    kind: str
    step: str
    tasks: tuple[int, ...] = ()
    after: tuple[tuple[str, str], ...] = ()
    job: str = ""
    why: str = ""


# -- what exists


def output_done(key: str, path: str) -> bool:
    """Whether a task's output exists: a complete store, a completed run, a study's best.json, an export."""
    kind = key.split(":")[0]
    p = Path(path)
    try:
        if kind == "store":
            # Each stage's own report (a keypoint store's is keypoints_report.json): complete only when no instance
            # is owed a retry. A store from before the reports has its manifest only.
            reports = [p / stage.report for stage in (prepare.STAGE, keypoints.STAGE) if (p / stage.report).is_file()]
            if reports:
                return all(json.loads(r.read_text()).get("complete") is True for r in reports)
            return (p / "manifest.csv").is_file()
        if kind in ("run", "ensemble"):
            return read_record(p / "metrics.json").status == "completed"
        return (p / "export.json").is_file() if kind == "export" else p.is_file()
    except (OSError, ValueError, RecordError, AttributeError):
        return False


def gather(plan: Plan, *, slurm_states: bool = True) -> Facts:
    """The facts the planner needs: outputs on disk, ``submitted.json`` (only job ids pass) and SLURM's states."""
    try:
        data = json.loads((Path(plan.exp.results) / "submitted.json").read_text())
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    jobs = dict(data.get("jobs") or {}) if isinstance(data.get("jobs"), dict) else {}
    # The layout before one way onto SLURM: {"stores": {name: id}, "runs": {run id: id}, "report": id}.
    for old, prefix in (("stores", "store:"), ("runs", "run:")):
        jobs.update({prefix + k: v for k, v in (data.get(old) or {}).items()} if isinstance(data.get(old), dict) else {})
    if "report" in data and "report" not in jobs:
        jobs["report"] = data["report"]
    jobs = {str(k): v for k, v in jobs.items() if isinstance(v, str) and _JOB_ID.fullmatch(v)}
    local = data.get("local") if isinstance(data.get("local"), dict) else {}
    done = {key for key, path in plan.outputs.items() if output_done(key, path)}
    return Facts(done, jobs, job_states(jobs.values()) if slurm_states and jobs else {}, local)


# -- the planner: pure


def plan_actions(plan: Plan, facts: Facts) -> list[Action]:
    """What to do now, step by step, in the plan's order (dependencies come first). Pure."""
    actions: list[Action] = []
    new: set[str] = set()  # steps submitted in this round
    queued: dict[str, set[str]] = {}  # step -> its still-queued or running jobs (array ids)

    def refs(after) -> tuple[tuple[str, str], ...]:
        out = [(t, f"step:{s}") for t, s in after if s in new]
        return tuple(out + [(t, j) for t, s in after for j in sorted(queued.get(s, ()))])

    for step in plan.steps:
        if step.name == "report":
            break
        todo, never = [], []
        for i, (key, _) in enumerate(step.tasks):
            st = facts.state(key)
            if facts.finished(key, step.shards):
                continue
            if facts.active(key):
                queued.setdefault(step.name, set()).add(facts.jobs[key].split("_")[0])
                continue
            if st is not None and st.reason == NEVER:
                never.append(facts.jobs[key])
            todo.append(i)
        actions += [Action("cancel", step.name, job=j, why="its dependency failed: it would wait forever") for j in never]
        if todo:
            new.add(step.name)
            actions.append(Action("submit", step.name, () if step.shards else tuple(todo), refs(step.after)))
        else:
            why = "queued or running" if step.name in queued else "done"
            actions.append(Action("keep", step.name, why=f"{len(step.tasks)} task(s) {why}; not submitted again"))
    report = plan.step("report")
    after = refs(report.after)
    old, st = facts.jobs.get("report"), facts.state("report")
    if old and st is not None and st.active:
        if new:
            actions.append(Action("update", "report", after=after, job=old, why="it waits for the new jobs too"))
        else:
            actions.append(Action("keep", "report", why=f"job {old} still queued or running"))
    elif new or not old or (st is not None and st.state != "COMPLETED"):
        actions.append(Action("submit", "report", (), after))
    else:
        actions.append(Action("keep", "report", why="up to date (every task finished before the last report)"))
    return actions


# -- the executors


def profile_for(plan: Plan) -> dict[str, SlurmConfig]:
    """The cluster profile the file names, its ``cluster:`` tables on top, logs under ``<results>/logs``."""
    exp = plan.exp
    path = Path(exp.spec.profile)
    if not path.is_file():
        raise FileNotFoundError(f"{exp.path}: profile {path} not found; use slurm/cluster.toml or slurm/local.toml")
    data = read_profile_file(path)
    for kind, table in exp.spec.cluster.items():
        data[kind] = {**(data.get(kind) or {}), **table} if isinstance(data.get(kind, {}), dict) else table
    logs = str((Path(exp.results) / "logs").resolve())
    return {k: dataclasses.replace(c, log_dir=logs) for k, c in profile_from_dict(data, f"{path} + {exp.path} cluster:").items()}


def default_cluster() -> str:
    """``slurm`` when a controller answers (sinfo), else ``local``."""
    try:
        cluster_nodes()
    except (FileNotFoundError, RuntimeError, subprocess.SubprocessError):
        return "local"
    return "slurm"


def choose_profile(train: dict, *, say: Callable[[str], None], slurm: bool) -> str:
    """The profile whose ``[train]`` (with ``train`` on top) fits this cluster: ``slurm/cluster.toml``, else
    ``slurm/local.toml`` (said); the first when neither fits (its refusal names the fix) or without SLURM."""
    paths = ("slurm/cluster.toml", "slurm/local.toml")
    if not slurm:
        return paths[0]
    nodes = cluster_nodes()
    for path in paths:
        data = read_profile_file(ROOT / path)
        cfg = profile_from_dict({**data, "train": {**data.get("train", {}), **train}}, path)["train"]
        try:
            check_fit(config_request(cfg), nodes, job=path, fix="")
        except ResourceError:
            continue
        if path != paths[0]:
            say(f"{paths[0]}'s [train] fits no node of this cluster; using {path} (pass --profile to choose another)")
        return path
    return paths[0]


def job_name(plan: Plan, step: Step) -> str:
    return f"{plan.exp.name}-{step.name}"


def job_log(plan: Plan, step: Step, job: str) -> Path:
    """Where SLURM writes a job's (or array task's, ``123_4``) output."""
    array = step.shards or len(step.tasks) > 1 or step.kind == "train"
    name = f"{job_name(plan, step)}-{job}" if "_" in job or not array else f"{job_name(plan, step)}-{job}_0"
    return Path(plan.exp.results) / "logs" / f"{name}.out"


def _output(cfg: SlurmConfig, step: Step) -> list[str]:
    """``[--output=...]`` for sbatch's command line when the log path cannot be an ``#SBATCH`` line (a results
    folder with a space: an argument word holds any path); ``[]`` when the job file carries it."""
    pattern = log_pattern(cfg, "array" if step.shards or step.kind == "train" else None)
    try:
        check_directive(pattern, "--output")
    except ValueError:
        return [f"--output={pattern}"]
    return []


def _render(plan: Plan, step: Step, cfg: SlurmConfig) -> tuple[str, str | None]:
    """A step's job file and its full ``--array`` range (None for a single job)."""
    kw = {"job_name": job_name(plan, step), "source": plan.exp.path, "root": str(ROOT), "made_by": "main/experiment.py",
          "description": f"Experiment {plan.exp.name}: {step.name}.", "output": not _output(cfg, step)}  # fmt: skip
    if step.shards:
        return render_job(cfg, list(step.tasks[0][1]), array=f"0-{(cfg.array_size or 1) - 1}", workers_from_cpus=True,
                          **kw), f"0-{(cfg.array_size or 1) - 1}"  # fmt: skip
    if step.kind == "train":
        tasks = [(i, key, list(argv)) for i, (key, argv) in enumerate(step.tasks)]
        return render_job(cfg, [], array=f"0-{len(tasks) - 1}", tasks=tasks, dry_run_flag="--dry-run", **kw), "array"
    return render_job(cfg, list(step.tasks[0][1]), **kw), None


def compress(indices) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2,5,7-8`` (an --array value)."""
    runs: list[list[int]] = []
    for n in indices:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def check_inputs(plan: Plan, facts: Facts, *, create: bool) -> list[str]:
    """Everything the plan reads that is missing (all of it, each named); with ``create``, the synthetic sets are written."""
    missing = []
    for name, spec in plan.exp.spec.stores.items():
        if f"store:{name}" not in facts.done and spec.synthetic is not None and not Path(spec.metadata).is_file() and create:
            from wlasl.synthetic import make_synthetic

            make_synthetic(Path(spec.metadata).parent, **dataclasses.asdict(spec.synthetic))
    for what, path in plan.inputs:
        store = what.split(":")[0].removeprefix("store ")
        if f"store:{store}" in facts.done or Path(path).exists():
            continue
        hint = ("make it with main/preprocess.py or main/extract_keypoints.py --out " + path) if what.startswith("store") \
            and ":" not in what else "see docs/experiments.md: what goes where"  # fmt: skip
        missing.append(f"{what} {path} not found ({hint})")
    # A run id this plan shares with another plan's or a standalone run in the same results folder.
    for rid in plan.runs:
        config = Path(plan.outputs[f"run:{rid}"]) / "config.json"
        try:
            owner = json.loads(config.read_text()).get("tags", {}).get("plan")
        except (OSError, ValueError, AttributeError):
            continue
        if owner != plan.exp.name:
            missing.append(f"run {rid}: {config.parent} belongs to {f'plan {owner}' if owner else 'a standalone run'}; "
                           f"give this plan its own results folder (results:)")  # fmt: skip
    return missing


def _save(plan: Plan, facts: Facts) -> None:
    write_json(Path(plan.exp.results) / "submitted.json", {"jobs": facts.jobs, "local": facts.local})


def execute(plan: Plan, *, fit: bool = False, dry_run: bool = False, say: Callable[[str], None] = print) -> Facts:
    """Carry out :func:`plan_actions` on SLURM (or print them as an sbatch script with ``dry_run``).

    Every job file is written and checked against the cluster (:func:`utils.cluster.slurm.preflight`, with
    ``fit`` shrinking it) before the first is submitted.

    Raises:
        FileNotFoundError: inputs or the profile missing (all named); ResourceError: a job fits no node;
        RuntimeError: SLURM refused a command (what was submitted before it is kept in submitted.json).
    """
    results, profile = Path(plan.exp.results), profile_for(plan)
    make_dirs(results, f"{plan.exp.path}: results")
    facts = gather(plan, slurm_states=not dry_run)
    missing = check_inputs(plan, facts, create=not dry_run)
    if missing and not dry_run:
        raise FileNotFoundError(f"{plan.exp.path}: " + "; ".join(missing))
    for m in missing:
        say(f"warning: {m}")
    actions, files, nodes = plan_actions(plan, facts), {}, {}
    for a in (a for a in actions if a.kind == "submit"):
        step = plan.step(a.step)
        text, array = _render(plan, step, profile[step.kind])
        output = _output(profile[step.kind], step)
        files[a.step] = (results / "jobs" / f"{job_name(plan, step)}.slurm", array, list(output))
        atomic_write_text(files[a.step][0], text)  # written in a dry run too, to be read
        if not dry_run:
            files[a.step][2][len(output):] = preflight(
                text, output, job=f"experiment {plan.exp.name} {a.step}", fit=fit, nodes=nodes,
                fix=f"python main/experiment.py run {plan.exp.path} --fit (or --set cluster.{step.kind}.cpus_per_task=N)")
    if dry_run:
        say(f"sbatch commands, as a script (each job id feeds the next job's --dependency; the job files are written "
            f"under {results / 'jobs'}, nothing is submitted):")  # fmt: skip
    else:
        atomic_write_text(results / "experiment.yaml", json.dumps(plan.exp.raw, indent=2) + "\n")
    ids: dict[str, str] = {}
    for a in actions:
        step = plan.step(a.step)
        deps = [(t, ids[r[5:]] if r.startswith("step:") else r) for t, r in a.after]
        dependency = ",".join(f"{t}:{':'.join(j for u, j in deps if u == t)}" for t in dict.fromkeys(t for t, _ in deps))
        if a.kind == "keep":
            say(f"{a.step}: {a.why}")
        elif a.kind in ("cancel", "update"):
            argv = ["scancel", a.job] if a.kind == "cancel" else ["scontrol", "update", f"JobId={a.job}", f"Dependency={dependency}"]
            say(f"{a.step}: {'cancelling' if a.kind == 'cancel' else 'updating'} job {a.job} ({a.why})")
            if not dry_run:
                slurm(argv, what=f"{'cancelling' if a.kind == 'cancel' else 'updating'} job {a.job}")
        else:
            path, array, added = files[a.step]
            argv = ([f"--array={compress(a.tasks)}"] if array == "array" else []) + added + \
                ([f"--dependency={dependency}"] if deps else []) + (["--kill-on-invalid-dep=yes"] if "afterok" in dependency else [])  # fmt: skip
            if dry_run:  # our own $PLACEHOLDERs stay unquoted so the printed script runs as is
                ids[a.step] = "$" + re.sub(r"\W", "_", a.step).upper()
                say(f"{ids[a.step][1:]}=$(sbatch --parsable {' '.join(w if '$' in w else quote(w) for w in [*argv, str(path)])})")
                continue
            ids[a.step] = job = slurm(["sbatch", "--parsable", *argv, str(path)], what=f"{a.step} of {plan.exp.name}").split(";")[0].strip()
            for i in a.tasks or range(len(step.tasks)):
                facts.jobs[step.tasks[i][0]] = f"{job}_{i}" if array == "array" else job
            _save(plan, facts)  # after every job: a later refusal keeps what went
            say(f"submitted {a.step}: job {job}" + (f" ({' '.join(argv)})" if argv else ""))
    return facts


def run_local(plan: Plan, *, report: Callable, say: Callable[[str], None] = print, workers: int = 2) -> int:
    """The same steps in order here, without SLURM, then ``report(plan, say=say)``; done tasks are skipped, and a
    task whose ``afterok`` step failed is not run. Returns 0 when everything completed, 1 when something failed
    (the report still ran).

    Raises:
        FileNotFoundError: inputs missing (all named); nothing was run.
    """
    facts = gather(plan, slurm_states=False)
    missing = check_inputs(plan, facts, create=True)
    if missing:
        raise FileNotFoundError(f"{plan.exp.path}: " + "; ".join(missing))
    make_dirs(Path(plan.exp.results) / "logs", f"{plan.exp.path}: results")
    atomic_write_text(Path(plan.exp.results) / "experiment.yaml", json.dumps(plan.exp.raw, indent=2) + "\n")
    failed: set[str] = set()
    for step in plan.steps[:-1]:
        blocked = [s for t, s in step.after if t == "afterok" and s in failed]
        for key, argv in step.tasks:
            if output_done(key, plan.outputs[key]):
                say(f"== {key}: done; skipped")
                continue
            if blocked:
                failed.add(step.name)
                say(f"== {key}: skipped, {', '.join(blocked)} failed")
                continue
            say(f"== {key}: {command_line(argv)}")
            extra = ["--workers", str(workers)] if step.shards else []
            rc = subprocess.run([sys.executable, *argv[1:], *extra], cwd=ROOT).returncode
            facts.local[key] = rc
            _save(plan, facts)
            if rc != 0 or not output_done(key, plan.outputs[key]):
                failed.add(step.name)
                say(f"{key}: exited {rc}; the steps after it that need it are skipped, the others go on")
    say("== report")
    report(plan, say=say)
    return 1 if failed else 0
