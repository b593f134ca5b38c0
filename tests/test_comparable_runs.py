"""Both engines obey one policy: the same options leave the same run directory, by the same rules.

A Keras model (MoViNet-a0, (2+1)D) and a PyTorch model (X3D-XS) are trained
with identical options through ``models.train.run``; their run directories
are compared with each other file by file and column by column. The
optimizers of both engines are compared step by step on one toy problem.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.restore import restore_run  # noqa: E402
from models.train import run  # noqa: E402
from tests.torch_helpers import make_store  # noqa: E402
from utils.core import tb_events  # noqa: E402
from utils.core.config import config_from_dict  # noqa: E402
from utils.core.records import read_record  # noqa: E402

OPTIONS = {"frames": 8, "size": 32, "dropout": 0.0}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """One run per engine, identical options (2 epochs x 2 steps, plateau schedule)."""
    root = tmp_path_factory.mktemp("pair")
    store = make_store(root / "s")
    out = {}
    for name, options in (("movinet_a0", {"conv_type": "2plus1d"}), ("x3d_xs", {})):
        cfg = config_from_dict({
            "model": {"name": name, **OPTIONS, "options": options},
            "data": {"root": str(store), "batch_size": 2, "workers": 0},
            "train": {"epochs": 2, "steps_per_epoch": 2, "lr": 1e-3, "schedule": "plateau", "optimizer": "rmsprop",
                      "weight_decay": 1e-4, "clipnorm": 1.0},
            "results": str(root), "run_id": name,
        })  # fmt: skip
        out[name] = run(cfg)
    return root / "runs", out


def _files(run_dir):
    # Checkpoint files are the engines' own; their bookkeeping (state.json) is shared.
    # TensorBoard event files are named by time, host and pid (models/tensorboard_run.py).
    return sorted(
        "tb/events.out.tfevents.*" if p.parent.name == "tb" and "tfevents" in p.name else str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file() and (p.parent.name != "checkpoints" or p.name == "state.json")
    )  # fmt: skip


def _header(path):
    with open(path, newline="") as f:
        return next(csv.reader(f))


def test_both_engines_leave_the_same_files_and_columns(pair):
    runs, records = pair
    keras, torch_ = runs / "movinet_a0", runs / "x3d_xs"
    assert _files(keras) == _files(torch_)
    assert {"config.json", "metrics.json", "history.csv", "checkpoints/state.json", "scores_train.npz",
            "scores_val.npz", "scores_test.npz", "predictions_val.csv", "predictions_test.csv", "per_class_test.csv",
            "confusion_test.csv", "plots/confusion_test.png", "tb/events.out.tfevents.*"} <= set(_files(keras))  # fmt: skip
    # The same TensorBoard tags (models/tensorboard_run.py writes them for both); heartbeats come with wall time.
    tags = [sorted({v.tag for p in tb_events.event_files(d / "tb") for e in tb_events.read_events(p) for v in e.summary.value
                    if not v.tag.startswith("heartbeat/")}) for d in (keras, torch_)]  # fmt: skip
    assert tags[0] == tags[1] and "epoch/val_top1" in tags[0] and "images/test_confusion" in tags[0]
    for name in _files(keras):
        if name.endswith(".csv"):
            assert _header(keras / name) == _header(torch_ / name), name
    for split in ("train", "val", "test"):
        with np.load(keras / f"scores_{split}.npz") as a, np.load(torch_ / f"scores_{split}.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            assert a["logits"].shape == b["logits"].shape and list(a["video_id"]) == list(b["video_id"])
    ka, ta = read_record(keras / "metrics.json"), read_record(torch_ / "metrics.json")
    assert ka.framework == "keras" and ta.framework == "torch"
    assert set(ka.to_dict()) == set(ta.to_dict()) and set(ka.metrics) == set(ta.metrics) == {"train", "val", "test"}
    assert all(set(ka.metrics[s]) == set(ta.metrics[s]) for s in ka.metrics)
    sk, st = (json.loads((d / "checkpoints" / "state.json").read_text()) for d in (keras, torch_))
    assert set(sk) == set(st) and set(sk["checkpoints"][0]) == set(st["checkpoints"][0])


def test_both_engines_follow_the_same_lr_schedule_and_best_epoch_rule(pair):
    runs, records = pair
    for name, record in records.items():
        rows = list(csv.DictReader(open(runs / name / "history.csv")))
        assert [float(r["lr"]) for r in rows] == [1e-3, 1e-3], name  # plateau: no halving before 3 bad epochs
        best = max(rows, key=lambda r: (float(r["val_top1"]), -float(r["val_loss"]), -int(r["epoch"])))
        assert record.best["epoch"] == int(best["epoch"]), name


def test_a_restored_run_reproduces_its_own_scores(pair):
    runs, _ = pair
    from models.train import LOADERS
    from wlasl.clip_store import ClipStore

    for name in ("movinet_a0", "x3d_xs"):
        restored = restore_run(runs / name)
        with np.load(runs / name / "scores_test.npz") as z:
            saved = z["logits"]
        store = ClipStore(restored.cfg.data.root)
        import importlib

        loaders = importlib.import_module(LOADERS[restored.spec.framework]).make_loaders(store, restored.cfg)
        batches = [np.asarray(x) for x, _ in loaders.test]
        clips = np.concatenate(batches)
        if restored.spec.framework == "torch":
            restored.model.eval()
            with torch.no_grad():
                logits = restored.model(torch.from_numpy(clips)).numpy()
        else:
            logits = restored.model(clips, training=False).numpy()
        assert np.allclose(logits, saved, atol=1e-4), name


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_keras_and_torch_optimizers_take_the_same_steps(optimizer):
    """Decoupled decay on kernels only, per-tensor clipnorm, TF's RMSprop: identical trajectories."""
    from models import policy
    from models._torch_optim import PolicyOptimizer
    from models.engine_keras import make_optimizer
    from utils.core.config import TrainConfig
    from utils.core.tf_env import tf

    train = TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=0.1, clipnorm=0.5, momentum=0.9)
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)
    xs, ys = rng.normal(size=(5, 8, 4)).astype(np.float32), rng.normal(size=(5, 8, 3)).astype(np.float32)

    wt, bt = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
    opt_t = PolicyOptimizer([wt, bt], policy.optimizer_settings(train))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    wk, bk = tf.Variable(w0), tf.Variable(b0)
    opt_k = make_optimizer(train, [wk, bk])
    for x, y in zip(xs, ys):
        loss = ((torch.tensor(x) @ wt + bt - torch.tensor(y)) ** 2).sum()
        opt_t.zero_grad()
        loss.backward()
        opt_t.step(scaler)
        with tf.GradientTape() as tape:
            loss_k = tf.reduce_sum((x @ wk + bk - y) ** 2)
        opt_k.apply_gradients(zip(tape.gradient(loss_k, [wk, bk]), [wk, bk]))
    assert np.allclose(wt.detach().numpy(), wk.numpy(), atol=2e-5), optimizer
    assert np.allclose(bt.detach().numpy(), bk.numpy(), atol=2e-5), optimizer
