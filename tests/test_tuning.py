"""Tuning mechanics with a stand-in engine (tests/_tuning_fake.py): oracles,
promotion from the parent checkpoint, resume after a kill, failed trials,
preemption, best values, --final, and chief + two workers.

The real engines are exercised in tests/test_tuning_engines.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests._ports import free_port
from tests._tuning_fake import FAMILY, fake_run, trained
from utils.core.config import config_from_dict, load_preset
from utils.core.records import read_history, read_record

FAKE = Path(__file__).with_name("_tuning_fake.py")


def _tune(argv: list[str]) -> int:
    from utils.tuning.cli import main

    return main(FAMILY, argv, train_fn=fake_run)


def _records(study_root: Path) -> dict:
    """trial id -> run record, read from disk."""
    out = {}
    for path in sorted((study_root / "runs").glob("*/metrics.json")):
        record = read_record(path)
        out[record.tags["trial"]] = record
    return out


@pytest.fixture()
def env(tmp_path, monkeypatch, tiny_store):
    log = tmp_path / "fake.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return {"store": str(tiny_store), "results": tmp_path / "results", "log": log}


def _argv(env, tuner, *extra) -> list[str]:
    return ["--tuner", tuner, "--data", env["store"], "--results", str(env["results"]), "--max-epochs", "2", *extra]


def test_bayesian_picks_the_best_run_record_and_saves_a_preset(env, capsys):
    assert _tune(_argv(env, "bayesian", "--max-trials", "4")) == 0
    root = env["results"] / "tuning" / f"{FAMILY}-bayesian-{Path(env['store']).name}"
    records = _records(root)
    assert len(records) == 4
    for record in records.values():
        assert record.status == "completed" and record.epochs == 2
        assert record.tags["study"] == root.name and record.config["train"]["epochs"] == 2
    best_trial = max(records, key=lambda t: records[t].best["val_top1"])
    best = json.loads((root / "best.json").read_text())
    assert best["trial"] == best_trial
    assert best["objective"]["value"] == pytest.approx(records[best_trial].best["val_top1"])
    config = records[best_trial].config
    assert best["hyperparameters"]["lr"] == pytest.approx(config["train"]["lr"])
    assert best["hyperparameters"]["optimizer"] == config["train"]["optimizer"]
    out = capsys.readouterr().out
    assert f"Best trial {best_trial}" in out and "hyperparameter" in out and "optimizer" in out
    # best.yaml is a training preset: it loads into a RunConfig with the best values.
    preset = load_preset(root / "best.yaml")
    cfg = config_from_dict({**preset, "model": {**preset["model"], "name": FAMILY}, "data": {**preset["data"], "root": "d"}})
    assert cfg.train.lr == pytest.approx(config["train"]["lr"]) and cfg.data.batch_size == config["data"]["batch_size"]
    # Every epoch of every trial trained exactly once.
    assert max(Counter(trained(env["log"])).values()) == 1


def test_hyperband_promotion_resumes_from_the_parent_checkpoint(env):
    # max 2 epochs, factor 2: bracket 1 = two 1-epoch trials, then the better one promoted to 2 epochs.
    assert _tune(_argv(env, "hyperband", "--factor", "2", "--max-trials", "3")) == 0
    records = _records(env["results"] / "tuning" / f"{FAMILY}-hyperband-{Path(env['store']).name}")
    children = [r for r in records.values() if "parent_trial" in r.tags]
    assert len(records) == 3 and len(children) == 1
    child = children[0]
    parent = records[child.tags["parent_trial"]]
    assert parent.epochs == 1 and child.epochs == 2
    assert parent.best["val_top1"] == max(r.best["val_top1"] for r in records.values() if r is not child)
    # The child trained only epoch 2: it started from the parent's epoch-1 checkpoint.
    child_dir = env["results"] / "tuning" / parent.tags["study"] / "runs" / child.run_id
    assert [int(r["epoch"]) for r in read_history(child_dir)] == [2]
    assert [e for run, e in trained(env["log"]) if run == child.run_id] == [2]
    assert child.config["model"] == parent.config["model"] and child.config["train"]["lr"] == parent.config["train"]["lr"]


def test_failed_trials_are_recorded_and_the_search_goes_on(env, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "raise,record")
    assert _tune(_argv(env, "bayesian", "--max-trials", "4")) == 0
    root = env["results"] / "tuning" / f"{FAMILY}-bayesian-{Path(env['store']).name}"
    records = _records(root)
    statuses = Counter(r.status for r in records.values())
    assert statuses == {"failed": 2, "completed": 2}
    errors = sorted(r.error.splitlines()[0] for r in records.values() if r.status == "failed")
    assert "out of memory" in errors[0] and "non-finite loss" in errors[1]
    best = json.loads((root / "best.json").read_text())
    assert records[best["trial"]].status == "completed"


def test_rerun_resumes_the_study_without_training_a_trial_twice(env, capsys):
    argv = _argv(env, "bayesian", "--max-trials", "2")
    assert _tune(argv) == 0
    first = trained(env["log"])
    assert len(first) == 4
    assert _tune(argv) == 0  # the same command: finished study, nothing trains
    assert trained(env["log"]) == first
    assert "Reloading" in capsys.readouterr().out
    assert _tune([*argv[:-1], "3"]) == 0  # a larger budget adds one trial
    assert len(trained(env["log"])) == 6 and max(Counter(trained(env["log"])).values()) == 1
    # Changing what the study searches is refused, naming the setting.
    assert _tune([*argv, "--objective", "val_loss"]) == 2
    assert "started with objective='val_accuracy'" in capsys.readouterr().err


def test_preempted_trial_exits_85_and_resumes_from_its_checkpoint(env, monkeypatch):
    monkeypatch.setenv("FAKE_PREEMPT", "trial1:1")
    argv = _argv(env, "bayesian", "--max-trials", "3")
    assert _tune(argv) == 85
    assert _tune(argv) == 0
    runs = Counter(run for run, _ in trained(env["log"]))
    assert len(runs) == 3 and set(runs.values()) == {2}
    assert max(Counter(trained(env["log"])).values()) == 1


def test_final_trains_a_normal_run_with_the_best_values(env):
    assert _tune(_argv(env, "bayesian", "--max-trials", "3", "--final")) == 0
    study = f"{FAMILY}-bayesian-{Path(env['store']).name}"
    final = read_record(env["results"] / "runs" / f"{study}-final" / "metrics.json")
    best = json.loads((env["results"] / "tuning" / study / "best.json").read_text())
    assert final.status == "completed" and final.tags["role"] == "final" and "trial" not in final.tags
    assert final.config["train"]["lr"] == pytest.approx(best["hyperparameters"]["lr"])
    assert _tune(_argv(env, "bayesian", "--distributed", "--final")) == 2


def test_bad_space_file_and_store_stop_before_searching(env, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.01]\nmomentum: [0.9]\n")
    assert _tune(_argv(env, "bayesian", "--space", str(space))) == 2
    assert "unknown hyperparameter 'momentum'" in capsys.readouterr().err
    assert _tune(["--tuner", "bayesian", "--data", str(tmp_path / "nostore"), "--results", str(env["results"])]) == 2
    assert "no clip store" in capsys.readouterr().err
    assert not trained(env["log"])


def _run_fake(args, env, **extra):
    return subprocess.Popen([sys.executable, str(FAKE), *args], env={**os.environ, **extra}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_search_resumes_the_same_study(env):
    argv = _argv(env, "bayesian", "--max-trials", "3")
    killed = _run_fake(argv, env, FAKE_KILL_AT="trial1:1")
    out, _ = killed.communicate(timeout=240)
    assert killed.returncode == -9, out
    assert trained(env["log"])[-1][1] == 1  # died inside trial 1, after its first epoch
    again = _run_fake(argv, env)
    out, _ = again.communicate(timeout=240)
    assert again.returncode == 0, out
    log = trained(env["log"])
    assert Counter(log).most_common(1)[0][1] == 1  # no epoch (so no trial) trained twice
    assert len({run for run, _ in log}) == 3 and len(log) == 6



@pytest.mark.slow
def test_distributed_chief_and_two_workers_share_the_trials(env):
    argv = _argv(env, "bayesian", "--max-trials", "4", "--distributed", "--chief-timeout-s", "120")
    net = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    procs = {tid: _run_fake(argv, env, KERASTUNER_TUNER_ID=tid, **net) for tid in ("chief", "tuner1", "tuner2")}
    outs = {}
    for tid, proc in procs.items():
        outs[tid], _ = proc.communicate(timeout=300)
    for tid, proc in procs.items():
        assert proc.returncode == 0, f"{tid}:\n{outs[tid][-3000:]}"
    log = trained(env["log"])
    assert len({run for run, _ in log}) == 4 and max(Counter(log).values()) == 1
    pids_per_run = {run: {pid for r, _, pid in (line.split() for line in env["log"].read_text().splitlines()) if r == run}
                    for run, _ in log}
    assert all(len(p) == 1 for p in pids_per_run.values())  # each trial ran in one worker
    workers = {str(procs["tuner1"].pid), str(procs["tuner2"].pid)}
    assert set().union(*pids_per_run.values()) <= workers  # the chief only serves the oracle
    root = env["results"] / "tuning" / f"{FAMILY}-bayesian-{Path(env['store']).name}"
    assert json.loads((root / "best.json").read_text())["trial"] in _records(root)
    assert "Best trial" in outs["chief"] and "no more trials" in outs["tuner1"]


def test_worker_without_a_chief_exits_with_the_address_it_tried(env, monkeypatch, capsys):
    port = free_port()  # nothing listens there
    for key, value in {"KERASTUNER_TUNER_ID": "tuner1", "KERASTUNER_ORACLE_IP": "127.0.0.1",
                       "KERASTUNER_ORACLE_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    assert _tune(_argv(env, "bayesian", "--distributed", "--chief-timeout-s", "1")) == 2
    assert f"tuner1 cannot reach the tuning chief at 127.0.0.1:{port}" in capsys.readouterr().err
    assert not trained(env["log"])


def test_worker_calls_to_the_chief_carry_a_deadline():
    """keras-tuner waits on the chief forever; a vanished chief must not hang a worker's SLURM task."""
    from utils.tuning.distributed import RPC_TIMEOUT_S, DeadlineStub

    calls = []

    class Stub:
        def CreateTrial(self, request, **kwargs):  # noqa: N802  (gRPC's method name)
            calls.append((request, kwargs))
            return "trial"

    stub = DeadlineStub(Stub())
    assert stub.CreateTrial("req", wait_for_ready=True) == "trial"
    assert calls == [("req", {"wait_for_ready": True, "timeout": RPC_TIMEOUT_S})]
