"""The PyTorch entry scripts end to end: dry run, SIGUSR1 -> requeue exit -> resume, two-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import models.s3d  # noqa: E402,F401
import models.x3d  # noqa: E402,F401
from tests._ports import free_port  # noqa: E402
from tests.torch_helpers import make_store, toy_family  # noqa: E402
from utils.core.preempt import REQUEUE_EXIT_CODE  # noqa: E402
from utils.core.records import read_history, read_record  # noqa: E402
from utils.train_cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
X3D = [sys.executable, str(ROOT / "main" / "train_x3d.py"), "--variant", "xs"]
# Signal handling and DDP do not depend on the network: the tests' tiny family runs them in seconds.
TOY = [sys.executable, str(ROOT / "tests" / "toy_train.py"), "--variant", "small"]


@pytest.fixture
def toy():
    with toy_family() as names:
        yield names


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("torch_cli_store"))


def _args(store, results, run_id, *extra):
    return ["--data", str(store), "--frames", "8", "--size", "32", "--results", str(results), "--run-id", run_id,
            "--workers", "0", "--dropout", "0", *extra]  # fmt: skip


def _preset(tmp_path, **train) -> str:
    path = tmp_path / "preset.yaml"
    path.write_text(json.dumps({"train": train}))  # JSON is YAML
    return str(path)


@pytest.mark.parametrize("script", ["train_s3d.py", "train_x3d.py"])
def test_help_lists_the_shared_options(script, capsys):
    out = subprocess.run([sys.executable, str(ROOT / "main" / script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--data", "--epochs", "--batch-size", "--pretrained", "--workers", "--mixed-precision", "--dry-run"):
        assert option in out.stdout
    assert ("--variant" in out.stdout) == (script == "train_x3d.py")


def test_dry_run_on_cpu(store, tmp_path, capsys):
    assert main("x3d", ["--variant", "xs", *_args(store, tmp_path, "dry", "--dry-run")]) == 0
    record = read_record(tmp_path / "runs" / "dry" / "metrics.json")
    assert record.status == "completed" and record.config["dry_run"] and record.config["train"]["steps_per_epoch"] == 2
    assert main("x3d", ["--variant", "xs", "--data", str(tmp_path / "nowhere"), "--dry-run"]) == 2
    assert "no clip store" in capsys.readouterr().err


def test_sigusr1_checkpoints_exits_85_and_the_rerun_finishes_the_same_run(store, tmp_path, toy):
    # Enough epochs that the signal, sent once epoch 1 is on disk, lands before the end.
    preset = _preset(tmp_path, epochs=12, lr=1e-3)
    ref_args = _args(store, tmp_path, "ref", "--config", preset, "--batch-size", "2")
    assert main("toy", ["--variant", "small", *ref_args]) == 0

    cmd = [*TOY, *_args(store, tmp_path, "cut", "--config", preset, "--batch-size", "2")]
    run_dir = tmp_path / "runs" / "cut"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        # After epoch 1 has been written, the signal lands inside epoch 2 (or at its start).
        while not (run_dir / "history.csv").is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == REQUEUE_EXIT_CODE, out
    assert "preempted" in out
    assert read_record(run_dir / "metrics.json").status == "stopped"
    newest = json.loads((run_dir / "checkpoints" / "state.json").read_text())["checkpoints"][0]
    assert 1 <= newest["epoch"] < 12
    torch.load(run_dir / "checkpoints" / newest["files"][0], weights_only=True)

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    done, ref = read_record(run_dir / "metrics.json"), read_record(tmp_path / "runs" / "ref" / "metrics.json")
    assert done.status == "completed" and done.epochs == 12
    for split in ("val", "test"):
        assert done.metrics[split]["loss"] == pytest.approx(ref.metrics[split]["loss"], abs=1e-5)
    assert [r["val_loss"] for r in read_history(run_dir)] == [r["val_loss"] for r in read_history(tmp_path / "runs" / "ref")]



def test_two_process_ddp_matches_one_process(store, tmp_path, toy):
    # --batch-size is the global batch (models/policy.py): 4 is 2 per process
    # here, the same clips per step as one process; the tiny net has no
    # BatchNorm, so one and two processes must agree closely.
    preset = _preset(tmp_path, epochs=2, lr=1e-3)
    assert main("toy", ["--variant", "small", *_args(store, tmp_path, "one", "--config", preset, "--batch-size", "4")]) == 0
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # fmt: skip
        cmd = [*TOY, *_args(store, tmp_path, "two", "--config", preset, "--batch-size", "4")]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    one = read_record(tmp_path / "runs" / "one" / "metrics.json")
    two = read_record(tmp_path / "runs" / "two" / "metrics.json")
    assert two.env["world_size"] == 2 and one.env["world_size"] == 1
    assert len(read_history(tmp_path / "runs" / "two")) == 2
    for split in ("val", "test"):
        assert two.metrics[split]["n"] == one.metrics[split]["n"]
        assert two.metrics[split]["loss"] == pytest.approx(one.metrics[split]["loss"], abs=1e-4)
