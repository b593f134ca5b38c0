"""MoViNet a0-a5 and I3D builders: forward passes, size checks, freezing, pretrained loading.

Tiny shapes throughout (MoViNet 3d at 20x172² costs ~20 s a step on CPU);
(2+1)D convs where the conv type is not what is under test.
"""

import numpy as np
import pytest

from models.i3d import HEAD, build_i3d
from models.movinet import MOVINET_VARIANTS, build_movinet, load_movinet_backbone
from models.registry import get_model, list_models
from utils.core.tf_env import tf, tf_keras


def _clip(batch, frames, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, frames, size, size, 3), dtype=np.uint8)


def test_registry_names_and_defaults():
    assert list_models("movinet_*") == [f"movinet_{v}" for v in MOVINET_VARIANTS]
    for name in list_models("movinet_*"):
        spec = get_model(name)
        assert (spec.framework, spec.family, spec.frames, spec.size) == ("keras", "movinet", 20, 172)
    spec = get_model("i3d")
    assert (spec.framework, spec.family, spec.frames, spec.size) == ("keras", "i3d", 20, 224)


@pytest.mark.parametrize(
    "variant", [pytest.param(v, marks=pytest.mark.slow) if v in ("a4", "a5") else v for v in MOVINET_VARIANTS]
)
def test_movinet_variant_forward(variant):
    model = get_model(f"movinet_{variant}").build(
        num_classes=4, frames=2, size=32, dropout=0.2, freeze=0, pretrained=None, conv_type="2plus1d"
    )
    logits = model(_clip(1, 2, 32), training=False)
    assert logits.shape == (1, 4) and logits.dtype == tf.float32
    assert np.isfinite(logits.numpy()).all()


A0_KW = {"frames": 2, "size": 32, "model_id": "a0", "conv_type": "2plus1d"}


@pytest.fixture(scope="module")
def a0_release(tmp_path_factory):
    """A MoViNet-a0 saved the way the releases are: tf.train.Checkpoint(model=classifier)."""
    from official.projects.movinet.modeling.movinet_model import MovinetClassifier

    tf_keras.utils.set_random_seed(1)
    source = build_movinet(num_classes=3, **A0_KW)
    # The releases hold a MovinetClassifier, whose first weighted layer is the backbone.
    release = MovinetClassifier(source.backbone, num_classes=3)
    release.build((None, 2, 32, 32, 3))
    directory = tmp_path_factory.mktemp("movinet_a0_base")
    tf.train.Checkpoint(model=release).save(str(directory / "ckpt"))
    return source, release, directory


def test_movinet_a0_3d_stream_and_freeze(a0_release):
    model = build_movinet(num_classes=3, frames=4, size=32, model_id="a0", conv_type="3d", freeze=2)
    assert model(_clip(2, 4, 32)).shape == (2, 3)
    assert not model.backbone.get_layer("stem").trainable and not model.backbone.get_layer("block0_layer0").trainable
    assert model.backbone.get_layer("block1_layer0").trainable
    with pytest.raises(ValueError, match="does not fit"):  # a (2+1)D checkpoint into a 3D backbone
        load_movinet_backbone(model.backbone, a0_release[2])
    stream = build_movinet(num_classes=3, frames=4, size=32, model_id="a0", stream=True)
    assert stream.name == "movinet_a0_stream" and stream(_clip(1, 4, 32)).shape == (1, 3)


def test_movinet_rejects_small_input_and_bad_freeze():
    with pytest.raises(ValueError, match=r"size >= 32.*size=16"):
        build_movinet(num_classes=3, frames=4, size=16)
    with pytest.raises(ValueError, match="model_id"):
        build_movinet(num_classes=3, model_id="a9")


def test_movinet_pretrained_loads_backbone_and_keeps_head_fresh(a0_release, tmp_path):
    source, release, directory = a0_release
    tf_keras.utils.set_random_seed(2)
    model = build_movinet(num_classes=3, pretrained=str(directory), **A0_KW)
    assert len(source.backbone.weights) == len(model.backbone.weights) > 100
    for a, b in zip(source.backbone.weights, model.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    old_head = release.layers[-1].get_weights()
    new_head = model.head.get_weights()
    assert [w.shape for w in old_head] == [w.shape for w in new_head]
    assert not any(np.array_equal(a, b) for a, b in zip(old_head, new_head) if a.ndim > 1)
    with pytest.raises(FileNotFoundError, match="no MoViNet checkpoint"):
        build_movinet(num_classes=3, pretrained=str(tmp_path / "nothing"), **A0_KW)


def test_i3d_forward_freeze_and_size_check():
    model = build_i3d(num_classes=5, frames=8, size=32, freeze=3)
    logits = model(_clip(2, 8, 32), training=False)
    assert logits.shape == (2, 5) and np.isfinite(logits.numpy()).all()
    names = {layer.name for layer in model.layers}
    assert {"Conv3d_1a_7x7_conv", "Mixed_3b", "Mixed_5c", "MaxPool2d_5a_2x2", HEAD} <= names
    assert not model.get_layer("Conv3d_2c_3x3_conv").trainable
    assert model.get_layer("Conv3d_3b_0a_1x1_conv").trainable
    with pytest.raises(ValueError, match=r"frames >= 8.*frames=4, size=32"):
        build_i3d(num_classes=5, frames=4, size=32)
    with pytest.raises(ValueError, match="freeze expected 0..12"):
        build_i3d(num_classes=5, frames=8, size=32, freeze=13)


def test_i3d_pretrained_by_name_with_fresh_head(tmp_path):
    tf_keras.utils.set_random_seed(1)
    source = build_i3d(num_classes=3, frames=8, size=32)
    path = tmp_path / "rgb_kinetics.h5"
    source.save_weights(str(path))
    tf_keras.utils.set_random_seed(2)
    model = build_i3d(num_classes=3, frames=8, size=32, pretrained=str(path))
    other = build_i3d(num_classes=7, frames=8, size=32, pretrained=str(path))  # another head size loads too
    checked = 0
    for layer in source.layers:
        if not layer.weights or layer.name == HEAD:
            continue
        for a, b, c in zip(
            layer.get_weights(), model.get_layer(layer.name).get_weights(), other.get_layer(layer.name).get_weights()
        ):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
            checked += 1
    assert checked > 100
    assert not np.array_equal(source.get_layer(HEAD).get_weights()[0], model.get_layer(HEAD).get_weights()[0])
    assert other.get_layer(HEAD).get_weights()[0].shape[-1] == 7
    with pytest.raises(FileNotFoundError, match="no I3D weights file"):
        build_i3d(num_classes=3, frames=8, size=32, pretrained=str(tmp_path / "missing.h5"))


def _bn_momenta(model):
    return {layer.momentum for layer in model.submodules if isinstance(layer, tf_keras.layers.BatchNormalization)}


def test_bn_momentum_reaches_every_batchnorm():
    # MoViNet's skip projections ignore Movinet(norm_momentum=...); the builder sets them too.
    assert _bn_momenta(build_movinet(num_classes=3, **A0_KW)) == {0.99}
    assert _bn_momenta(build_movinet(num_classes=3, bn_momentum=0.9, **A0_KW)) == {0.9}
    assert _bn_momenta(build_i3d(num_classes=3, frames=8, size=32)) == {0.99}
    assert _bn_momenta(build_i3d(num_classes=3, frames=8, size=32, bn_momentum=0.9)) == {0.9}
    for build, kw in ((build_i3d, {"frames": 8, "size": 32}), (build_movinet, A0_KW)):
        with pytest.raises(ValueError, match=r"bn_momentum expected in \[0, 1\), received 1.0"):
            build(num_classes=3, bn_momentum=1.0, **kw)
