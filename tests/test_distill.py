"""Knowledge distillation (models/distill.py and both engines): the loss, real teachers and students, refusals.

The networks are not under test: a small early-fusion 2D net, written once
for each framework (frames stacked as channels, so the order of the frames
and with it the direction of the motion is visible), learns the synthetic
motion classes in seconds. The teacher is trained for real through ``models.train.run``;
the students see no label at all (A = 0), only the teacher's soft targets,
read from its ``scores_train.npz`` by video id.

Measured on the 2-core development machine (3 classes, chance 0.33; 8
frames, 32 px): see the figures in the test docstrings.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models import distill  # noqa: E402
from models.evaluation import read_scores, write_split  # noqa: E402
from models.policy import fingerprint  # noqa: E402
from models.registry import register_model, unregister_model  # noqa: E402
from models.train import resolve, run  # noqa: E402
from utils.core.config import config_from_dict  # noqa: E402
from utils.core.metrics import evaluate_logits  # noqa: E402
from utils.core.records import RunRecord, write_json, write_record  # noqa: E402
from utils.train_cli import main  # noqa: E402
from wlasl.clip_store import ClipStore  # noqa: E402
from wlasl.synthetic import synthetic_store  # noqa: E402

FRAMES, SIZE = 8, 32
CHANCE = 1 / 3


# --------------------------------------------------------------------------- test networks


def build_fused(*, num_classes, frames=FRAMES, size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3, dropout=0.0, freeze=0,
                unfreeze_last=None, pretrained=None, pretrained_partial=False, width=16):  # fmt: skip
    """PyTorch: frames stacked as channels -> three stride-2 Conv2d+BN+ReLU -> pooling -> linear."""
    from torch import nn

    from models._torch_video import ClipClassifier

    class StackFrames(nn.Module):
        def forward(self, x):  # (B, 3, T, H, W) -> (B, 3T, H, W): the frame order is in the channels
            return x.flatten(1, 2)

    layers, channels = [StackFrames()], 3 * frames
    for out in (width, 2 * width, 2 * width):
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out, momentum=0.2), nn.ReLU()]
        channels = out
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))
    return ClipClassifier(net, mean=mean, std=std, num_classes=num_classes)


def build_fused_keras(*, num_classes, frames=FRAMES, size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3, dropout=0.0, freeze=0,
                      unfreeze_last=None, pretrained=None, pretrained_partial=False, width=16):  # fmt: skip
    """Keras: the same early-fusion net (uint8 -> normalised -> frames stacked as channels -> three Conv2D+BN+ReLU)."""
    from models._keras_common import normalisation
    from utils.core.tf_env import tf_keras

    layers = tf_keras.layers
    clip = tf_keras.Input((frames, size, size, 3), dtype="uint8")
    x = layers.Rescaling(*normalisation(mean, std))(clip)
    x = layers.Permute((2, 3, 1, 4))(x)  # (H, W, T, 3)
    x = layers.Reshape((size, size, frames * 3))(x)
    for out in (width, 2 * width, 2 * width):
        x = layers.Conv2D(out, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.8)(x)  # fast statistics: a run of ~100 steps
        x = layers.ReLU()(x)
    x = layers.Dropout(dropout)(layers.GlobalAveragePooling2D()(x))
    return tf_keras.Model(clip, layers.Dense(num_classes)(x))


@pytest.fixture(scope="module")
def families():
    """The two test networks as registered families (``run`` and ``restore_run`` go through the registry)."""
    register_model("kdt", family="kdt", framework="torch", frames=FRAMES, size=SIZE, mean=(0.5,) * 3,
                   std=(0.25,) * 3)(build_fused)  # fmt: skip
    register_model("kdk", family="kdk", framework="keras", frames=FRAMES, size=SIZE, mean=(0.5,) * 3,
                   std=(0.25,) * 3)(build_fused_keras)  # fmt: skip
    yield
    unregister_model("kdt")
    unregister_model("kdk")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_store")
    return synthetic_store(root, frames=FRAMES, size=SIZE, workers=2, glosses=3, per_gloss=20, seed=0)


def _cfg(store, results, model, run_id=None, **train):
    train = {"epochs": 8, "lr": 3e-3, "schedule": "cosine", **train}
    return config_from_dict({
        "model": {"name": model, "frames": FRAMES, "size": SIZE, "dropout": 0.0},
        "data": {"root": str(store), "batch_size": 4, "workers": 0},
        "train": train, "results": str(results), **({"run_id": run_id} if run_id else {}),
    })  # fmt: skip


@pytest.fixture(scope="module")
def teacher(families, store, tmp_path_factory):
    """A PyTorch teacher trained for real on the labels; returns (results root, run dir, record)."""
    results = tmp_path_factory.mktemp("kd_results")
    record = run(_cfg(store, results, "kdt", "teacher", epochs=8))
    return results, results / "runs" / "teacher", record


# --------------------------------------------------------------------------- the loss


def _hand_case():
    """Two clips, three classes, A = 0.25, T = 2, computed with nothing but math."""
    z = [[2.0, 0.0, -1.0], [0.5, -0.5, 1.5]]
    y = [1, 0]
    p = [[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]]  # a zero: 0 * log 0 counts as 0
    alpha, t = 0.25, 2.0
    expected = []
    for zi, yi, pi in zip(z, y, p):
        ce = math.log(sum(math.exp(v) for v in zi)) - zi[yi]
        q = [math.exp(v / t) for v in zi]
        q = [v / sum(q) for v in q]
        kl = sum(pk * math.log(pk / qk) for pk, qk in zip(pi, q) if pk > 0)
        expected.append(alpha * ce + (1 - alpha) * t * t * kl)
    return np.array(z), np.array(y), np.array(p), alpha, t, np.array(expected)


def _hand_gradient(z, y, p, alpha, t):
    """dL/dz = A (softmax(z) - onehot(y)) + (1 - A) T (softmax(z / T) - p)."""

    def softmax(v):
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    onehot = np.eye(z.shape[1])[y]
    return alpha * (softmax(z) - onehot) + (1 - alpha) * t * (softmax(z / t) - p)


def test_the_loss_equals_a_hand_computation_in_numpy_torch_and_keras():
    from models.engine_keras import kd_loss as keras_kd
    from models.engine_torch import kd_loss as torch_kd
    from utils.core.tf_env import tf

    z, y, p, alpha, t, expected = _hand_case()
    np.testing.assert_allclose(distill.kd_loss(z, y, p, alpha=alpha, temperature=t), expected, rtol=1e-12)

    zt = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    got = torch_kd(zt, torch.tensor(y), torch.tensor(p, dtype=torch.float32), alpha=alpha, temperature=t)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5)
    got.sum().backward()
    np.testing.assert_allclose(zt.grad.numpy(), _hand_gradient(z, y, p, alpha, t), atol=1e-6)

    zk = tf.Variable(z, dtype=tf.float32)
    with tf.GradientTape() as tape:
        got = keras_kd(zk, tf.constant(y, tf.int32), tf.constant(p, tf.float32), alpha=alpha, temperature=t)
        total = tf.reduce_sum(got)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(total, zk).numpy(), _hand_gradient(z, y, p, alpha, t), atol=1e-6)


def test_alpha_one_is_cross_entropy_and_teachers_average_probabilities():
    z, y, p, _, t, _ = _hand_case()
    ce = [math.log(sum(math.exp(v) for v in zi)) - zi[yi] for zi, yi in zip(z, y)]
    np.testing.assert_allclose(distill.kd_loss(z, y, p, alpha=1.0, temperature=t), ce, rtol=1e-12)
    a, b = np.array([[4.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]])
    probs = distill.soft_targets([a, b], temperature=2.0)
    one = np.exp(a / 2) / np.exp(a / 2).sum()
    two = np.exp(b / 2) / np.exp(b / 2).sum()
    np.testing.assert_allclose(probs, (one + two) / 2, rtol=1e-6)  # mean of distributions, not of logits
    assert probs.dtype == np.float32 and probs.sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- real teachers, real students


@pytest.fixture(scope="module")
def torch_student(teacher, store):
    """A PyTorch student of the teacher with A = 0, T = 1, trained beside it (the report reads both)."""
    results, teacher_dir, _ = teacher
    cfg = _cfg(store, results, "kdt", epochs=8, teachers=[str(teacher_dir)], kd_alpha=0.0, kd_temperature=1.0)
    return run(cfg)


def test_a_torch_student_learns_from_soft_targets_alone(teacher, torch_student):
    """A = 0: the student never sees a label.

    Measured (12 val / 12 test clips): teacher val 1.00, test 1.00; student val 1.00, test 0.92; chance 0.33.
    """
    _, teacher_dir, teacher_record = teacher
    record = torch_student
    assert teacher_record.metrics["val"]["top1"] >= 0.75, teacher_record.metrics
    assert record.status == "completed" and record.tags["teachers"] == "teacher"
    assert record.run_id == "kdt-store-s0-kd" and list(record.config["train"]["teachers"]) == [str(teacher_dir)]
    assert record.metrics["val"]["top1"] >= 0.75 > CHANCE, (record.metrics, teacher_record.metrics)


@pytest.fixture(scope="module")
def keras_student(teacher, store, tmp_path_factory):
    """A Keras student of the PyTorch teacher, A = 0, T = 1; returns (record, run dir)."""
    _, teacher_dir, _ = teacher
    results = tmp_path_factory.mktemp("kd_keras")
    cfg = _cfg(store, results, "kdk", "keras_student", epochs=10, teachers=[str(teacher_dir)], kd_alpha=0.0,
               kd_temperature=1.0)  # fmt: skip
    return run(cfg), results / "runs" / "keras_student"


def test_a_torch_teacher_teaches_a_keras_student_through_the_files(keras_student):
    """A = 0 across engines: only scores_train.npz passes. Measured: student val 1.00, test 0.92 (chance 0.33)."""
    record, _ = keras_student
    assert record.framework == "keras" and record.tags["teachers"] == "teacher"
    assert record.metrics["val"]["top1"] >= 0.75 > CHANCE, record.metrics


@pytest.mark.parametrize("engine", ["torch", "keras"])
def test_an_older_teacher_gets_its_train_scores_computed_once_through_its_engine(engine, teacher, keras_student, store,
                                                                                 tmp_path):  # fmt: skip
    # The Keras student is a finished run too (and a student itself: its own teachers play no part here).
    run_dir = teacher[1] if engine == "torch" else keras_student[1]
    old = tmp_path / "old_teacher"
    shutil.copytree(run_dir, old)
    (old / "scores_train.npz").unlink()  # a run from before every run wrote it
    loaded = distill.load_teacher(old)
    assert loaded.computed and (old / "scores_train.npz").is_file()
    saved, fresh = read_scores(run_dir, "train"), read_scores(old, "train")
    assert list(fresh["video_id"]) == list(saved["video_id"]) == [e.video_id for e in ClipStore(store).split("train")]
    np.testing.assert_allclose(fresh["logits"], saved["logits"], atol=1e-4)
    assert not distill.load_teacher(old).computed  # once: the next student reads the file


def test_two_teachers_are_averaged_and_named(teacher, store, tmp_path):
    _, teacher_dir, _ = teacher
    twin = tmp_path / "teacher_twin"
    shutil.copytree(teacher_dir, twin)
    cfg = resolve(_cfg(store, tmp_path, "kdt", teachers=[str(teacher_dir), str(twin)], kd_alpha=0.5))
    table = distill.prepare(cfg, ClipStore(store), [e.video_id for e in ClipStore(store).split("train")])
    one = distill.soft_targets([read_scores(teacher_dir, "train")["logits"]], 4.0)
    np.testing.assert_allclose(table.targets, one, rtol=1e-6)  # two identical teachers average to one
    assert table.teachers == ("teacher", "teacher") and table.tag == "teacher,teacher"
    assert (table.alpha, table.temperature) == (0.5, 4.0)


def test_a_tuning_study_trains_every_trial_against_its_teacher(teacher, store, tmp_path):
    """``--teacher`` is a shared training option, so ``main/tune_<family>.py`` takes it too: every trial distils."""
    from utils.core.records import read_record
    from utils.tuning.cli import main as tune_main

    _, teacher_dir, _ = teacher
    space = tmp_path / "space.yaml"
    space.write_text("lr: {min: 1.0e-3, max: 3.0e-3, sampling: log}\noptimizer: adam\nweight_decay: 0.0\n"
                     "dropout: 0.0\nfreeze: 0\nbatch_size: 4\n")  # fmt: skip
    preset = tmp_path / "tiny.yaml"
    preset.write_text("train: {steps_per_epoch: 2}\n")
    argv = ["--tuner", "bayesian", "--data", str(store), "--results", str(tmp_path / "results"), "--space", str(space),
            "--config", str(preset), "--max-trials", "2", "--max-epochs", "1", "--study", "kd", "--workers", "0",
            "--frames", str(FRAMES), "--size", str(SIZE), "--teacher", str(teacher_dir), "--kd-alpha", "0.0"]  # fmt: skip
    assert tune_main("kdt", argv) == 0
    root = tmp_path / "results" / "tuning" / "kd"
    records = [read_record(p) for p in sorted((root / "runs").glob("*/metrics.json"))]
    assert len(records) == 2 and all(r.status == "completed" for r in records)
    for r in records:
        assert r.tags["teachers"] == "teacher", r.tags
        assert list(r.config["train"]["teachers"]) == [str(teacher_dir)] and r.config["train"]["kd_alpha"] == 0.0
    best = json.loads((root / "best.json").read_text())
    assert best["trial"] in {r.tags["trial"] for r in records}


def test_the_report_shows_a_student_apart_with_its_teachers(teacher, torch_student):
    from utils.reporting.runs import collect_runs
    from utils.reporting.tables import summarise

    results, _, _ = teacher
    rows = summarise(collect_runs(results))
    student = [r for r in rows if r.teachers]
    assert [r.label for r in student] == ["kdt (distilled from teacher)"] and student[0].run_ids == [torch_student.run_id]
    plain = [r for r in rows if r.model == "kdt" and not r.teachers]
    assert [r.run_ids for r in plain] == [["teacher"]]


def test_teachers_are_part_of_the_fingerprint_and_the_cli(store, tmp_path, families):
    from utils.train_cli import config_from_args, train_parser

    args = train_parser("kdt").parse_args(["--data", str(store), "--teacher", "a/run1,b/run2", "--kd-alpha", "0.2",
                                           "--kd-temperature", "3"])  # fmt: skip
    cfg = config_from_args(args, "kdt")
    assert cfg.train.teachers == ("a/run1", "b/run2") and cfg.train.kd_alpha == 0.2 and cfg.train.kd_temperature == 3.0
    flat = fingerprint(cfg)
    assert flat["train.teachers"] == ["a/run1", "b/run2"] and flat["train.kd_alpha"] == 0.2
    with pytest.raises(ValueError, match=r"kd_alpha expected in \[0.0, 1.0\]"):
        cfg.replace(train={"kd_alpha": 1.5})
    with pytest.raises(ValueError, match="kd_temperature expected > 0"):
        cfg.replace(train={"kd_temperature": 0.0})
    with pytest.raises(TypeError, match=r"train\['teachers'\]\[0\] expected text"):
        config_from_dict({"model": {"name": "kdt"}, "data": {"root": "x"}, "train": {"teachers": [1]}})


# --------------------------------------------------------------------------- refusals


def _fake_teacher(path: Path, store: Path, *, glosses=None, drop=0, relabel=False, status="completed",
                  trained_on: str | None = None) -> Path:  # fmt: skip
    """A finished-looking teacher run: config.json, metrics.json and scores_train.npz over the store's train split."""
    clips = ClipStore(store)
    entries = clips.split("train")[drop:]
    glosses = list(glosses or clips.labels)
    labels = np.array([e.label for e in entries])
    if relabel:
        labels = (labels + 1) % len(glosses)
    logits = np.eye(len(glosses), dtype=np.float32)[labels] * 3
    path.mkdir(parents=True)
    config = {"model": {"name": "kdt"}, "data": {"root": trained_on or str(store)}, "run_id": path.name}
    config = config_from_dict(config).to_dict()
    write_json(path / "config.json", config)
    metrics = {split: evaluate_logits(logits, labels) for split in ("train", "val", "test")}
    write_record(path, RunRecord(run_id=path.name, model="kdt", framework="torch", config=config, status=status,
                                 metrics=metrics if status == "completed" else {}))  # fmt: skip
    write_split(path, "train", [e.video_id for e in entries], labels, logits, glosses)
    return path


def _student(store, results, teachers):
    return resolve(_cfg(store, results, "kdt", "student", teachers=[str(t) for t in teachers]))


def _other_store(store: Path, out: Path, change: dict) -> Path:
    """A copy of the store's index files (no clips) with some manifest cells changed: ``{(video_id, column): value}``."""
    import csv

    out.mkdir()
    for name in ("store.json", "labels.txt"):
        shutil.copy(store / name, out / name)
    with open(store / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for (vid, column), value in change.items():
        next(r for r in rows if r["video_id"] == vid)[column] = value
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def _refusal(store, tmp_path, teacher_dir, match):
    cfg = _student(store, tmp_path, [teacher_dir])
    ids = [e.video_id for e in ClipStore(store).split("train")]
    with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
        distill.prepare(cfg, ClipStore(store), ids)
    assert "\n" not in str(info.value), str(info.value)  # one line
    return str(info.value)


def test_a_teacher_with_another_class_list_is_refused(store, tmp_path, families):
    other = [*ClipStore(store).labels[:2], "hello"]
    message = _refusal(store, tmp_path, _fake_teacher(tmp_path / "t", store, glosses=other), "another class list")
    assert "'hello'" in message and str(store) in message


def test_a_teacher_without_scores_for_every_training_clip_is_refused(store, tmp_path, families):
    message = _refusal(store, tmp_path, _fake_teacher(tmp_path / "t", store, drop=3), "no train-split scores for 3 of")
    assert ClipStore(store).split("train")[0].video_id in message


def test_scores_from_another_clip_store_are_refused(store, tmp_path, families):
    first = ClipStore(store).split("train")[0].video_id
    # (a) the teacher's labels disagree with the student's store
    _refusal(store, tmp_path, _fake_teacher(tmp_path / "a", store, relabel=True), f"another clip store.*clip {first}")
    # (b) the teacher's store (still on disk) cut the clip from another part of the video
    moved = _other_store(store, tmp_path / "other_store", {(first, "frame_start"): "99"})
    message = _refusal(store, tmp_path, _fake_teacher(tmp_path / "b", store, trained_on=str(moved)), "another clip store")
    assert "frame_start" in message and first in message
    # (c) the teacher's store is gone and has another name: nothing to compare, refused
    _refusal(store, tmp_path, _fake_teacher(tmp_path / "c", store, trained_on=str(tmp_path / "gone_224")), "not found here")
    # the same clips in another store (another size, same videos and ranges) are accepted
    same = _other_store(store, tmp_path / "same_clips_64", {})
    cfg = _student(store, tmp_path, [_fake_teacher(tmp_path / "d", store, trained_on=str(same))])
    ids = [e.video_id for e in ClipStore(store).split("train")]
    assert distill.prepare(cfg, ClipStore(store), ids).targets.shape == (len(ids), 3)


def test_unfinished_missing_and_self_teachers_are_refused(store, tmp_path, families):
    _refusal(store, tmp_path, _fake_teacher(tmp_path / "r", store, status="running"), "is running, not completed")
    _refusal(store, tmp_path, tmp_path / "nowhere", "not a finished run directory")
    cfg = _student(store, tmp_path, [])
    _fake_teacher(cfg.run_dir, store)
    _refusal(store, tmp_path, cfg.run_dir, "its own teacher")


def test_the_cli_refuses_a_bad_teacher_before_training_with_one_line(store, tmp_path, families, capsys):
    bad = _fake_teacher(tmp_path / "t", store, drop=2)
    argv = ["--data", str(store), "--frames", str(FRAMES), "--size", str(SIZE), "--results", str(tmp_path / "r"),
            "--teacher", str(bad), "--kd-alpha", "0"]  # fmt: skip
    assert main("kdt", argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: teacher") and "\n" not in err and "no train-split scores for 2 of" in err
    assert not (tmp_path / "r" / "runs").exists() or not any((tmp_path / "r" / "runs").rglob("metrics.json"))


def test_engines_refuse_a_distillation_run_without_its_table(store, tmp_path, families):
    from models.engine_torch import fit
    from wlasl.loader_torch import make_loaders

    cfg = _student(store, tmp_path, ["some/teacher"])
    loaders = make_loaders(ClipStore(store), cfg)
    inputs, _ = next(iter(loaders.train))
    assert "index" in inputs  # each clip's row of the soft targets rides with the batch
    with pytest.raises(ValueError, match="no soft targets"):
        fit(build_fused(num_classes=3), loaders, cfg, cfg.run_dir)
    json.dumps(cfg.to_dict())  # the config stays JSON-ready with its teachers
