"""What every job file hands over to (``main/job.py``): one tested entry point instead of shell in each file.

A job file is its ``#SBATCH`` header and a few lines that find the repo and run
``python3 main/job.py [options] -- COMMAND "$@"``; from there, in Python: the
profile's virtualenv runs the command's ``python`` (``SLR_VENV`` wins) with the
profile's variables; ``DRY_RUN=1`` adds the job's dry-run flag; an array task of
a training job trains ``--seed <task id>``, a preprocessing job gets ``--workers
<CPUs>``, an experiment's array task takes its ``#TASK`` line (the job's own
arguments come last and win); several tasks start under ``srun``, which ends
the others at most ``SRUN_WAIT_S`` after one ends; SLURM's USR1
(which reaches only this process) and TERM are passed on so the command
checkpoints; exit 85 (checkpointed after a preemption) becomes ``scontrol
requeue`` of this job or array task, its answer checked; exit 86 (cancelled) is
never requeued. Standard library only: it runs under the system's ``python3``
before any environment is active.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from utils.core.preempt import CANCELLED_EXIT_CODE, REQUEUE_EXIT_CODE

__all__ = ["SRUN_WAIT_S", "build_command", "job_label", "main", "venv_env"]

# Seconds srun lets the other tasks of a step run once one has ended: longer than rank 0 needs to write a
# finished run's files after the others left, short enough to bound a hang on a peer that is gone.
SRUN_WAIT_S = 300

TASK_MARK = "#TASK "


def job_label(env) -> str:
    """The job as squeue names it: ``18_1`` for an array task, ``18`` otherwise ("" outside SLURM)."""
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID", "")


def venv_env(venv: str, env: dict, root: Path) -> dict:
    """``env`` with the virtualenv's ``bin`` first on PATH (what ``activate`` does); ``venv`` "" = as it is,
    a relative one is under ``root``.

    Raises:
        FileNotFoundError: no Python in the virtualenv (says how to make one, or point elsewhere).
    """
    venv = env.get("SLR_VENV") or venv
    if not venv:
        return dict(env)
    path = Path(venv) if Path(venv).is_absolute() else root / venv
    if not (path / "bin" / "python").exists():
        raise FileNotFoundError(f"no virtualenv at {path} (from the cluster profile); run 'make setup', or set "
                                "SLR_VENV=/path/to/venv when submitting")  # fmt: skip
    return {**env, "VIRTUAL_ENV": str(path), "PATH": f"{path / 'bin'}{os.pathsep}{env.get('PATH', '')}"}


def _insert(command: list[str], words: list[str]) -> list[str]:
    """``words`` right after the script (``python main/x.py``), so the job's own arguments, later, win."""
    return [*command[:2], *words, *command[2:]]


def build_command(args: argparse.Namespace, words: list[str], env) -> list[str]:
    """The command this job (or array task) runs: ``words`` (the command and the job's own arguments, which
    come last and win), or with ``--tasks-from`` the array task's command followed by ``words``.

    Raises:
        ValueError: ``--tasks-from`` and the array task has no ``#TASK`` line.
    """
    task = env.get("SLURM_ARRAY_TASK_ID")
    command, extra = list(words), []
    if args.tasks_from:
        lines = [ln[len(TASK_MARK) :] for ln in Path(args.tasks_from).read_text().splitlines() if ln.startswith(TASK_MARK)]
        tasks = dict(line.split(" ", 1) for line in lines)
        if task not in tasks:
            raise ValueError(f"array task {task or '(none: not an array job)'} is not in this job (tasks "
                             f"{', '.join(tasks)}); run one with: SLURM_ARRAY_TASK_ID=N bash <job file>")  # fmt: skip
        command, extra = shlex.split(tasks[task]), list(words)
    if not command:
        raise ValueError("no command after '--'")
    if args.seed_from_array and task is not None:
        command = _insert(command, ["--seed", task])
    if args.workers_from_cpus:
        command = _insert(command, ["--workers", env.get("SLURM_CPUS_PER_TASK", "1")])
    if env.get("DRY_RUN") == "1":
        if args.dry_run_flag:
            extra.append(args.dry_run_flag)
        else:
            print("[job] DRY_RUN: this job has no dry run; running it as is", file=sys.stderr)
    return [*command, *extra]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main/job.py", description=__doc__.split("\n\n")[0],
                                epilog="Job files call it; see slurm/README.md. Example: python3 main/job.py --venv "
                                       ".venv -- python main/train_x3d.py --variant xs --data data/wlasl100_224")  # fmt: skip
    p.add_argument("--venv", default="", help="virtualenv that runs the command ('' = the environment as it is)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a variable for the command")
    p.add_argument("--requeue", action="store_true", help=f"exit {REQUEUE_EXIT_CODE} (checkpointed): requeue this job")
    p.add_argument("--srun", action="store_true", help="several tasks: start the command with srun, once per task")
    p.add_argument("--dry-run-flag", default="", help="added when DRY_RUN=1 (e.g. --dry-run)")
    p.add_argument("--seed-from-array", action="store_true", help="an array task trains --seed <task id>")
    p.add_argument("--workers-from-cpus", action="store_true", help="--workers <the job's CPUs per task>")
    p.add_argument("--tasks-from", help="a job file whose '#TASK <id> <command>' lines give each array task's command")
    return p


def main(argv=None, env=None, root: str | Path = ".") -> int:
    """Run the job from ``root`` (the repo whose ``main/job.py`` the job file found); returns the exit code."""
    env, root = dict(os.environ if env is None else env), Path(root).resolve()
    argv = sys.argv[1:] if argv is None else list(argv)
    # main/job.py [options] -- [COMMAND...] [the job's own arguments, "$@" of the job file]
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    words = argv[split + 1 :]
    os.chdir(root)
    label, started = job_label(env), time.monotonic()
    print(f"[job] {env.get('SLURM_JOB_NAME', 'local')} {f'job {label} ' if label else ''}on {socket.gethostname()} at "
          f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} (restarts: {env.get('SLURM_RESTART_COUNT', 0)}) in {root}",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        env = venv_env(args.venv, env, root)
        env.update(item.split("=", 1) for item in args.env)
        command = build_command(args, words, env)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.srun and env.get("SLURM_JOB_ID"):
        # The tasks of a step end together: SRUN_WAIT_S after the first one ends, srun ends the others,
        # which would otherwise wait in a collective for a peer that is gone (a lost connection usually
        # fails them sooner). Not --kill-on-bad-exit: a checkpointed run exits 85 in every task, and the
        # first one out would kill the others before their own 85, turning the requeue into a failure.
        command = ["srun", "--kill-on-bad-exit=0", f"--wait={SRUN_WAIT_S}", *command]
    found = shutil.which(command[0], path=env.get("PATH"))
    if found is None:
        print(f"error: {command[0]} not found on PATH ({env.get('PATH')})", file=sys.stderr)
        return 127
    print(f"[job] {shlex.join(command)}", file=sys.stderr, flush=True)
    child = subprocess.Popen([found, *command[1:]], env=env)

    def forward(signum, _frame):
        print(f"[job] got {signal.Signals(signum).name}: passing it to the command (pid {child.pid}) so it "
              "checkpoints", file=sys.stderr, flush=True)  # fmt: skip
        child.send_signal(signum)

    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, forward)
    rc = child.wait()
    took = f"{time.monotonic() - started:.0f} s"
    if rc == REQUEUE_EXIT_CODE and args.requeue and label:
        r = subprocess.run(["scontrol", "requeue", label], capture_output=True, text=True)
        if r.returncode == 0:
            print(f"[job] checkpointed after {took}: requeued {label}; the same run resumes", file=sys.stderr)
            return 0
        # Refused when SLURM requeues the job itself (scontrol requeue, preemption) or it is ending.
        print(f"[job] checkpointed, not requeued ({' '.join(r.stderr.split()) or r.returncode}); submit the job "
              "again to resume", file=sys.stderr)  # fmt: skip
    elif rc == REQUEUE_EXIT_CODE:
        print(f"[job] checkpointed (exit {rc}): run the same command again to resume", file=sys.stderr)
    elif rc == CANCELLED_EXIT_CODE:
        print("[job] cancelled; the checkpoint is kept: submit the job again to resume", file=sys.stderr)
    else:
        print(f"[job] exit {rc} after {took}", file=sys.stderr)
    return rc
