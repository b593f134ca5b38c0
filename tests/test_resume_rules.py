"""A run is what its record says: resume refuses other settings, survives damaged checkpoints, moves with its folder."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")

from tests.torch_helpers import make_store, toy_family  # noqa: E402
from utils.core.records import read_history, read_record  # noqa: E402
from utils.train_cli import main  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_store")
    # Two steps per epoch keep each run to seconds; the rules under test do not depend on it.
    (root / "short.yaml").write_text("train: {steps_per_epoch: 2}\n")
    return make_store(root)


@pytest.fixture(scope="module", autouse=True)
def toy():
    with toy_family() as names:
        yield names


def _argv(store, results, run_id, *extra, variant="small"):
    return ["--variant", variant, "--data", str(store), "--frames", "8", "--size", "32", "--results", str(results),
            "--run-id", run_id, "--workers", "0", "--batch-size", "2", "--dropout", "0",
            "--config", str(store.parent / "short.yaml"), *extra]  # fmt: skip


def _state(run_dir):
    return json.loads((run_dir / "checkpoints" / "state.json").read_text())


@pytest.fixture(scope="module")
def finished(store, tmp_path_factory):
    """A completed 2-epoch x 2-step run of the tests' tiny model."""
    results = tmp_path_factory.mktemp("finished")
    assert main("toy", _argv(store, results, "done", "--epochs", "2")) == 0
    return results, results / "runs" / "done"


def test_rerunning_a_finished_run_with_other_settings_is_refused(store, finished, capsys):
    results, run_dir = finished
    config = (run_dir / "config.json").read_text()
    code = main("toy", _argv(store, results, "done", "--epochs", "2", "--lr", "0.1", "--optimizer", "sgd", "--dropout", "0.2"))
    err = capsys.readouterr().err
    assert code == 2 and "cannot resume with these" in err
    for key in ("model.dropout: 0.0 -> 0.2", "train.lr: 0.001 -> 0.1", "train.optimizer: 'adam' -> 'sgd'"):
        assert key in err, err
    assert (run_dir / "config.json").read_text() == config  # nothing rewritten
    assert read_record(run_dir / "metrics.json").status == "completed"
    # the same settings: nothing to do, the record stays
    assert main("toy", _argv(store, results, "done", "--epochs", "2")) == 0
    assert "already completed 2 epochs" in capsys.readouterr().out


def test_another_model_on_the_same_run_id_is_refused(store, finished, capsys):
    results, run_dir = finished
    assert main("toy", _argv(store, results, "done", variant="big")) == 2
    assert "holds a toy_small run, this command trains toy_big" in capsys.readouterr().err
    assert read_record(run_dir / "metrics.json").model == "toy_small"


def test_a_plateau_run_resumed_without_its_schedule_names_the_setting(store, tmp_path, capsys):
    assert main("toy", _argv(store, tmp_path, "plat", "--epochs", "1", "--schedule", "plateau")) == 0
    assert main("toy", _argv(store, tmp_path, "plat", "--epochs", "2")) == 2
    assert "train.schedule: 'plateau' -> 'cosine'" in capsys.readouterr().err
    # more epochs with the original settings: allowed, and the run goes on
    assert main("toy", _argv(store, tmp_path, "plat", "--epochs", "2", "--schedule", "plateau")) == 0
    assert [int(r["epoch"]) for r in read_history(tmp_path / "runs" / "plat")] == [1, 2]


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_checkpoint_falls_back_to_the_one_before(store, tmp_path, damage, capsys):
    assert main("toy", _argv(store, tmp_path, "dmg", "--epochs", "2")) == 0
    run_dir = tmp_path / "runs" / "dmg"
    newest, previous = _state(run_dir)["checkpoints"]
    assert (newest["epoch"], previous["epoch"]) == (2, 1)
    path = run_dir / "checkpoints" / newest["files"][0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    capsys.readouterr()
    assert main("toy", _argv(store, tmp_path, "dmg", "--epochs", "3")) == 0
    out = capsys.readouterr().out
    assert f"warning: checkpoint {path} is damaged" in out and "resuming dmg from epoch 2, step 0" in out
    record = read_record(run_dir / "metrics.json")
    assert record.status == "completed" and record.epochs == 3
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2, 3]
    newest, previous = _state(run_dir)["checkpoints"]
    assert (newest["epoch"], previous["epoch"]) == (3, 2)
    torch.load(run_dir / "checkpoints" / previous["files"][0], weights_only=True)  # epoch 2 was written anew


def test_no_loadable_checkpoint_is_a_clear_error_and_a_failed_record(store, tmp_path, capsys):
    assert main("toy", _argv(store, tmp_path, "gone", "--epochs", "2")) == 0
    run_dir = tmp_path / "runs" / "gone"
    for entry in _state(run_dir)["checkpoints"]:
        (run_dir / "checkpoints" / entry["files"][0]).write_bytes(b"\x00garbage")
    assert main("toy", _argv(store, tmp_path, "gone", "--epochs", "3")) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and f"delete {run_dir} to train from scratch" in err
    record = read_record(run_dir / "metrics.json")
    assert record.status == "failed" and "is damaged" in record.error


def test_a_moved_run_resumes_where_it_was_copied(store, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert main("toy", _argv(store, first, "mv", "--epochs", "1")) == 0
    shutil.copytree(first / "runs" / "mv", second / "runs" / "mv")
    shutil.rmtree(first)  # nothing may point back at the old place
    assert main("toy", _argv(store, second, "mv", "--epochs", "2")) == 0
    assert "resuming mv from epoch 2" in capsys.readouterr().out
    assert read_record(second / "runs" / "mv" / "metrics.json").epochs == 2


def test_unsafe_run_ids_and_mistyped_presets_are_one_line_errors(store, tmp_path, capsys):
    assert main("toy", _argv(store, tmp_path, "../../escape")) == 2
    assert "is not a safe file name" in capsys.readouterr().err
    assert not (tmp_path.parent / "escape").exists()
    for text, expected in (("run_id: ../x", "is not a safe file name"), ("train: 5", "'train' expected a mapping"),
                           ("data: {crop_scale: 0.5}", "data['crop_scale'] expected a list of 2 numbers"),
                           ("tags: [1, 2]", "'tags' expected a mapping"), ("train: {epochs: true}", "train['epochs'] expected a whole number")):  # fmt: skip
        preset = tmp_path / "preset.yaml"
        preset.write_text(text + "\n")
        argv = ["--variant", "small", "--data", str(store), "--results", str(tmp_path), "--config", str(preset)]
        assert main("toy", argv) == 2, text
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, (text, err)


def test_log_lines_count_from_one_and_long_epochs_get_a_heartbeat(store, tmp_path, capsys, monkeypatch):
    import re

    import models.lifecycle

    monkeypatch.setattr(models.lifecycle, "HEARTBEAT_S", 0.0)  # every step is "long" here
    assert main("toy", _argv(store, tmp_path, "beat", "--epochs", "1")) == 0
    out = capsys.readouterr().out
    assert re.search(r"^epoch 1/1  step 1/2  train loss \d+\.\d{4} top1 \d\.\d{3}  \(\d+ s into the epoch\)$", out, re.M)
    # the one epoch line both engines print (models/lifecycle.py)
    assert re.search(r"^epoch 1/1  train loss \d+\.\d{4} top1 \d\.\d{3}  val loss \d+\.\d{4} top1 \d\.\d{3} "
                     r"top5 \d\.\d{3}  lr \S+  \d+\.\d s$", out, re.M)  # fmt: skip
