"""The 2D-CNN frame baseline (models/cnn2d.py): MobileNetV2 on every frame, temporal pooling, the head.

Shapes are tiny (4 frames, 32 px: MobileNetV2's smallest input). The
ImageNet weights are never downloaded: the upstream application is built
here and saved the way the keras-applications release file was saved
(``save_weights`` to ``.h5``), which is the layout ``--pretrained`` reads.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from models.registry import get_model
from utils.core.tf_env import tf_keras

FRAMES, SIZE = 4, 32
RELEASE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def _build(**kw):
    import models  # noqa: F401  (registers every family)

    kw = {"num_classes": 3, "frames": FRAMES, "size": SIZE, "dropout": 0.0, **kw}
    return get_model("cnn2d").build(**kw)


def _clips(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)


def test_registered_with_its_defaults_flags_scripts_and_jobs():
    import models  # noqa: F401
    from utils.cluster.jobs import check_dir, render_all
    from utils.cluster.sbatch import load_profile
    from utils.core.config import config_from_dict
    from utils.train_cli import config_from_args, train_parser

    spec = get_model("cnn2d")
    assert (spec.family, spec.framework, spec.frames, spec.size) == ("cnn2d", "keras", 20, 224)
    assert spec.mean == (0.5,) * 3 and spec.std == (0.5,) * 3  # MobileNetV2 takes [-1, 1]
    assert spec.option("temporal").choices == ("avg", "conv") and spec.option("temporal").default == "avg"
    args = train_parser("cnn2d").parse_args(["--data", "d/wlasl100_224", "--temporal", "conv"])
    assert config_from_args(args, "cnn2d").model.options == {"temporal": "conv"}
    with pytest.raises(ValueError, match=r"temporal expected one of \['avg', 'conv'\]"):
        spec.check_options(config_from_dict({"model": {"name": "cnn2d", "options": {"temporal": "max"}},
                                             "data": {"root": "d"}}).model.options)  # fmt: skip
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = render_all(load_profile(repo / "slurm" / "cluster.toml"), source="slurm/cluster.toml")
    ours = {n: files[n] for n in ("cnn2d.slurm", "tune_cnn2d.slurm", "tune_cnn2d_distributed.slurm")}
    assert "python main/train_cnn2d.py" in ours["cnn2d.slurm"] and "wlasl${subset}_224" in ours["cnn2d.slurm"]
    assert check_dir(ours, repo / "slurm") == []  # committed: regenerate with python main/make_slurm.py
    for script in ("train_cnn2d.py", "tune_cnn2d.py"):
        assert (repo / "main" / script).is_file()


def test_takes_uint8_clips_normalises_to_pm1_and_is_a_plain_functional_model():
    model = _build()
    assert type(model).__name__ == "Functional" and model.inputs[0].dtype.name == "uint8"
    out = model(_clips(), training=False)
    assert tuple(out.shape) == (2, 3) and out.dtype.name == "float32"
    probe = tf_keras.Model(model.input, model.get_layer("to_pm1").output)
    pixel = probe(np.full((1, FRAMES, SIZE, SIZE, 3), 200, np.uint8)).numpy()
    assert np.allclose(pixel, (200 / 255 - 0.5) / 0.5, atol=1e-6)
    assert model.count_params() > 2_200_000  # MobileNetV2 1.0 (2.26 M) + the head


def test_average_pooling_ignores_frame_order_and_the_temporal_conv_does_not():
    clips = _clips(seed=1)
    reverse = clips[:, ::-1].copy()
    avg = _build(temporal="avg")
    np.testing.assert_allclose(avg(clips, training=False).numpy(), avg(reverse, training=False).numpy(), atol=1e-5)
    conv = _build(temporal="conv")
    assert conv.get_layer("temporal_conv").kernel_size == (3,)
    assert not np.allclose(conv(clips, training=False).numpy(), conv(reverse, training=False).numpy(), atol=1e-5)


def _release_file(path, drop: str | None = None):
    """The upstream no-top MobileNetV2 at 224² with random weights, saved as the release was (``save_weights`` .h5)."""
    upstream = tf_keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None)
    rng = np.random.default_rng(0)
    upstream.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in upstream.get_weights()])
    upstream.save_weights(str(path))
    if drop:
        with h5py.File(path, "a") as f:
            del f[drop]
            f.attrs["layer_names"] = [n for n in f.attrs["layer_names"] if n != drop.encode()]
    return upstream


def test_pretrained_loads_the_keras_applications_release_layout(tmp_path):
    path = tmp_path / RELEASE
    upstream = _release_file(path)
    with h5py.File(path, "r") as f:  # the legacy Keras weights layout: layer groups named by layer_names
        names = [n.decode() for n in f.attrs["layer_names"]]
        assert names[0].startswith("input") and names[1:3] == ["Conv1", "bn_Conv1"] and names[-1] == "out_relu"
        assert [n.decode() for n in f["Conv1"].attrs["weight_names"]] == ["Conv1/kernel:0"]
        assert "keras_version" in f.attrs and "backend" in f.attrs
    model = _build(pretrained=str(path))
    backbone = model.get_layer("frames").layer
    want = {layer.name: layer.get_weights() for layer in upstream.layers if layer.weights}
    assert len(want) == len([layer for layer in backbone.layers if layer.weights]) == 104
    for layer in backbone.layers:
        for got, expected in zip(layer.get_weights(), want.get(layer.name, [])):
            np.testing.assert_array_equal(got, expected)
    assert model.get_layer("logits").get_weights()[0].std() < 1  # the head stays fresh (not from the file)


def test_pretrained_refusals_and_partial_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no MobileNetV2 weights file at .*{RELEASE}"):
        _build(pretrained=str(tmp_path / RELEASE))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a Keras weights file"):
        _build(pretrained=str(junk))
    partial = tmp_path / "partial.h5"
    _release_file(partial, drop="block_16_project")
    with pytest.raises(ValueError, match="leaves 1 backbone layer.*block_16_project.*--pretrained-partial"):
        _build(pretrained=str(partial))
    model = _build(pretrained=str(partial), pretrained_partial=True)
    assert model.get_layer("frames").layer.get_layer("Conv1").get_weights()[0].std() > 0.5  # loaded: N(0, 1)


def test_freezing_and_sizes():
    model = _build(freeze=1)
    backbone = model.get_layer("frames").layer
    assert not backbone.get_layer("Conv1").trainable and not backbone.get_layer("expanded_conv_project").trainable
    assert backbone.get_layer("block_1_expand").trainable and model.get_layer("logits").trainable
    model = _build(unfreeze_last=4)
    trainable = [layer.name for layer in model.get_layer("frames").layer.layers if layer.trainable]
    assert trainable == ["Conv_1", "Conv_1_bn", "out_relu", "frame_pool"]
    with pytest.raises(ValueError, match=r"freeze expected 0\.\.18 blocks for cnn2d, received 19"):
        _build(freeze=19)
    with pytest.raises(ValueError, match="cnn2d needs size >= 32.*received frames=4, size=16"):
        _build(size=16)


def test_trains_through_the_suite(tmp_path, capsys):
    from utils.core.records import read_record
    from utils.train_cli import main
    from wlasl.synthetic import synthetic_store

    store = synthetic_store(tmp_path / "s", frames=FRAMES, size=SIZE, glosses=3, per_gloss=6, seed=0)
    argv = ["--data", str(store), "--frames", str(FRAMES), "--size", str(SIZE), "--temporal", "conv",
            "--results", str(tmp_path / "r"), "--run-id", "c2d", "--dry-run"]  # fmt: skip
    assert main("cnn2d", argv) == 0, capsys.readouterr().err
    record = read_record(tmp_path / "r" / "runs" / "c2d" / "metrics.json")
    assert record.status == "completed" and record.framework == "keras" and record.model == "cnn2d"
    assert record.config["model"]["options"] == {"temporal": "conv"} and record.env["params"] > 2_200_000
    assert (tmp_path / "r" / "runs" / "c2d" / "scores_train.npz").is_file()
