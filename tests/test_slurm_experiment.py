"""Experiments on the real local SLURM cluster (slurm/local_cluster.sh): the chain of jobs, a cancelled
run that the report lists apart, `run` again submitting only what is missing, and a USR1 requeue.

Cheapest settings that still train for real: X3D-XS and S3D, 8 frames at 32 px, one epoch.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_slurm_cluster import ROOT, cluster, release_requeued, states, store, wait_done  # noqa: F401
from utils.core.records import read_history

pytestmark = pytest.mark.slurm

EXPERIMENT = """
name: {name}
results: {root}/results
data_root: {root}/data
profile: slurm/local.toml
cluster:
  train: {{cpus_per_task: 1, mem_gb: 3, time_min: 15, signal_s: 60}}
  preprocess: {{array_size: 2, mem_gb: 1}}
  report: {{mem_gb: 1}}
stores:
  mini3_32:
    synthetic: {{glosses: 3, per_gloss: 6}}
    metadata: {root}/raw/WLASL_v0.3.json
    videos: {root}/raw/videos
    subset: 3
    frames: 8
    size: 32
runs:
  - models: [x3d_xs, s3d]
    store: mini3_32
    seeds: 2
    options: {{epochs: 1, batch_size: 2, workers: 0}}
report:
  formats: [md]
"""


def experiment(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main/experiment.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "SLR_VENV": sys.prefix}, timeout=300)  # fmt: skip


def submitted_jobs(stdout: str) -> dict[str, str]:
    """``{stage: job id}`` from the `submitted <stage>: job <id>` lines of `run`."""
    return dict(re.findall(r"^submitted (\S+): job (\d+)", stdout, flags=re.M))


def summary_rows(results: Path) -> list[tuple[str, str, str]]:
    """(model, n, run ids) of each row of the experiment's table."""
    with (results / "tables" / "summary.csv").open() as f:
        return sorted((row["model"], row["n"], row["run_ids"]) for row in csv.DictReader(f))


def test_experiment_chain_cancel_report_and_run_again(cluster, tmp_path):  # noqa: F811
    """Issue 13: two models x two seeds on the synthetic set; one run cancelled; the report still runs and
    lists it apart; a second `run` submits only that run (and a report); the table then has all four."""
    exp = tmp_path / "e2e.yaml"
    exp.write_text(EXPERIMENT.format(name="e2e", root=tmp_path))
    results = tmp_path / "results"
    r = experiment("run", str(exp))
    assert r.returncode == 0, r.stderr
    jobs = submitted_jobs(r.stdout)
    assert list(jobs) == ["prep-mini3_32", "train-mini3_32", "report"], r.stdout
    runs = json.loads((results / "submitted.json").read_text())["runs"]
    cancelled = "s3d-mini3_32-s1"
    subprocess.run(["scancel", runs[cancelled]], check=True)  # still waiting for its store: cancelled at once
    final = wait_done(jobs["report"], timeout_s=400)
    assert final[jobs["report"]] == "COMPLETED", (results / "logs").glob("*report*")
    prep = wait_done(jobs["prep-mini3_32"], tasks=2)
    assert set(prep.values()) == {"COMPLETED"}, prep

    status = experiment("status", str(exp))
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line.split()[:1] and line.split()[0] in runs}
    assert {k: v[1] for k, v in lines.items()} == {"x3d_xs-mini3_32-s0": "completed", "x3d_xs-mini3_32-s1": "completed",
                                                   "s3d-mini3_32-s0": "completed", cancelled: "failed"}, status.stdout  # fmt: skip
    assert "why: CANCELLED" in status.stdout and "report: completed" in status.stdout, status.stdout
    log = next((results / "logs").glob(f"e2e-report-{jobs['report']}.out")).read_text()
    assert "1 of 4 planned runs did not complete" in log and f"{cancelled}: failed (CANCELLED" in log, log
    assert [row[:2] for row in summary_rows(results)] == [("s3d", "1"), ("x3d_xs", "2")]

    again = experiment("run", str(exp))
    assert again.returncode == 0, again.stderr
    jobs2 = submitted_jobs(again.stdout)
    assert list(jobs2) == ["train-mini3_32", "report"], again.stdout
    assert "--array=3 " in again.stdout or "(--array=3)" in again.stdout, again.stdout
    assert wait_done(jobs2["report"], timeout_s=300)[jobs2["report"]] == "COMPLETED"
    rows = summary_rows(results)  # exactly the four planned runs
    assert [row[:2] for row in rows] == [("s3d", "2"), ("x3d_xs", "2")], rows
    assert sorted(" ".join(row[2] for row in rows).split()) == sorted(runs), rows
    with (results / "tables" / "incomplete_runs.csv").open() as f:
        assert list(csv.DictReader(f)) == []
    third = experiment("run", str(exp))
    assert third.returncode == 0 and submitted_jobs(third.stdout) == {}, third.stdout


def test_experiment_run_requeued_with_usr1_resumes(store, tmp_path):  # noqa: F811
    """Issue 13: a training task of an experiment gets USR1, checkpoints, requeues itself and resumes its run."""
    exp = tmp_path / "usr1.yaml"
    text = EXPERIMENT.format(name="usr1", root=tmp_path).replace("seeds: 2", "seeds: 1")
    text = text.replace("models: [x3d_xs, s3d]", "models: [x3d_xs]").replace("epochs: 1", "epochs: 3")
    exp.write_text(text)
    # The store the session already prepared (8 frames, 64 px): finished, so no preprocessing job.
    sets = ["--set", f"stores.mini3_32.out={store['root']}", "--set", "stores.mini3_32.size=64", "--set",
            "runs.0.options.size=32"]  # fmt: skip
    r = experiment("run", str(exp), *sets)
    assert r.returncode == 0, r.stderr
    jobs = submitted_jobs(r.stdout)
    assert list(jobs) == ["train-mini3_32", "report"], r.stdout
    task = f"{jobs['train-mini3_32']}_0"
    run_dir = tmp_path / "results" / "runs" / "x3d_xs-wlasl3_64-s0"
    deadline = time.monotonic() + 300
    while not (run_dir / "history.csv").exists() or not read_history(run_dir):
        assert time.monotonic() < deadline, "the first epoch did not finish"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", task], check=True)
    seen: list[str] = []

    def look_once_while_held() -> bool:  # `status` once, while SLURM holds the requeued task
        if not seen and states(task).get(task, [""])[-1] == "PENDING":
            out = experiment("status", str(exp), *sets).stdout
            seen.extend(line for line in out.splitlines() if "x3d_xs-wlasl3_64-s0" in line)
        return False

    release_requeued(task, until=look_once_while_held, timeout_s=120)
    assert wait_done(jobs["report"], timeout_s=400)[jobs["report"]] == "COMPLETED"
    assert states(task, duplicates=True)[task][0] == "REQUEUED"
    assert any(" requeued " in line for line in seen), seen
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2, 3]  # no epoch twice across the requeue
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    log = next((tmp_path / "results" / "logs").glob(f"usr1-train-mini3_32-{jobs['train-mini3_32']}_0.out")).read_text()
    assert f"job {task} on" in log and "got SIGUSR1" in log and f"requeueing {task}" in log, log
