"""MoViNet a0-a5 and I3D builders: forward passes, size checks, freezing.

Pretrained loading is tested against the upstream release layouts in
tests/test_pretrained.py.

Tiny shapes throughout (MoViNet 3d at 20x172² costs ~20 s a step on CPU);
(2+1)D convs where the conv type is not what is under test.
"""

import numpy as np
import pytest

from models.i3d import HEAD, build_i3d
from models.movinet import MOVINET_VARIANTS, build_movinet
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


def test_movinet_a0_3d_stream_and_freeze():
    model = build_movinet(num_classes=3, frames=4, size=32, model_id="a0", conv_type="3d", freeze=2)
    assert model(_clip(2, 4, 32)).shape == (2, 3)
    assert not model.backbone.get_layer("stem").trainable and not model.backbone.get_layer("block0_layer0").trainable
    assert model.backbone.get_layer("block1_layer0").trainable
    stream = build_movinet(num_classes=3, frames=4, size=32, model_id="a0", stream=True)
    assert stream.name == "movinet_a0_stream" and stream(_clip(1, 4, 32)).shape == (1, 3)


def test_movinet_rejects_small_input_and_bad_freeze():
    with pytest.raises(ValueError, match=r"size >= 32.*size=16"):
        build_movinet(num_classes=3, frames=4, size=16)
    with pytest.raises(ValueError, match="model_id"):
        build_movinet(num_classes=3, model_id="a9")


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
