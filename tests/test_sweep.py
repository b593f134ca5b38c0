"""Sweeps through submitit's local executor, with a stand-in for the training engine."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest
import submitit

from tests.sweep_standin import STEPS, StandInTask
from utils.cluster.sweep import plan_sweep, submit_sweep, sweep_status
from utils.core.records import read_history


def test_plan_is_the_grid_with_stable_run_ids():
    tasks = plan_sweep(["movinet_a0", "x3d_s"], 2, subset=100, name="g")
    assert [(t.model, t.seed) for t in tasks] == [("movinet_a0", 0), ("movinet_a0", 1), ("x3d_s", 0), ("x3d_s", 1)]
    assert tasks[0].run_id == "movinet_a0-wlasl100_172-s0" and tasks[3].config["data"]["root"] == "data/wlasl100_224"
    assert tasks == plan_sweep(["movinet_a0", "x3d_s"], 2, subset=100, name="g")
    with pytest.raises(ValueError, match="unknown model"):
        plan_sweep(["x3d_q"], 1)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_local_sweep_completes_and_a_preempted_task_resumes(tmp_path):
    results = tmp_path / "results"
    tasks = plan_sweep(["x3d_xs", "s3d"], 1, results=str(results), name="t", dry_run=True)
    # The first task steps slowly so it can be signalled mid-run.
    slow = dataclasses.replace(tasks[0], config={**tasks[0].config, "tags": {"sweep": "t", "hold_s": 1.0}})
    sweep, jobs = submit_sweep([slow, tasks[1]], name="t", results=results, cluster="local",
                               timeout_min=5, task_class=StandInTask)  # fmt: skip
    run_dir = results / "runs" / slow.run_id
    for _ in range(400):  # until one step is done, so a resume is visible
        if (run_dir / "history.csv").exists():
            break
        time.sleep(0.05)
    # What a scheduler does before the time limit: submitit's signal to the task process.
    sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
    workers = _children(int(jobs[0].job_id))
    assert workers, "the local job's task process was not found"
    os.kill(workers[0], sig)
    summaries = [j.result() for j in jobs]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    # History continues across the requeue: every step once, in order, and the second start resumed.
    assert [int(r["epoch"]) for r in read_history(run_dir)] == list(range(1, STEPS + 1))
    assert int((run_dir / "started").read_text()) > 0, "the requeued task did not resume from its checkpoint"
    status = sweep_status(sweep)
    assert [(s.model, s.state, s.top1) for s in status] == [("x3d_xs", "COMPLETED", 0.5), ("s3d", "COMPLETED", 0.5)]


def test_status_cli_lists_tasks(tmp_path, capsys):
    from main.sweep import main

    results = tmp_path / "results"
    tasks = plan_sweep(["i3d"], 2, results=str(results), name="c")
    _, jobs = submit_sweep(tasks, name="c", results=results, cluster="local", timeout_min=5, task_class=StandInTask)
    [j.result() for j in jobs]
    assert main(["status", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "sweep c" in out and out.count("COMPLETED") == 2 and "0.6000" in out
