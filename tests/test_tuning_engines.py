"""Tuning through the real training engines (tiny models, tiny store).

Both oracles, for one Keras model and one PyTorch family (X3D-XS): at least
3 trials each, the best picked by the objective read back from the run
records, and a Hyperband promotion that resumes from its parent's
checkpoint (fewer epochs trained than from scratch).

The Keras model is a tiny tf_keras Conv3D network registered here: a
MoViNet-A0 (2+1D) trial costs ~70-90 s on 2 CPU cores (graph tracing of a
large model), six of them would triple the suite's tuning time, and the
engine path is the same. MoViNet through the tuner was checked by hand:
A0 2+1D, 3 Bayesian trials, 283 s; A0 (3D convs), ``main/tune_movinet.py
--tuner hyperband --dry-run`` at 8x32², 3 trials with a promotion, 128 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.core.records import read_history, read_record

KERAS_FAMILY = "tinyconv3d"  # test-only tf_keras model
TORCH_FAMILY = "x3d"


def build_tiny_conv3d(*, num_classes: int, frames: int, size: int, mean=(0.0,) * 3, std=(1.0,) * 3,
                      dropout: float = 0.5, freeze: int = 0, unfreeze_last=None, pretrained: str | None = None,
                      pretrained_partial: bool = False):
    """Two Conv3D blocks + linear head on uint8 clips (the registry's builder contract)."""
    from utils.core.tf_env import tf_keras

    inputs = tf_keras.Input((frames, size, size, 3), dtype="uint8")
    x = tf_keras.layers.Rescaling(1.0 / 255)(tf_keras.layers.Lambda(lambda t: tf_keras.backend.cast(t, "float32"))(inputs))
    blocks = [tf_keras.layers.Conv3D(8, 3, strides=2, padding="same", activation="relu", name=f"block{i}") for i in range(2)]
    for i, block in enumerate(blocks):
        block.trainable = i >= freeze
        x = block(x)
    x = tf_keras.layers.GlobalAveragePooling3D()(x)
    x = tf_keras.layers.Dropout(dropout)(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(num_classes)(x), name="tiny_conv3d")


def _register_keras_model() -> None:
    from models.registry import list_models, register_model

    if KERAS_FAMILY not in list_models():
        register_model(KERAS_FAMILY, family=KERAS_FAMILY, framework="keras", frames=8, size=32,
                       description="tuning tests: tiny Conv3D")(build_tiny_conv3d)


FAMILIES = [
    pytest.param(KERAS_FAMILY, [], id="keras-tiny_conv3d"),
    pytest.param(TORCH_FAMILY, ["--variant", "xs"], id="torch-x3d_xs"),
]
# Tiny trials: one step of 2 clips (4 frames, 32 px) per epoch, 2 clips per split, no loader processes.
TINY = ["--frames", "4", "--size", "32", "--workers", "0"]
PRESET = "data: {max_clips: 2}\ntrain: {steps_per_epoch: 1}\n"


def _tune(family: str, argv: list[str]) -> int:
    import models  # noqa: F401  (registers the families)
    from utils.tuning.cli import main

    if family == KERAS_FAMILY:
        _register_keras_model()
    return main(family, argv)


def _files(tmp_path: Path) -> list[str]:
    # Batch size fixed at 2 (2 clips); the rest is searched.
    space, preset = tmp_path / "space.yaml", tmp_path / "tiny.yaml"
    space.write_text("batch_size: 2\nfreeze: {min: 0, max: 1}\n")
    preset.write_text(PRESET)
    return ["--space", str(space), "--config", str(preset)]


def _records(root: Path) -> dict:
    return {r.tags["trial"]: r for r in (read_record(p) for p in sorted((root / "runs").glob("*/metrics.json")))}


def _paths_in(obj, prefix: str) -> list[str]:
    """String values under ``prefix`` anywhere in a JSON object."""
    if isinstance(obj, dict):
        return [p for v in obj.values() for p in _paths_in(v, prefix)]
    if isinstance(obj, list):
        return [p for v in obj for p in _paths_in(v, prefix)]
    return [obj] if isinstance(obj, str) and obj.startswith(prefix) else []


def _argv(tmp_path, store, tuner, extra):
    return ["--tuner", tuner, *extra, "--data", str(store), "--results", str(tmp_path / "results"),
            *_files(tmp_path), *TINY]


@pytest.mark.slow
@pytest.mark.parametrize("family, extra", FAMILIES)
def test_bayesian_through_the_engine(family, extra, tiny_store, tmp_path):
    argv = _argv(tmp_path, tiny_store, "bayesian", extra) + ["--max-trials", "3", "--max-epochs", "1", "--study", "b"]
    assert _tune(family, argv) == 0
    root = tmp_path / "results" / "tuning" / "b"
    records = _records(root)
    assert len(records) == 3 and all(r.status == "completed" for r in records.values())
    for r in records.values():
        assert r.epochs == 1 and r.tags["study"] == "b" and set(r.metrics) >= {"val", "test"}
        assert len(read_history(root / "runs" / r.run_id)) == 1
        assert any((root / "runs" / r.run_id / "checkpoints").iterdir())
    best = json.loads((root / "best.json").read_text())
    top = max(r.best["val_top1"] for r in records.values())
    assert records[best["trial"]].best["val_top1"] == pytest.approx(top)
    assert best["objective"]["value"] == pytest.approx(top)


@pytest.mark.slow
@pytest.mark.parametrize("family, extra", FAMILIES)
def test_hyperband_promotion_through_the_engine(family, extra, tiny_store, tmp_path):
    argv = _argv(tmp_path, tiny_store, "hyperband", extra) + ["--max-epochs", "2", "--factor", "2", "--max-trials", "3", "--study", "h"]
    assert _tune(family, argv) == 0
    root = tmp_path / "results" / "tuning" / "h"
    records = _records(root)
    assert len(records) == 3 and all(r.status == "completed" for r in records.values())
    child = next(r for r in records.values() if "parent_trial" in r.tags)
    parent = records[child.tags["parent_trial"]]
    assert parent.epochs == 1 and child.epochs == 2
    # From scratch it would train epochs 1 and 2; resumed from the parent's checkpoint it trains only epoch 2.
    assert [int(row["epoch"]) for row in read_history(root / "runs" / child.run_id)] == [2]
    # The parent's checkpoints are intact (the child worked on a relocated copy): every
    # checkpoint file its JSON state names still exists, and the child's names none of them.
    assert [int(row["epoch"]) for row in read_history(root / "runs" / parent.run_id)] == [1]
    parent_ckpt, child_ckpt = (root / "runs" / r.run_id / "checkpoints" for r in (parent, child))
    assert any(parent_ckpt.iterdir())
    for path in parent_ckpt.glob("*.json"):
        for ref in _paths_in(json.loads(path.read_text()), str(parent_ckpt)):
            assert list(Path(ref).parent.glob(Path(ref).name + "*")), f"{path} names {ref}, which is gone"
    assert not any(_paths_in(json.loads(p.read_text()), str(parent_ckpt)) for p in child_ckpt.glob("*.json"))
    best = json.loads((root / "best.json").read_text())
    assert records[best["trial"]].best["val_top1"] == pytest.approx(max(r.best["val_top1"] for r in records.values()))
    # The promoted epoch must still learn: its schedule spans the child's 2 epochs, not the parent's 1.
    lr = float(read_history(root / "runs" / child.run_id)[0]["lr"])
    assert lr > 0
