"""Experiments on the real local SLURM cluster (slurm/local_cluster.sh): the chain of jobs, a cancelled
run that the report lists apart, `run` again submitting only what is missing, a USR1 requeue, a failed store
stage (status says so with its log; `run` again resubmits it and what depends on it), and the dependencies of
tuning, ensemble and export steps.

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
    runs = {k: v for k, v in json.loads((results / "submitted.json").read_text())["jobs"].items() if k.startswith("run:")}
    cancelled = "s3d-mini3_32-s1"
    subprocess.run(["scancel", runs[f"run:{cancelled}"]], check=True)  # still waiting for its store: cancelled at once
    final = wait_done(jobs["report"], timeout_s=400)
    assert final[jobs["report"]] == "COMPLETED", (results / "logs").glob("*report*")
    prep = wait_done(jobs["prep-mini3_32"], tasks=2)
    assert set(prep.values()) == {"COMPLETED"}, prep

    status = experiment("status", str(exp))
    assert status.returncode == 0, status.stderr
    ids = [k.removeprefix("run:") for k in runs]
    lines = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line.split()[:1] and line.split()[0] in ids}
    # Cancelled while it waited: SLURM may keep its state (cancelled) or forget the task (failed: "CANCELLED or lost").
    assert lines.pop(cancelled)[1] in ("cancelled", "failed"), status.stdout
    assert {k: v[1] for k, v in lines.items()} == {"x3d_xs-mini3_32-s0": "completed", "x3d_xs-mini3_32-s1": "completed",
                                                   "s3d-mini3_32-s0": "completed"}, status.stdout  # fmt: skip
    assert "why: CANCELLED" in status.stdout and "report: completed" in status.stdout, status.stdout
    log = next((results / "logs").glob(f"e2e-report-{jobs['report']}.out")).read_text()
    assert "1 of 5 planned tasks did not complete" in log and re.search(rf"run:{cancelled}: \w+ \(CANCELLED", log), log
    assert [row[:2] for row in summary_rows(results)] == [("s3d", "1"), ("x3d_xs", "2")]

    again = experiment("run", str(exp))
    assert again.returncode == 0, again.stderr
    jobs2 = submitted_jobs(again.stdout)
    assert list(jobs2) == ["train-mini3_32", "report"], again.stdout
    assert "--array=3 " in again.stdout or "(--array=3)" in again.stdout, again.stdout
    assert wait_done(jobs2["report"], timeout_s=300)[jobs2["report"]] == "COMPLETED"
    rows = summary_rows(results)  # exactly the four planned runs
    assert [row[:2] for row in rows] == [("s3d", "2"), ("x3d_xs", "2")], rows
    assert sorted(" ".join(row[2] for row in rows).split()) == sorted(ids), rows
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
    assert f"job {task} on" in log and "got SIGUSR1" in log and f"requeued {task}" in log, log


STRICT = EXPERIMENT.replace("    subset: 3\n", "    subset: 3\n    strict: true\n").replace("seeds: 2", "seeds: 1").replace(
    "models: [x3d_xs, s3d]", "models: [x3d_xs]")


def test_a_failed_store_shows_failed_with_its_log_and_run_resubmits_it_and_its_dependants(cluster, tmp_path):  # noqa: F811
    """Issue 23: with `strict: true` the preprocessing job fails (the synthetic set lacks a video); the training
    array waited forever and `status` said "completed". Now: the training job is cancelled by SLURM, the report
    still runs, status shows the store failed with its log, and `run` again submits the store and its run."""
    exp = tmp_path / "strict.yaml"
    exp.write_text(STRICT.format(name="strict", root=tmp_path))
    r = experiment("run", str(exp))
    assert r.returncode == 0, r.stderr
    jobs = submitted_jobs(r.stdout)
    assert list(jobs) == ["prep-mini3_32", "train-mini3_32", "report"], r.stdout
    assert wait_done(jobs["report"], timeout_s=300)[jobs["report"]] == "COMPLETED"
    # --kill-on-invalid-dep: SLURM cancelled the training array (never started: sacct lists it as 45_[0]).
    assert {s[-1] for s in states(jobs["train-mini3_32"]).values()} == {"CANCELLED"}
    status = experiment("status", str(exp)).stdout
    line = next(line for line in status.splitlines() if line.strip().startswith("mini3_32"))
    assert line.split()[1] == "failed", status
    log = re.search(r"log: (\S+strict-prep-mini3_32-\S+\.out)", status)
    assert log and Path(log.group(1)).is_file() and "--strict" in Path(log.group(1)).read_text(), status
    assert "x3d_xs-mini3_32-s0" in status and "why: CANCELLED" in status, status
    again = experiment("run", str(exp))
    assert again.returncode == 0, again.stderr
    assert list(submitted_jobs(again.stdout)) == ["prep-mini3_32", "train-mini3_32", "report"], again.stdout
    assert "--dependency=afterok:" + submitted_jobs(again.stdout)["prep-mini3_32"] in again.stdout
    subprocess.run(["scancel", *submitted_jobs(again.stdout).values()], check=True)


def test_tuning_ensembles_and_exports_wait_for_what_they_need(cluster, tmp_path):  # noqa: F811
    """The new step kinds on SLURM: the study after its store (afterok), the ensemble and the export after the
    training array (afterany), the report after all of them; checked in SLURM's own view, then cancelled."""
    exp = tmp_path / "kinds.yaml"
    exp.write_text(EXPERIMENT.format(name="kinds", root=tmp_path) + (
        "tuning:\n  - {model: x3d_xs, store: mini3_32, tuner: bayesian, max_trials: 2, max_epochs: 1}\n"
        "ensembles:\n  - {name: pair, members: [{model: x3d_xs, store: mini3_32}, {model: s3d, store: mini3_32}]}\n"
        f"exports:\n  - {{name: onnx, run: {{model: x3d_xs, store: mini3_32}}, format: onnx, predict: {tmp_path}/raw/videos/90001.mp4}}\n"
    ).replace("cluster:\n", "cluster:\n  tune: {mem_gb: 1, cpus_per_task: 1}\n  export: {mem_gb: 1, cpus_per_task: 1}\n"))
    r = experiment("run", str(exp))
    assert r.returncode == 0, r.stderr
    jobs = submitted_jobs(r.stdout)
    try:
        assert list(jobs) == ["prep-mini3_32", "train-mini3_32", "tune-x3d_xs-bayesian-mini3_32", "ensemble-pair",
                              "export-onnx", "report"], r.stdout  # fmt: skip

        def dependency(job: str) -> str:
            out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
            return re.search(r"Dependency=(\S+)", out).group(1)

        prep, train = jobs["prep-mini3_32"], jobs["train-mini3_32"]
        assert dependency(jobs["tune-x3d_xs-bayesian-mini3_32"]).startswith(f"afterok:{prep}")
        assert dependency(jobs["ensemble-pair"]).startswith(f"afterany:{train}")
        assert dependency(jobs["export-onnx"]).startswith(f"afterany:{train}")
        report = dependency(jobs["report"])
        assert all(jobs[k] in report for k in jobs if k not in ("prep-mini3_32", "report")), report
    finally:
        subprocess.run(["scancel", *jobs.values()], check=True)
