"""The Keras engine and tf.data loader on a tiny synthetic clip store.

The learning and resume tests use a small Conv3D+BN network defined here:
the engine is model-agnostic, and this net learns the synthetic motion
classes in seconds on CPU, where MoViNet/I3D would need minutes. The CLI
dry run goes through the real MoViNet-a0.
"""

import dataclasses
import os
import signal

import numpy as np
import pytest

from models import engine_keras
from models.train import resolve, run
from utils.core.config import config_from_dict
from utils.core.preempt import Preempted
from utils.core.records import read_history, read_record
from utils.core.tf_env import tf_keras
from utils.train_cli import main
from wlasl import loader_tf
from wlasl.clip_store import ClipStore, StoreError
from wlasl.synthetic import synthetic_store

FRAMES, SIZE = 8, 32


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras_store")
    return synthetic_store(root, frames=FRAMES, size=SIZE, workers=2, glosses=3, per_gloss=20, seed=0)


def _cfg(store, results, **train):
    train = {"epochs": 3, "lr": 3e-3, "seed": 0, "schedule": "cosine", **train}
    return config_from_dict(
        {
            "model": {"name": "tiny", "frames": FRAMES, "size": SIZE, "dropout": 0.0},
            "data": {"root": str(store), "batch_size": 8, "workers": 2},
            "train": train,
            "results": str(results),
            "run_id": "tiny",
        }
    )


def _tiny(num_classes, nan=False, norm=True):
    """Conv3D-BN-ReLU x3 + pooling: learns forward/backward/out-and-back motion in seconds."""
    layers = tf_keras.layers
    clip = tf_keras.Input((FRAMES, SIZE, SIZE, 3), dtype="uint8")
    x = layers.Rescaling(1 / 255.0)(clip)
    if nan:
        x = layers.Lambda(lambda t: t * float("nan"))(x)
    for filters, strides in ((16, (1, 1, 1)), (32, (1, 2, 2)), (64, (2, 2, 2))):
        x = layers.Conv3D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        # Fast BN statistics: the default 0.99 lags far behind in a 200-step run.
        x = layers.BatchNormalization(momentum=0.8)(x) if norm else x
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling3D()(x)
    return tf_keras.Model(clip, layers.Dense(num_classes)(x))


def _fit(cfg, loaders=None, nan=False, norm=True):
    loaders = loaders or loader_tf.make_loaders(ClipStore(cfg.data.root), cfg)
    with engine_keras.build_scope(cfg):
        model = _tiny(loaders.num_classes, nan=nan, norm=norm)
    return engine_keras.fit(model, loaders, cfg, cfg.run_dir)


def test_loader_batches_are_uint8_deterministic_and_fresh_each_epoch(store, tmp_path):
    cfg = _cfg(store, tmp_path).replace(data={"max_clips": 10})
    loaders = loader_tf.make_loaders(ClipStore(store), cfg)
    assert loaders.train_size == 10 and len(loaders.ids["val"]) <= 10
    inputs, y = next(iter(loaders.train.epoch(0)))
    x = loaders.augment(inputs)  # the crop the engine's train step applies
    assert x.dtype.name == "uint8" and tuple(x.shape) == (8, FRAMES, SIZE, SIZE, 3) and y.dtype.name == "int32"
    again = loaders.augment(next(iter(loader_tf.make_loaders(ClipStore(store), cfg).train.epoch(0)))[0])
    np.testing.assert_array_equal(x.numpy(), again.numpy())  # same seed, same epoch: same batch
    other = loaders.augment(next(iter(loaders.train.epoch(1)))[0])
    assert not np.array_equal(x.numpy(), other.numpy())  # new order and crops next epoch
    val1 = np.concatenate([b[0].numpy() for b in loaders.val])
    val2 = np.concatenate([b[0].numpy() for b in loaders.val])
    np.testing.assert_array_equal(val1, val2)


def test_training_learns_the_synthetic_motions(store, tmp_path):
    cfg = _cfg(store, tmp_path, epochs=40)
    record = _fit(cfg)
    assert record.status == "completed" and record.epochs == 40
    assert record.metrics["val"]["top1"] >= 0.9, record.metrics
    assert record.metrics["val"]["top1"] == pytest.approx(record.best["val_top1"])
    read_record(cfg.run_dir / "metrics.json")  # validates
    history = read_history(cfg.run_dir)
    assert len(history) == 40
    lrs = [float(row["lr"]) for row in history]
    assert lrs[0] == pytest.approx(3e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))  # cosine
    assert record.env["params"] > 0 and "git_rev" in record.env
    for name in ("predictions_test.csv", "predictions_val.csv", "scores_train.npz", "config.json", "plots/confusion_test.png"):
        assert (cfg.run_dir / name).is_file(), name
    cm = np.loadtxt(cfg.run_dir / "confusion_test.csv", delimiter=",", skiprows=1, usecols=(2, 3, 4))
    assert cm.sum() == record.metrics["test"]["n"]


class _SignalAt:
    """Wraps a TrainStream: sends SIGUSR1 to this process after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, stream, epoch, batch):
        self.stream, self.at = stream, (epoch, batch)

    def __len__(self):
        return len(self.stream)

    def epoch(self, epoch, *args):
        for i, item in enumerate(self.stream.epoch(epoch, *args)):
            yield item
            if (epoch, i + 1) == self.at:
                os.kill(os.getpid(), signal.SIGUSR1)


def test_preempted_run_resumes_to_the_same_history(store, tmp_path):
    whole = _cfg(store, tmp_path / "whole", epochs=3)
    _fit(whole)
    split = _cfg(store, tmp_path / "split", epochs=3)
    loaders = loader_tf.make_loaders(ClipStore(store), split)
    stopping = dataclasses.replace(loaders, train=_SignalAt(loaders.train, epoch=1, batch=2))
    with pytest.raises(Preempted):
        _fit(split, stopping)
    stopped = read_record(split.run_dir / "metrics.json")
    assert stopped.status == "stopped" and stopped.epochs == 1 and "epoch 2, step 2" in stopped.error
    record = _fit(split)  # a fresh model: everything comes from the checkpoint
    assert record.status == "completed" and record.epochs == 3
    h1, h2 = read_history(whole.run_dir), read_history(split.run_dir)
    assert len(h1) == len(h2) == 3
    for a, b in zip(h1, h2):
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "lr"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-3, abs=1e-4), (key, a, b)


def test_resume_refused_and_class_mismatch(store, tmp_path):
    cfg = _cfg(store, tmp_path, epochs=1)
    _fit(cfg)
    with pytest.raises(ValueError, match="--no-resume"):
        _fit(cfg.replace(train={"resume": False}))
    loaders = loader_tf.make_loaders(ClipStore(store), cfg)
    more = dataclasses.replace(loaders, num_classes=4, glosses=[*loaders.glosses, "extra"])
    with pytest.raises(ValueError, match="trained for 3 classes but the store has 4"):
        _fit(cfg, more)


def test_early_stop(store, tmp_path):
    # lr 0 and no BN statistics: nothing changes, so val never beats epoch 1
    # and patience 1 stops after epoch 2.
    record = _fit(_cfg(store, tmp_path, epochs=5, lr=0.0, early_stop=1, schedule="none"), norm=False)
    assert record.status == "completed" and record.epochs == 2 and record.best["epoch"] == 1


def test_non_finite_loss_stops_with_step_and_lr(store, tmp_path):
    cfg = _cfg(store, tmp_path, epochs=2, lr=0.02, schedule="none")
    with pytest.raises(engine_keras.NonFiniteLoss, match=r"at epoch 1, step 1 with learning rate 0\.02"):
        _fit(cfg, nan=True)
    record = read_record(cfg.run_dir / "metrics.json")
    assert record.status == "failed" and "step 1" in record.error


def test_bad_store_and_too_few_frames(store, tmp_path, capsys):
    import models.movinet  # noqa: F401

    missing = tmp_path / "nowhere"
    with pytest.raises(StoreError, match="main/preprocess.py"):
        run(_cfg(missing, tmp_path).replace(model={"name": "movinet_a0"}))
    assert main("movinet", ["--variant", "a0", "--data", str(missing), "--results", str(tmp_path)]) == 2
    assert "preprocess.py" in capsys.readouterr().err
    with pytest.raises(StoreError, match=f"stores {FRAMES} per clip"):
        run(_cfg(store, tmp_path).replace(model={"name": "movinet_a0", "frames": 16}))


def test_cli_dry_run_movinet(store, tmp_path, capsys):
    # The conv type is not under test here; (2+1)D is ~30x faster on CPU (a builder option flag).
    argv = [
        "--conv-type",
        "2plus1d",
        "--variant",
        "a0",
        "--data",
        str(store),
        "--frames",
        "8",
        "--size",
        "32",
        "--results",
        str(tmp_path),
        "--dry-run",
    ]
    assert main("movinet", argv) == 0, capsys.readouterr().err
    cfg = resolve(config_from_dict({"model": {"name": "movinet_a0"}, "data": {"root": str(store)}, "dry_run": True}))
    record = read_record(tmp_path / "runs" / cfg.run_id / "metrics.json")
    assert record.status == "completed" and record.epochs == 1 and record.framework == "keras"
    assert record.config["train"]["steps_per_epoch"] == 2 and record.metrics["test"]["n"] <= 8


def test_stream_runs_get_their_own_run_id(store):
    import models.movinet  # noqa: F401

    base = {"model": {"name": "movinet_a0"}, "data": {"root": str(store)}}
    stream = {"model": {"name": "movinet_a0", "stream": True}, "data": {"root": str(store)}}
    assert resolve(config_from_dict(base)).run_id != resolve(config_from_dict(stream)).run_id


def test_a_damaged_keras_checkpoint_falls_back_to_the_one_before(store, tmp_path, capsys):
    import json

    cfg = _cfg(store, tmp_path, epochs=2).replace(data={"max_clips": 16})
    _fit(cfg)
    ckpt_dir = cfg.run_dir / "checkpoints"
    newest, previous = json.loads((ckpt_dir / "state.json").read_text())["checkpoints"]
    data = next(ckpt_dir.glob(newest["files"][0] + ".data-*"))
    data.write_bytes(data.read_bytes()[:100])  # a node died while writing it
    capsys.readouterr()
    record = _fit(cfg.replace(train={"epochs": 3}))
    out = capsys.readouterr().out
    assert f"warning: checkpoint {ckpt_dir / newest['files'][0]} is damaged" in out
    assert f"resuming tiny from epoch {previous['epoch'] + 1}, step 0" in out
    assert record.status == "completed" and record.epochs == 3
    assert [int(r["epoch"]) for r in read_history(cfg.run_dir)] == [1, 2, 3]
