"""Keras runs -> TFLite (float32, int8) and SavedModel, evaluated through their own runtimes."""

import numpy as np
import pytest
from export_helpers import FRAMES, SIZE, make_store, read_export, train_run

from models.export import ExportError, export_run, open_export
from models.registry import register_model, unregister_model
from utils.core.tf_env import tf, tf_keras


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("export_keras")


@pytest.fixture(scope="module")
def store(root):
    return make_store(root)


@pytest.fixture(scope="module")
def i3d_run(store, root):
    return train_run(store, root / "results", "i3d", model="i3d", dry_run=True)


@pytest.fixture(scope="module")
def i3d_tflite(i3d_run):
    return export_run(i3d_run, "tflite", log=lambda _: None)


def _toy_builder(*, num_classes, frames, size, mean, std, dropout, **_):
    """(2+1)-D from 2-D ops only (every op has an int8 TFLite kernel): per-frame conv, then a conv over time."""
    layers = tf_keras.layers
    clip = tf_keras.Input((frames, size, size, 3), dtype="uint8")
    x = layers.Rescaling(1 / 255.0)(clip)
    x = layers.TimeDistributed(layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"))(x)
    x = layers.Reshape((frames, (size // 2) ** 2, 8))(x)
    x = layers.Conv2D(16, (3, 1), padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(clip, layers.Dense(num_classes)(x))


def _toy3d_builder(*, num_classes, frames, size, mean, std, dropout, **_):
    """One Conv3D: TFLite has no int8 CONV_3D kernel (as in I3D, whose int8 conversion costs minutes)."""
    layers = tf_keras.layers
    clip = tf_keras.Input((frames, size, size, 3), dtype="uint8")
    x = layers.Rescaling(1 / 255.0)(clip)
    x = layers.Conv3D(4, 3, strides=(1, 4, 4), padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling3D()(x)
    return tf_keras.Model(clip, layers.Dense(num_classes)(x))


@pytest.fixture(scope="module")
def toys(store, root):
    """Two cheap Keras runs: a 2-D-ops toy (int8-quantisable, trained a little so its logits differ) and a Conv3D toy."""
    register_model("toy_keras2d", family="toykeras", framework="keras", frames=FRAMES, size=SIZE)(_toy_builder)
    register_model("toy_keras3d", family="toykeras", framework="keras", frames=FRAMES, size=SIZE)(_toy3d_builder)
    try:
        yield {
            "2d": train_run(store, root / "results", "toy2d", model="toy_keras2d", epochs=2, steps=4, lr=1e-2),
            "3d": train_run(store, root / "results", "toy3d", model="toy_keras3d", dry_run=True),
        }
    finally:
        unregister_model("toy_keras2d")
        unregister_model("toy_keras3d")


def test_i3d_tflite_matches_the_run_through_the_litert_interpreter(i3d_run, i3d_tflite):
    contract, metrics = read_export(i3d_run, "tflite_float32")
    assert contract["input"]["shape"] == [1, FRAMES, SIZE, SIZE, 3] and contract["input"]["dtype"] == "uint8"
    assert contract["input"]["mean"] == [0.5] * 3 and contract["runtime"] == "ai-edge-litert Interpreter"
    assert contract["stream"] is None and len(contract["classes"]) == 3
    assert metrics["max_abs_logit_diff"] < 1e-4 and metrics["agreement"] == 1.0
    assert metrics["exported"] == metrics["original"]
    assert metrics["run"]["top1"] == pytest.approx(metrics["original"]["top1"])
    assert metrics["size_bytes"] == (i3d_tflite / "model.tflite").stat().st_size


def test_max_pool_3d_rewrite_is_exact():
    """I3D's MaxPool3D has no TFLite builtin; the export's separable rewrite must give the same numbers."""
    from models.export.keras_export import _separable_max_pool_3d

    pool = _separable_max_pool_3d(tf_keras)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 9, 7, 4)), tf.float32)
    for size, strides in (((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (1, 1, 1)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2))):
        want = tf_keras.layers.MaxPooling3D(size, strides, padding="same")(x)
        got = pool(size, strides, "same")(x)
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_savedmodel_round_trip(toys):
    out = export_run(toys["2d"], "savedmodel", log=lambda _: None)
    contract, metrics = read_export(toys["2d"], "savedmodel_float32")
    assert (out / "saved_model" / "saved_model.pb").is_file() and contract["files"]["model"] == "saved_model"
    assert contract["runtime"] == "TensorFlow" and contract["input"]["shape"] == [1, FRAMES, SIZE, SIZE, 3]
    assert metrics["max_abs_logit_diff"] < 1e-4 and metrics["agreement"] == 1.0


def test_int8_names_the_op_that_does_not_quantise_and_leaves_nothing(toys):
    # The converter itself does not fail: it keeps CONV_3D in float32 between (de)quantise ops.
    with pytest.raises(ExportError, match=r"CONV_3D \(x1\) have no int8 kernel.*drop --int8"):
        export_run(toys["3d"], "tflite", int8=True, calibration=2, log=lambda _: None)
    assert not (toys["3d"] / "exports").exists() or not any((toys["3d"] / "exports").iterdir())


def test_onnx_is_refused_for_keras_runs(i3d_run):
    with pytest.raises(ExportError, match=r"TensorFlow/Keras model and --format onnx.*--format tflite or --format savedmodel"):
        export_run(i3d_run, "onnx", log=lambda _: None)
    with pytest.raises(ExportError, match="--int8 applies to"):
        export_run(i3d_run, "savedmodel", int8=True, log=lambda _: None)


def test_tflite_int8_stays_within_the_stated_margin_of_float(toys):
    out = export_run(toys["2d"], "tflite", int8=True, calibration=8, log=lambda _: None)
    _, metrics = read_export(toys["2d"], "tflite_int8")
    interp = open_export(out).interp
    assert interp.get_input_details()[0]["dtype"] == np.uint8  # raw pixels in, like the float file
    kinds = {d["dtype"] for d in interp.get_tensor_details()}
    assert np.int8 in kinds  # weights and activations really are int8
    # Margin (as for ONNX): within 10% of the spread of the float logits, >= 80% agreement.
    assert metrics["max_abs_logit_diff"] <= 0.1 * metrics["original_logit_range"], metrics
    assert metrics["agreement"] >= 0.8, metrics
    assert abs(metrics["exported"]["top1"] - metrics["original"]["top1"]) <= 0.2, metrics


def test_a_cut_keras_checkpoint_is_named_not_a_traceback(toys, tmp_path, capsys):
    """Issue 24 f07: a cut Keras checkpoint ("not an sstable") gave export and predict a traceback."""
    import json
    import shutil

    from main.export import main

    run = tmp_path / "runs" / "toy3d"
    shutil.copytree(toys["3d"], run, ignore=shutil.ignore_patterns("exports"))
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    files = state["checkpoints"][0]["best"]["files"]
    cut = [p for name in files for p in (run / "checkpoints").glob(f"{name}*")]  # a TF checkpoint: .index, .data-*
    assert cut, files
    for path in cut:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main([str(run), "--format", "savedmodel", "--name", "again"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and files[0] in err and "Traceback" not in err, err[-600:]
    assert not (run / "exports" / "again").exists()
