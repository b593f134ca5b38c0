"""The job files, main/job.py and sweeps on a real single-node SLURM cluster (slurm/local_cluster.sh).

Needs root on Debian/Ubuntu (the script installs and starts munge, MariaDB,
slurmdbd, slurmctld, slurmd). Elsewhere these tests skip, saying why; with
SLR_REQUIRE_SLURM=1 (CI) that skip is a failure instead. The cluster is started
once per session and left running when it was already up before.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils.cluster.profile import SlurmConfig
from utils.cluster.render import render_job
from utils.core.records import RunRecord, read_history, read_record, write_record
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
    """Start the local cluster once; stop it at the end only if this session started it.

    One start for every SLURM test file: the single node of partition ``debug`` these tests use, and the
    two namespaced nodes of ``--nodes 2`` (partition ``multi``) that tests/test_slurm_multinode.py uses.
    """
    reason = _cannot_run_slurm()
    if reason:
        if os.environ.get("SLR_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLR_REQUIRE_SLURM=1 but this machine cannot run SLURM: {reason}")
        pytest.skip(f"no local SLURM: {reason} (set SLR_REQUIRE_SLURM=1 to make this a failure)")
    _claim_for_this_worker(tmp_path_factory)
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(SCRIPT), "start", "--nodes", "2"], capture_output=True, text=True, timeout=600)
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
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    # Every problem at once, and fixes that exist (issue 23).
    assert "--gres=gpu:1, but no node has gpu" in r.stderr and "CPUs per node" in r.stderr, r.stderr
    assert "main/submit.py --fit slurm/i3d.slurm" in r.stderr and "sbatch slurm/local/i3d.slurm" in r.stderr
    assert (ROOT / "slurm" / "local" / "i3d.slurm").is_file()
    # What plain sbatch says instead, which is why main/submit.py exists.
    raw = subprocess.run(["sbatch", "slurm/i3d.slurm"], cwd=ROOT, capture_output=True, text=True)
    assert raw.returncode != 0 and "generic resource" in raw.stderr


def standin_job(tmp_path: Path, run_dir: Path, name: str) -> Path:
    cfg = SlurmConfig(requeue=True, signal_s=60, time_min=10, cpus_per_task=1, mem_gb=1, venv=sys.prefix)
    job_file = tmp_path / f"{name}.slurm"
    job_file.write_text(render_job(cfg, ["python", "tests/slurm_standin_train.py", str(run_dir)], job_name=name,
                                   description="stand-in", source="test", root=str(ROOT)))  # fmt: skip
    return job_file


def test_usr1_checkpoints_requeues_and_resumes_the_same_run(cluster, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job = sbatch(str(standin_job(tmp_path, run_dir, "requeue_test")))
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
    assert "got SIGUSR1" in log and f"requeued {job}" in log and "restarts: 1" in log


def test_a_plain_scancel_ends_a_training_run_as_cancelled_with_its_checkpoint(store, tmp_path):
    """Issue 23: a plain `scancel` of a running training job requeued it; it must end the run as cancelled."""
    results = tmp_path / "results"
    args = ["--data", str(store["root"]), "--results", str(results), "--frames", "8", "--epochs", "40",
            "--batch-size", "2", "--workers", "0"]  # fmt: skip
    job = sbatch(*SMALL, "--mem=3G", "slurm/local/x3d_xs.slurm", *args)
    run_dir = results / "runs" / "x3d_xs-wlasl3_64-s0"
    deadline = time.monotonic() + 300
    while not read_history(run_dir):  # an epoch done: it trains
        assert time.monotonic() < deadline, log_of("x3d_xs", job)
        time.sleep(0.5)
    subprocess.run(["scancel", job], check=True)
    assert wait_done(job)[job] == "CANCELLED", log_of("x3d_xs", job)
    time.sleep(3)  # SLURM would requeue within seconds if it was going to
    assert states(job, duplicates=True)[job] == ["CANCELLED"], "the cancelled job came back"
    record = read_record(run_dir / "metrics.json")
    assert record.status == "cancelled" and "the checkpoint is kept" in record.error, (record.status, record.error)
    assert (run_dir / "checkpoints" / "state.json").is_file()
    assert "cancelled: cancelled at epoch" in log_of("x3d_xs", job)
    # A later run of the same command resumes from that checkpoint.
    again = subprocess.run(["bash", "slurm/local/x3d_xs.slurm", *args[:-6], "--epochs", str(record.epochs + 1),
                            "--batch-size", "2", "--workers", "0"], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "SLR_VENV": sys.prefix}, timeout=600)  # fmt: skip
    assert again.returncode == 0 and f"resuming x3d_xs-wlasl3_64-s0 from epoch {record.epochs + 1}" in again.stdout, again


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


def completed_record(run_id: str, model: str, seed: int, top1: float, store: str = "data/wlasl100_224") -> RunRecord:
    split = {"loss": 1.0, "top1": top1, "top2": top1, "top5": 1.0, "per_class_top1": top1, "n": 4}
    config = {"model": {"name": model}, "data": {"root": store}, "train": {"seed": seed}}
    return RunRecord(run_id=run_id, model=model, framework="torch", config=config, epochs=1,
                     best={"epoch": 1, "val_top1": top1}, metrics={"val": split, "test": split}, status="completed")  # fmt: skip


def test_report_job_completes(cluster, tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        rid = f"x3d_xs-wlasl100_224-s{seed}"
        write_record(results / "runs" / rid, completed_record(rid, "x3d_xs", seed, 0.5 + seed / 10))
    job = sbatch(*SMALL, "slurm/report.slurm", "--results", str(results))
    assert wait_done(job)[job] == "COMPLETED", log_of("report", job)
    assert list((results / "tables").glob("*")), "the report job wrote no tables"


def test_an_array_of_a_training_job_trains_one_seed_per_task_in_one_row(store, tmp_path):
    """Issue 23: `sbatch --array=0-2 slurm/x3d_xs.slurm` trains seeds 0-2, the usual way to mean ± std."""
    results = tmp_path / "results"
    job = sbatch(*SMALL, "--mem=3G", "--array=0-2", "slurm/local/x3d_xs.slurm", "--data", str(store["root"]),
                 "--results", str(results), "--frames", "8", "--batch-size", "2", "--workers", "0", "--dry-run")  # fmt: skip
    final = wait_done(job, tasks=3, timeout_s=600)
    assert set(final.values()) == {"COMPLETED"}, (final, log_of("x3d_xs", f"{job}_0"))
    assert sorted(p.name for p in (results / "runs").iterdir()) == [f"x3d_xs-wlasl3_64-s{i}-dryrun" for i in range(3)]
    r = subprocess.run([sys.executable, "utils/report.py", "--results", str(results), "--no-plots", "--format", "csv",
                        "--include-dry-runs"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert [(row["model"], row["n"]) for row in rows] == [("x3d_xs", "3")], r.stdout


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
    assert "CPUs per node" in r.stderr and "--fit" in r.stderr and "sbatch slurm/local/preprocess_172.slurm" in r.stderr
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
    """main/sweep.py with the real engine: one array of two dry runs, the profile the cluster fits (said), then
    `status` with top-1 (a sweep is an experiment with runs only)."""
    data = store["root"].parent  # holds wlasl3_64: what --subset 3 --size 64 names
    results = tmp_path / "results"
    base = [sys.executable, "main/sweep.py"]
    r = subprocess.run([*base, "--models", "x3d_xs,s3d", "--subset", "3", "--data-root", str(data), "--results",
                        str(results), "--dry-run", "--frames", "8", "--size", "64", "--mem", "3", "--timeout-min", "10",
                        "--name", "two"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "SLR_VENV": sys.prefix})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "using slurm/local.toml" in r.stdout, r.stdout  # the committed profile asks for a GPU this node lacks
    jobs = re.findall(r"^submitted train\S+: job (\d+)", r.stdout, flags=re.M)
    report = re.findall(r"^submitted report: job (\d+)", r.stdout, flags=re.M)
    assert len(jobs) == 1 and report, r.stdout
    assert wait_done(report[0], timeout_s=600)[report[0]] == "COMPLETED"
    r = subprocess.run([*base, "status", "--results", str(results)], cwd=ROOT, capture_output=True, text=True)
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if "-dryrun" in line}
    assert {k: v[1] for k, v in rows.items()} == {"x3d_xs-wlasl3_64-s0-dryrun": "completed",
                                                  "s3d-wlasl3_64-s0-dryrun": "completed"}, r.stdout  # fmt: skip
    assert all(0.0 <= float(v[2]) <= 1.0 for v in rows.values()), r.stdout
