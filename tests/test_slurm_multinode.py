"""Jobs across the two namespaced nodes of `slurm/local_cluster.sh start --nodes 2` (issue 28).

Each node is a slurmd in its own network and UTS namespace (slr-n1 at
10.77.0.11, slr-n2 at 10.77.0.12, a bridge between them); the job files are
the committed ones of slurm/local_multi/ (slurm/local_multi.toml: one task
per node). The cluster is the one of tests/test_slurm_cluster.py, started
once for every SLURM test file.

Equal runs: a run over two nodes trains the run of one process with the whole
batch (models/policy.py), so its record is the one-process run's record, up
to float summation order (the all-reduce adds two partial sums where one
process adds one; BatchNorm pools two sets of statistics). Measured on this
suite's tiny runs the two stay within 3e-4 of each other in every loss
(docs/multi_node.md); TOL = 1e-2 leaves a wide margin for other CPUs and
thread counts, while a broken split (BatchNorm over half the batch, a wrong
shard, an unaveraged gradient) moves these losses by more than that. Dropout
is 0: each process draws its own masks, which no tolerance covers.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_slurm_cluster import ROOT, TERMINAL, cluster, log_of, release_requeued, states, wait_done  # noqa: F401
from utils.core.records import read_history, read_record
from wlasl.prepare import PrepareConfig, run_prepare
from wlasl.synthetic import make_synthetic

pytestmark = pytest.mark.slurm

MULTI = "slurm/local_multi"
NODES = ("slr-n1", "slr-n2")
TOL = 1e-2
# The killed-node case: the job must reach a final state this soon after one of its tasks is killed.
KILLED_TIMEOUT_S = 60
# Tiny runs: 10 training clips of 4 frames at 32 px, 3 classes; --batch-size is the global batch (2 per node).
TINY = ["--frames", "4", "--size", "32", "--batch-size", "4", "--workers", "0", "--dropout", "0", "--optimizer", "sgd", "--lr", "0.05",
        "--no-tensorboard"]  # fmt: skip


@pytest.fixture(scope="module")
def store(cluster, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("multinode")
    raw = make_synthetic(root / "raw", glosses=3, per_gloss=8, seed=0)
    out = root / "wlasl3_32"
    run_prepare(PrepareConfig(metadata=raw["metadata"], videos=raw["videos"], out=out, frames=4, size=32), progress=False)
    return out


def sbatch(job_file: str, *args: str) -> str:
    r = subprocess.run(["sbatch", "--parsable", job_file, *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "SLR_VENV": sys.prefix})  # fmt: skip
    assert r.returncode == 0, f"sbatch {job_file} failed: {r.stderr}"
    return r.stdout.strip().split(";")[0]


def one_process(script: str, *args: str) -> subprocess.Popen:
    """The reference run: one process, here, outside SLURM (it runs while the cluster job does).

    One thread unless OMP_NUM_THREADS says otherwise: two threads sharing the cores with the cluster job
    (and CI's other worker) wait on each other at every operation, several times slower.
    """
    env = {"OMP_NUM_THREADS": "1", **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}}
    return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def wait_for(what: str, until, job: str, timeout_s: float = 300) -> None:
    """Poll ``until`` while the job runs; fail at once when it ended without it."""
    deadline = time.monotonic() + timeout_s
    while not until():
        state = states(job).get(job, [""])[-1]
        assert state not in TERMINAL and time.monotonic() < deadline, f"no {what} (job {state}):\n{log_of('x3d_xs', job)}"
        time.sleep(0.2)


def nodes_of(job: str) -> str:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "NodeList"], capture_output=True, text=True).stdout
    return out.split()[-1] if out.split() else ""


def assert_same_run(one: Path, two: Path) -> dict:
    """The two-node run's record is the one-process run's; returns the largest differences."""
    a, b = read_record(one / "metrics.json"), read_record(two / "metrics.json")
    assert (b.status, b.run_id, b.epochs, b.best["epoch"]) == (a.status, a.run_id, a.epochs, a.best["epoch"]) == (
        "completed", a.run_id, a.epochs, a.best["epoch"])  # fmt: skip
    differs = {k for k in a.config.keys() | b.config.keys() if a.config.get(k) != b.config.get(k)}
    assert differs == {"results"}, differs  # only where each was told to write
    assert b.env["host"] == NODES[0], b.env  # written by rank 0, on the first node
    ha, hb = read_history(one), read_history(two)
    assert [r["epoch"] for r in hb] == [r["epoch"] for r in ha], "an epoch missing or written twice"
    diffs = {
        "train_loss": max(abs(float(x["train_loss"]) - float(y["train_loss"])) for x, y in zip(ha, hb)),
        "val_loss": max(abs(float(x["val_loss"]) - float(y["val_loss"])) for x, y in zip(ha, hb)),
        "test_loss": abs(a.metrics["test"]["loss"] - b.metrics["test"]["loss"]),
    }
    for split in ("val", "test"):
        sa, sb = np.load(one / f"scores_{split}.npz"), np.load(two / f"scores_{split}.npz")
        assert list(sa["video_id"]) == list(sb["video_id"])
        pa, pb = (np.exp(s["logits"]) / np.exp(s["logits"]).sum(1, keepdims=True) for s in (sa, sb))
        diffs[f"{split}_probabilities"] = float(np.abs(pa - pb).max())
    assert max(diffs.values()) <= TOL, diffs
    return diffs


def test_ddp_across_two_nodes_equals_one_process_through_a_requeue_and_a_killed_task(store, tmp_path):
    """x3d_xs over gloo on slr-n1 + slr-n2: USR1 requeues it, a killed task on slr-n2 fails it within
    KILLED_TIMEOUT_S, the same sbatch resumes it, and the result is the one-process run's."""
    # lr 0.01, not TINY's 0.05: at 0.05 this run turns chaotic by epoch 4 (its loss doubles), and chaos grows any
    # float difference (a thread count) until the runs part by more than TOL.
    args = ["--variant", "xs", "--data", str(store), *TINY, "--lr", "0.01", "--epochs", "5"]
    ref = one_process("main/train_x3d.py", *args, "--results", str(tmp_path / "one"))
    two = tmp_path / "two"
    job = sbatch(f"{MULTI}/x3d_xs.slurm", *args, "--results", str(two))
    run = two / "runs" / "x3d_xs-wlasl3_32-s0"
    wait_for("first epoch", lambda: len(read_history(run)) >= 1, job)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    release_requeued(job, until=lambda: len(read_history(run)) >= 3)
    wait_for("third epoch after the requeue", lambda: len(read_history(run)) >= 3, job)
    assert nodes_of(job) == "slr-n[1-2]"
    log = log_of("x3d_xs", job)
    assert f"requeued {job}" in log and "resuming x3d_xs-wlasl3_32-s0 from epoch" in log, log

    # The task of the second node dies (kill -9, as the OOM killer would): the step, then the job, must end.
    victims = [pid for pid in subprocess.run(["ip", "netns", "pids", NODES[1]], capture_output=True, text=True).stdout.split()
               if "main/train_x3d.py" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]  # fmt: skip
    assert len(victims) == 1, (victims, log_of("x3d_xs", job))
    os.kill(int(victims[0]), signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_done(job, timeout_s=KILLED_TIMEOUT_S)[job] == "FAILED", log_of("x3d_xs", job)
    ended_s = time.monotonic() - killed_at
    done = len(read_history(run))
    assert done < 5, "the run finished before the task was killed: nothing was tested"

    rerun = sbatch(f"{MULTI}/x3d_xs.slurm", *args, "--results", str(two))
    assert wait_done(rerun, timeout_s=300)[rerun] == "COMPLETED", log_of("x3d_xs", rerun)
    assert f"resuming x3d_xs-wlasl3_32-s0 from epoch {done + 1}" in log_of("x3d_xs", rerun), log_of("x3d_xs", rerun)
    finished(ref)
    diffs = assert_same_run(tmp_path / "one" / "runs" / "x3d_xs-wlasl3_32-s0", run)
    print(f"killed task: job ended {ended_s:.1f} s later; differences from one process: {diffs}")


def test_multiworker_across_two_nodes_equals_one_process(store, tmp_path):
    """cnn2d under MultiWorkerMirroredStrategy on slr-n1 + slr-n2 against one process.

    --freeze 16 keeps the last 2 of MobileNetV2's 18 blocks training, their
    BatchNorm layers over both nodes: the whole network trained would add its
    backward graph and a collective per BatchNorm layer to trace and run
    (epoch 1 took 144 s against 30-60 s on this busy 2-core machine);
    tests/test_global_batchnorm.py checks the BatchNorm arithmetic itself.
    """
    args = ["--data", str(store), *TINY, "--epochs", "2", "--freeze", "16"]
    ref = one_process("main/train_cnn2d.py", *args, "--results", str(tmp_path / "one"))
    job = sbatch(f"{MULTI}/cnn2d.slurm", *args, "--results", str(tmp_path / "two"))
    assert wait_done(job, timeout_s=600)[job] == "COMPLETED", log_of("cnn2d", job)
    assert nodes_of(job) == "slr-n[1-2]"
    finished(ref)
    run = "runs/cnn2d-wlasl3_32-s0"
    assert read_record(tmp_path / "two" / run / "metrics.json").env["replicas"] == 2
    diffs = assert_same_run(tmp_path / "one" / run, tmp_path / "two" / run)
    print(f"differences from one process: {diffs}")


def test_distributed_tuning_study_with_the_chief_and_the_worker_on_two_nodes(store, tmp_path):
    results, space = tmp_path / "results", tmp_path / "space.yaml"
    space.write_text("batch_size: 4\n")  # the global batch of 10 training clips (the family's space tries 8 and 16)
    job = sbatch(f"{MULTI}/tune_x3d_distributed.slurm", "--tuner", "bayesian", "--variant", "xs", "--max-trials", "2",
                 "--max-epochs", "1", "--space", str(space), "--data", str(store), "--results", str(results), *TINY)  # fmt: skip
    final = wait_done(job, tasks=2, timeout_s=600)
    assert set(final.values()) == {"COMPLETED"}, (final, log_of("tune_x3d_distributed", f"{job}_0"),
                                                  log_of("tune_x3d_distributed", f"{job}_1"))  # fmt: skip
    node = {task: nodes_of(f"{job}_{task}") for task in (0, 1)}
    assert sorted(node.values()) == list(NODES), node  # the chief on one node, the worker on the other
    study = results / "tuning" / "x3d_xs-bayesian-wlasl3_32"
    assert json.loads((study / "chief_address.json").read_text())["host"] == node[0]
    records = [read_record(p) for p in sorted(study.glob("runs/*/metrics.json"))]
    assert len(records) == 2 and {r.status for r in records} == {"completed"}, [(r.run_id, r.status) for r in records]
    assert {r.env["host"] for r in records} == {node[1]}  # the worker trained them
    best = json.loads((study / "best.json").read_text())["trial"]
    assert best in {r.tags["trial"] for r in records}
    r = subprocess.run([sys.executable, "utils/report.py", "--results", str(results), "--no-plots", "--format", "csv"],
                       cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert [row["model"] for row in rows] == ["x3d_xs"], r.stdout + r.stderr
