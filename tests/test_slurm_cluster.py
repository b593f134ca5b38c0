"""The job files and sweeps on a real single-node SLURM cluster (slurm/local_cluster.sh).

Needs root on Debian/Ubuntu (the script installs and starts munge, MariaDB,
slurmdbd, slurmctld, slurmd). Elsewhere these tests skip, saying why; with
SLR_REQUIRE_SLURM=1 (CI) that skip is a failure instead. The cluster is started
once per session and left running when it was already up before.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils.cluster.profile import SlurmConfig
from utils.cluster.sbatch import render_sbatch
from utils.core.records import read_history
from wlasl.synthetic import make_synthetic

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "slurm" / "local_cluster.sh"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
# Fit any job on a 2-core test node; sbatch options on the command line win over #SBATCH lines.
SMALL = ["--cpus-per-task=1", "--mem=1G"]


def _cannot_run_slurm() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the local cluster installs packages and starts system daemons)"
    if not (Path("/etc/debian_version").exists() and shutil.which("apt-get")):
        return "needs Debian or Ubuntu (apt-get) for slurm/local_cluster.sh"
    return None


def _claim_for_this_worker(tmp_path_factory) -> None:
    """Fail at once, naming both, when two xdist workers reach the one cluster (tests/conftest.py keeps them in one)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    claim = tmp_path_factory.getbasetemp().parent / "slurm-worker"  # shared by this run's workers
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = claim.read_text()
        if owner != worker:
            pytest.fail(f"the SLURM tests reached both {owner} and {worker}: a test using the cluster sits in a "
                        f"file missing from SLURM_FILES in tests/conftest.py, or the scheduler there was not used")  # fmt: skip
        return
    os.write(fd, worker.encode())
    os.close(fd)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """Start the local cluster once; stop it at the end only if this session started it."""
    reason = _cannot_run_slurm()
    if reason:
        if os.environ.get("SLR_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLR_REQUIRE_SLURM=1 but this machine cannot run SLURM: {reason}")
        pytest.skip(f"no local SLURM: {reason} (set SLR_REQUIRE_SLURM=1 to make this a failure)")
    _claim_for_this_worker(tmp_path_factory)
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    # The first lines say what failed; the last ones are the daemons' log tails.
    assert r.returncode == 0, f"slurm/local_cluster.sh start failed:\n{r.stderr[:1500]}\n...\n{r.stderr[-1500:]}"
    yield
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


def sbatch(*args: str, env: dict | None = None) -> str:
    """Submit from the repo root (as users do); returns the job id."""
    r = subprocess.run(["sbatch", "--parsable", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "SLR_VENV": sys.prefix, **(env or {})})  # fmt: skip
    assert r.returncode == 0, f"sbatch {' '.join(args)} failed: {r.stderr}"
    return r.stdout.strip().split(";")[0]


def states(job_id: str, duplicates: bool = False) -> dict[str, list[str]]:
    """``{job or array task id: [state, ...]}`` from sacct (with -D every requeued run, oldest first)."""
    cmd = ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State"] + (["-D"] if duplicates else [])
    out: dict[str, list[str]] = {}
    for line in subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines():
        jid, _, state = line.partition("|")
        out.setdefault(jid, []).append(state.split()[0] if state else "")
    return out


def wait_done(job_id: str, tasks: int = 1, timeout_s: float = 240) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        final = {j: s[-1] for j, s in states(job_id).items() if "[" not in j}
        if len(final) >= tasks and all(s in TERMINAL for s in final.values()):
            return final
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished after {timeout_s}s: {states(job_id)}")


def release_requeued(job: str, until, timeout_s: float = 120) -> None:
    """Start a requeued job now instead of after SLURM's hold (Reason=BeginTime, about 2 min).

    Not within the same second as the requeue: slurmd refuses credentials as old as the
    job's revocation ("Job credential revoked"), and the job would fail.
    """
    deadline, pending_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline and not until():
        if states(job).get(job, [""])[-1] == "PENDING":
            pending_since = pending_since or time.monotonic()
            if time.monotonic() - pending_since > 3:
                subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
        elif states(job).get(job, [""])[-1] in TERMINAL:
            return
        time.sleep(0.5)


def log_of(name: str, job_id: str) -> str:
    path = ROOT / "logs" / f"{name}-{job_id}.out"
    return path.read_text() if path.exists() else f"(no log at {path})"


@pytest.fixture(scope="session")
def store(cluster, tmp_path_factory):
    """The synthetic set, preprocessed by the committed preprocess_224.slurm as a 4-task array."""
    root = tmp_path_factory.mktemp("slurm_data")
    raw = make_synthetic(root / "raw", glosses=3, per_gloss=6)
    out = root / "wlasl3_64"
    job = sbatch(*SMALL, "slurm/preprocess_224.slurm", "--metadata", str(raw["metadata"]), "--videos",
                 str(raw["videos"]), "--out", str(out), "--subset", "3", "--size", "64", "--frames", "8")  # fmt: skip
    final = wait_done(job, tasks=4)
    assert set(final.values()) == {"COMPLETED"}, (final, log_of("preprocess_224", f"{job}_0"))
    return {"root": out, "raw": raw, "job": job}


def test_preprocess_array_completes_with_a_full_manifest(store):
    report = json.loads((store["root"] / "prepare_report.json").read_text())
    assert report["complete"] and report["shards"] == 4 and sorted(report["shards_done"]) == [0, 1, 2, 3]
    with (store["root"] / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    # 3 glosses x 6 videos, less the synthetic set's one missing and one corrupt video.
    assert len(rows) == 3 * 6 - 2
    assert len(list((store["root"] / "clips").glob("*.npy"))) == len(rows)


def test_gpu_request_on_a_node_without_gpus_is_a_clear_error(cluster):
    r = subprocess.run([sys.executable, "main/submit.py", "slurm/i3d.slurm"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert "asks for --gres=gpu:1, but no node" in r.stderr and "--no-gpu" in r.stderr, r.stderr
    # What plain sbatch says instead, which is why main/submit.py exists.
    raw = subprocess.run(["sbatch", "slurm/i3d.slurm"], cwd=ROOT, capture_output=True, text=True)
    assert raw.returncode != 0 and "generic resource" in raw.stderr


def test_usr1_checkpoints_requeues_and_resumes_the_same_run(cluster, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = SlurmConfig(requeue=True, signal_s=60, time_min=10, cpus_per_task=1, mem_gb=1, venv=sys.prefix)
    job_file = tmp_path / "requeue_test.slurm"
    job_file.write_text(render_sbatch(cfg, f"python tests/slurm_standin_train.py {run_dir}", job_name="requeue_test"))
    job = sbatch(str(job_file))
    deadline = time.monotonic() + 60
    while not (run_dir / "history.csv").exists():  # epoch 1 done: now it waits mid-run
        assert time.monotonic() < deadline, log_of("requeue_test", job)
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    release_requeued(job, until=lambda: (run_dir / "done").exists())
    assert wait_done(job)[job] == "COMPLETED", log_of("requeue_test", job)
    runs = states(job, duplicates=True)[job]
    assert runs[0] == "REQUEUED" and runs[-1] == "COMPLETED", runs
    # The second start resumed from the checkpoint, and the history continues without repeats.
    assert (run_dir / "starts.txt").read_text().split() == ["0", "1"]
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2, 3, 4]
    log = log_of("requeue_test", job)
    assert "got SIGUSR1" in log and "requeueing" in log and "restarts: 1" in log


def test_submitit_sweep_on_slurm_completes_and_status_shows_both(cluster, tmp_path):
    import dataclasses

    from tests.sweep_standin import StandInTask
    from utils.cluster.sweep import plan_sweep, submit_sweep, sweep_status

    results = tmp_path / "results"
    tasks = plan_sweep(["x3d_xs", "movinet_a0", "s3d"], 1, results=str(results), name="tiny", dry_run=True)
    # The third task fails: `status` must say why and where its log is.
    tasks[2] = dataclasses.replace(tasks[2], config={**tasks[2].config, "tags": {"fail": "no store at data/x"}})
    # signal_s well under the time limit: submitit signals signal_delay_s before it.
    cfg = SlurmConfig(cpus_per_task=1, mem_gb=1, signal_s=30)
    sweep, jobs = submit_sweep(tasks, name="tiny", results=results, cluster="slurm", slurm=cfg, timeout_min=5,
                               task_class=StandInTask)  # fmt: skip
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1, "expected one job array"
    summaries = [j.result() for j in jobs[:2]]  # returns because accounting tells submitit the state
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    deadline = time.monotonic() + 60  # the result file can come before accounting records the end
    status = sweep_status(sweep)
    while {s.state for s in status} != {"COMPLETED", "FAILED"} and time.monotonic() < deadline:
        time.sleep(0.5)
        status = sweep_status(sweep)
    assert [(s.model, s.state) for s in status] == [("x3d_xs", "COMPLETED"), ("movinet_a0", "COMPLETED"),
                                                     ("s3d", "FAILED")]  # fmt: skip
    assert [s.top1 for s in status] == [0.5, 0.5, None]
    failed = status[2]
    assert "stand-in failure: no store at data/x" in failed.reason, failed
    assert Path(failed.log).is_file() and failed.log.endswith(f"{failed.job_id}_0_log.err")


# The parts below run the real engines (issues 3, 4) and utils/report.py.
TRAIN = {"movinet_a0": ROOT / "main" / "train_movinet.py", "x3d_xs": ROOT / "main" / "train_x3d.py"}


def test_dry_run_training_jobs_complete(store, tmp_path):
    """One Keras and one PyTorch model, DRY_RUN=1 through the committed job files, side by side."""
    jobs = {}
    for model in sorted(TRAIN):
        args = ["--data", str(store["root"]), "--results", str(tmp_path / model), "--frames", "8", "--size", "64"]
        jobs[model] = sbatch(*SMALL, "--gres=none", "--mem=4G", f"slurm/{model}.slurm", *args, env={"DRY_RUN": "1"})
    for model, job in jobs.items():
        assert wait_done(job, timeout_s=600)[job] == "COMPLETED", log_of(model, job)
        records = list((tmp_path / model).glob("runs/*-dryrun/metrics.json"))
        assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "completed", log_of(model, job)


def test_report_job_completes(cluster, tmp_path):
    from tests.sweep_standin import completed_record
    from utils.cluster.sweep import plan_sweep
    from utils.core.records import write_record

    results = tmp_path / "results"
    for task in plan_sweep(["x3d_xs"], 2, results=str(results)):
        write_record(results / "runs" / task.run_id, completed_record(task.config, 0.5 + task.seed / 10, 3))
    job = sbatch(*SMALL, "slurm/report.slurm", "--results", str(results))
    assert wait_done(job)[job] == "COMPLETED", log_of("report", job)
    assert list((results / "tables").glob("*")), "the report job wrote no tables"


# What the tuning script does first with --distributed: the roles, decided in Python only.
ROLE_PROBE = """
import os, sys
sys.path.insert(0, os.getcwd())
from utils.tuning.distributed import apply_env, resolve_role
role = resolve_role(os.environ, "probe-study")
apply_env(role, "host-of-chief")
print(role.tuner_id, os.environ["KERASTUNER_ORACLE_PORT"], "[" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset") + "]", *sys.argv[1:])
"""


def test_distributed_tuning_array_assigns_chief_and_workers(cluster, tmp_path):
    """The committed chief + workers array; `python` is the real one running the role code of the tuning CLI."""
    from utils.tuning.distributed import default_port

    out = tmp_path / "roles"
    out.mkdir()
    (tmp_path / "probe.py").write_text(ROLE_PROBE)
    venv = tmp_path / "fakevenv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    (venv / "bin" / "python").write_text(
        f'#!/bin/bash\nexec "{sys.executable}" "{tmp_path}/probe.py" "$@" > "{out}/$SLURM_ARRAY_TASK_ID"\n'
    )
    (venv / "bin" / "python").chmod(0o755)
    job = sbatch(
        *SMALL, "--gres=none", "slurm/tune_i3d_distributed.slurm", "--max-trials", "2", env={"SLR_VENV": str(venv)}
    )
    final = wait_done(job, tasks=3, timeout_s=120)
    assert set(final.values()) == {"COMPLETED"}, (final, log_of("tune_i3d_distributed", f"{job}_1"))
    roles = {p.name: p.read_text().split() for p in out.iterdir()}
    port = str(default_port("probe-study"))
    assert roles["0"][:3] == ["chief", port, "[]"], roles
    assert [roles[k][:3] for k in ("1", "2")] == [["tuner1", port, "[unset]"], ["tuner2", port, "[unset]"]], roles
    assert all(r[3] == "main/tune_i3d.py" and "--distributed" in r and r[-2:] == ["--max-trials", "2"]
               for r in roles.values())  # fmt: skip
    log = log_of("tune_i3d_distributed", f"{job}_1")
    assert f"job {job}_1 on" in log, log  # the header names the array task as squeue does


def test_jobs_that_do_not_fit_are_refused_in_one_line_and_fit_on_request(cluster):
    """Issue 18: `sbatch slurm/preprocess_172.slurm` asked 4 CPUs of this 2-CPU node; now one line says what to do."""
    cmd = [sys.executable, "main/submit.py"]
    r = subprocess.run([*cmd, "slurm/preprocess_172.slurm"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "CPUs per node" in r.stderr and "--fit" in r.stderr and "slurm/local.toml" in r.stderr
    # The README's own example, which sbatch refused for CPUs, memory and the GPU: --fit shrinks all three.
    r = subprocess.run([*cmd, "--fit", "slurm/x3d_xs.slurm", "--", "--help"], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "SLR_VENV": sys.prefix})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "fitted with --cpus-per-task=" in r.stdout and "--gres=none" in r.stdout, r.stdout
    job = r.stdout.split()[2]
    assert wait_done(job)[job] == "COMPLETED", log_of("x3d_xs", job)
    assert "usage: main/train_x3d.py" in log_of("x3d_xs", job)


def test_job_submitted_from_elsewhere_finds_the_repo(cluster, tmp_path):
    """sbatch runs a spool copy of the file; from another directory the job still runs in the repo."""
    (tmp_path / "logs").mkdir()
    venv = tmp_path / "fakevenv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    (venv / "bin" / "python").write_text(f'#!/bin/bash\npwd > "{tmp_path}/cwd"\necho "$*" > "{tmp_path}/args"\n')
    (venv / "bin" / "python").chmod(0o755)
    r = subprocess.run(["sbatch", "--parsable", *SMALL, str(ROOT / "slurm" / "report.slurm"), "--format", "md"],
                       cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "SLR_VENV": str(venv)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    assert wait_done(job)[job] == "COMPLETED", (tmp_path / "logs" / f"report-{job}.out").read_text()
    assert (tmp_path / "cwd").read_text().strip() == str(ROOT)
    assert (tmp_path / "args").read_text().split() == ["utils/report.py", "--results", "results", "--format", "md"]


def test_sweep_cli_trains_two_configurations(store, tmp_path):
    """main/sweep.py with the real engine: one array of two dry runs, then `status` with top-1."""
    data = store["root"].parent  # holds wlasl3_64: what --subset 3 --size 64 names
    profile = tmp_path / "profile.toml"
    profile.write_text("[train]\ncpus_per_task = 1\nmem_gb = 4\ntime_min = 10\nsignal_s = 30\n")
    results = tmp_path / "results"
    base = [sys.executable, "main/sweep.py"]
    r = subprocess.run([*base, "--models", "x3d_xs,s3d", "--subset", "3", "--data-root", str(data), "--results",
                        str(results), "--cluster", "slurm", "--no-gpu", "--dry-run", "--frames", "8", "--size", "64",
                        "--profile", str(profile)], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 300
    while True:
        r = subprocess.run([*base, "status", "--results", str(results)], cwd=ROOT, capture_output=True, text=True)
        rows = [line.split() for line in r.stdout.splitlines()[2:]]
        if all(row[3] in TERMINAL for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert [(row[0], row[3]) for row in rows] == [("x3d_xs", "COMPLETED"), ("s3d", "COMPLETED")], r.stdout
    assert all(0.0 <= float(row[4]) <= 1.0 for row in rows), r.stdout
