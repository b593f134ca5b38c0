"""Sweeps are experiments with runs only: the grid, its run ids (the one rule), a local sweep and its status,
and the status of a sweep an older version submitted with submitit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.experiment import make_plan, sweep_experiment

ROOT = Path(__file__).resolve().parents[1]


def test_the_grid_has_stable_run_ids_from_the_one_rule(tmp_path):
    def plan():
        return make_plan(sweep_experiment(["movinet_a0", "x3d_s"], 2, name="g", results=str(tmp_path)))

    first = plan()
    assert [(v["model"], v["seed"]) for v in first.runs.values()] == [("movinet_a0", 0), ("movinet_a0", 1),
                                                                       ("x3d_s", 0), ("x3d_s", 1)]  # fmt: skip
    assert list(first.runs)[0] == "movinet_a0-wlasl100_172-s0" and first.outputs["store:s1_wlasl100_224"] == "data/wlasl100_224"
    assert first.exp.results == f"{tmp_path}/sweeps/g" and list(first.runs) == list(plan().runs)
    # A distilled student trains under its -kd id; the sweep looks it up under the same one (issue 25).
    kd = make_plan(sweep_experiment(["x3d_xs"], 1, name="kd", results=str(tmp_path), options={"teacher": "runs/t"}))
    assert list(kd.runs) == ["x3d_xs-wlasl100_224-s0-kd"]
    with pytest.raises(ValueError, match="unknown model"):
        sweep_experiment(["x3d_q"], 1, name="q", results=str(tmp_path))
    with pytest.raises(ValueError, match="is not a safe file name"):
        sweep_experiment(["x3d_xs"], 1, name="../q", results=str(tmp_path))


@pytest.mark.slow
def test_a_local_sweep_trains_and_status_shows_top1(tiny_store, tmp_path, capsys, monkeypatch):
    from main.sweep import main

    monkeypatch.chdir(ROOT)
    results = tmp_path / "results"
    argv = ["--models", "x3d_xs", "--seeds", "2", "--store", str(tiny_store), "--results", str(results), "--cluster",
            "local", "--dry-run", "--batch-size", "2", "--frames", "8", "--name", "tiny"]  # fmt: skip
    assert main(argv) == 0
    runs = sorted(p.name for p in (results / "sweeps" / "tiny" / "runs").iterdir())
    assert runs == ["x3d_xs-mini3_32-s0-dryrun", "x3d_xs-mini3_32-s1-dryrun"]
    capsys.readouterr()
    assert main(["status", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "experiment tiny" in out and out.count("completed") >= 2 and "2 completed" in out, out
    assert main(argv) == 0 and "done; skipped" in capsys.readouterr().out  # run again: nothing twice


def test_the_status_of_a_sweep_from_an_older_version_says_where_its_runs_are(tmp_path, capsys):
    from main.sweep import main

    old = tmp_path / "results" / "sweeps" / "old"
    old.mkdir(parents=True)
    (old / "sweep.json").write_text(json.dumps({"name": "old", "cluster": "slurm", "tasks": []}))
    assert main(["status", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "sweep old: submitted by an older version (submitit)" in out and "utils/report.py --results" in out
