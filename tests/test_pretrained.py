"""Pretrained loading against the upstream architectures, saved in the release file layouts.

Every reference here is built with the upstream code (tf-models-official's
MovinetClassifier, pytorchvideo's hub X3D builders, torchvision's s3d) or, for
I3D, layer by layer under the names and settings of the Keras I3D release
(dlpbc/keras-kinetics-i3d ``i3d_inception.py``). Its weights are randomised
(moving statistics included), saved the way the release files are, and loaded
with the suite's builders: every backbone tensor must arrive unchanged, the
head must be new, and files that do not fit must be refused with a message
that says what the file is and what to do.

Never the suite's own saved models: those would pass whatever the real
format was. Small variants, tiny inputs; each reference is built once per
module (building MoViNet-a3 costs the most).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from models.i3d import build_i3d, load_i3d_weights
from models.movinet import build_movinet, load_movinet_backbone
from utils.core.tf_env import tf, tf_keras

torch = pytest.importorskip("torch")

from models.s3d import S3D_HEAD, build_s3d  # noqa: E402
from models.x3d import X3D_HEAD, build_x3d  # noqa: E402

REPORT_KEYS = {
    "file",
    "tensors_loaded",
    "unused",
    "unused_count",
    "skipped_head",
    "skipped_head_count",
    "left",
    "left_count",
    "partial",
    "adapted",
    "adapted_count",
}


def _check_report(report, *, file, loaded, unused=0, head=None, left=0, partial=False):
    """The report is plain JSON and says what was loaded from which file."""
    assert set(report) == REPORT_KEYS
    assert json.loads(json.dumps(report)) == report
    assert report["file"] == os.path.abspath(file)
    assert report["tensors_loaded"] == loaded
    assert (report["unused_count"], report["left_count"], report["partial"]) == (unused, left, partial)
    assert len(report["unused"]) == min(unused, 10) and len(report["left"]) == min(left, 10)
    if head is not None:
        assert report["skipped_head_count"] == head


# --------------------------------------------------------------------------- I3D
# Branch widths of the Keras I3D release's Mixed blocks (i3d_inception.py):
# 0a 1x1, 1a 1x1, 1b 3x3, 2a 1x1, 2b 3x3, 3b 1x1 after the 3x3x3 max pool.
RELEASE_MIXED = {
    "3b": (64, 96, 128, 16, 32, 32),
    "3c": (128, 128, 192, 32, 96, 64),
    "4b": (192, 96, 208, 16, 48, 64),
    "4c": (160, 112, 224, 24, 64, 64),
    "4d": (128, 128, 256, 24, 64, 64),
    "4e": (112, 144, 288, 32, 64, 64),
    "4f": (256, 160, 320, 32, 128, 128),
    "5b": (256, 160, 320, 32, 128, 128),
    "5c": (384, 192, 384, 48, 128, 128),
}
I3D_HEAD = "Conv3d_6a_1x1_conv"


def _release_conv3d_bn(x, filters, kernel, name, strides=(1, 1, 1)):
    """The release's conv3d_bn: ``name_conv`` (no bias), ``name_bn`` (scale=False, Keras defaults), ReLU ``name``."""
    layers = tf_keras.layers
    x = layers.Conv3D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=4, scale=False, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=name)(x)


def _release_i3d(clip):
    """Inception_Inflated3d(include_top=False) of the Keras I3D release, up to its global_avg_pool."""
    layers = tf_keras.layers
    x = _release_conv3d_bn(clip, 64, (7, 7, 7), "Conv3d_1a_7x7", strides=(2, 2, 2))
    x = layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="MaxPool2d_2a_3x3")(x)
    x = _release_conv3d_bn(x, 64, (1, 1, 1), "Conv3d_2b_1x1")
    x = _release_conv3d_bn(x, 192, (3, 3, 3), "Conv3d_2c_3x3")
    x = layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="MaxPool2d_3a_3x3")(x)
    pools = {"4b": ((3, 3, 3), "MaxPool2d_4a_3x3"), "5b": ((2, 2, 2), "MaxPool2d_5a_2x2")}
    for key, (w0, w1a, w1b, w2a, w2b, w3) in RELEASE_MIXED.items():
        if key in pools:
            size, name = pools[key]
            x = layers.MaxPooling3D(size, strides=(2, 2, 2), padding="same", name=name)(x)
        b0 = _release_conv3d_bn(x, w0, (1, 1, 1), f"Conv3d_{key}_0a_1x1")
        b1 = _release_conv3d_bn(x, w1a, (1, 1, 1), f"Conv3d_{key}_1a_1x1")
        b1 = _release_conv3d_bn(b1, w1b, (3, 3, 3), f"Conv3d_{key}_1b_3x3")
        b2 = _release_conv3d_bn(x, w2a, (1, 1, 1), f"Conv3d_{key}_2a_1x1")
        b2 = _release_conv3d_bn(b2, w2b, (3, 3, 3), f"Conv3d_{key}_2b_3x3")
        b3 = layers.MaxPooling3D((3, 3, 3), strides=(1, 1, 1), padding="same", name=f"MaxPool2d_{key}_3a_3x3")(x)
        b3 = _release_conv3d_bn(b3, w3, (1, 1, 1), f"Conv3d_{key}_3b_1x1")
        x = layers.Concatenate(axis=4, name=f"Mixed_{key}")([b0, b1, b2, b3])
    # The release's no-top ending: a (2, h, w) average pool (16 frames x 32² leave 2 x 1²).
    return layers.AveragePooling3D((2, 1, 1), strides=(1, 1, 1), padding="valid", name="global_avg_pool")(x)


def _randomise_keras(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            # Positive values keep moving variances valid; distinct per tensor.
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])


@pytest.fixture(scope="module")
def i3d_release(tmp_path_factory):
    """The Keras I3D release saved with save_weights: no-top (the one users get), with-top, and broken files."""
    layers = tf_keras.layers
    tf_keras.backend.clear_session()
    clip = tf_keras.Input((16, 32, 32, 3))
    features = _release_i3d(clip)
    no_top = tf_keras.Model(clip, features, name="i3d_inception")
    logits = layers.Conv3D(400, (1, 1, 1), use_bias=True, name=I3D_HEAD)(layers.Dropout(0.0)(features))
    with_top = tf_keras.Model(clip, logits, name="i3d_inception")
    _randomise_keras(with_top, seed=1)
    root = tmp_path_factory.mktemp("i3d_release")
    files = {
        "no_top": root / "rgb_inception_i3d_imagenet_and_kinetics_tf_dim_ordering_tf_kernels_no_top.h5",
        "with_top": root / "rgb_inception_i3d_imagenet_and_kinetics_tf_dim_ordering_tf_kernels.h5",
        "stem_only": root / "stem_only.h5",
        "flow_stem": root / "flow_stem.h5",
        "extra": root / "with_extra_layer.h5",
    }
    no_top.save_weights(str(files["no_top"]))
    with_top.save_weights(str(files["with_top"]))
    # A file holding only the Conv3d_1a layers (of the same release).
    stem_in = tf_keras.Input((16, 32, 32, 3))
    stem = tf_keras.Model(stem_in, _release_conv3d_bn(stem_in, 64, (7, 7, 7), "Conv3d_1a_7x7", strides=(2, 2, 2)))
    stem.get_layer("Conv3d_1a_7x7_conv").set_weights(no_top.get_layer("Conv3d_1a_7x7_conv").get_weights())
    stem.get_layer("Conv3d_1a_7x7_bn").set_weights(no_top.get_layer("Conv3d_1a_7x7_bn").get_weights())
    stem.save_weights(str(files["stem_only"]))
    # The optical-flow release's first conv takes 2 channels.
    flow_in = tf_keras.Input((16, 32, 32, 2))
    tf_keras.Model(flow_in, _release_conv3d_bn(flow_in, 64, (7, 7, 7), "Conv3d_1a_7x7")).save_weights(
        str(files["flow_stem"])
    )
    # The whole release plus a layer no I3D has.
    extra = layers.Conv3D(8, (1, 1, 1), name="Conv3d_9z_extra_conv")(features)
    tf_keras.Model(clip, [features, extra]).save_weights(str(files["extra"]))
    weights = {layer.name: layer.get_weights() for layer in with_top.layers if layer.weights}
    tf_keras.backend.clear_session()
    return weights, files


def _assert_i3d_backbone_from_release(model, weights):
    loaded = 0
    for name, values in weights.items():
        if name == I3D_HEAD:
            continue
        ours = model.get_layer(name).get_weights()
        assert len(ours) == len(values), name
        for a, b in zip(ours, values):
            np.testing.assert_array_equal(a, b, err_msg=name)
            loaded += 1
    return loaded


def test_i3d_release_no_top_loads_every_backbone_tensor(i3d_release):
    weights, files = i3d_release
    tf_keras.utils.set_random_seed(3)
    model = build_i3d(num_classes=3, frames=8, size=32, pretrained=str(files["no_top"]))
    loaded = _assert_i3d_backbone_from_release(model, weights)
    assert loaded == 57 * 4  # 57 conv units: kernel + BN beta, moving mean, moving variance
    backbone = {layer.name for layer in model.layers if layer.weights} - {I3D_HEAD}
    assert backbone == set(weights) - {I3D_HEAD}  # nothing of the backbone is left out
    tf_keras.utils.set_random_seed(3)
    fresh = build_i3d(num_classes=3, frames=8, size=32)
    for a, b in zip(model.get_layer(I3D_HEAD).get_weights(), fresh.get_layer(I3D_HEAD).get_weights()):
        np.testing.assert_array_equal(a, b)  # the head is the seeded initial one
    _check_report(model.pretrained_report, file=files["no_top"], loaded=loaded, head=0)
    assert fresh.pretrained_report is None


def test_i3d_release_with_top_skips_the_kinetics_head(i3d_release):
    weights, files = i3d_release
    model = build_i3d(num_classes=5, frames=8, size=32, pretrained=str(files["with_top"]))
    loaded = _assert_i3d_backbone_from_release(model, weights)
    assert model.get_layer(I3D_HEAD).get_weights()[0].shape == (1, 1, 1, 1024, 5)
    _check_report(model.pretrained_report, file=files["with_top"], loaded=loaded, head=1)
    assert model.pretrained_report["skipped_head"] == [I3D_HEAD]


@pytest.fixture(scope="module")
def i3d_target():
    """A suite I3D for the files that must be refused (a refused file assigns nothing, so it can be shared)."""
    return build_i3d(num_classes=3, frames=8, size=32)


def test_i3d_file_with_only_the_stem_is_refused_unless_partial(i3d_release, i3d_target):
    weights, files = i3d_release
    before = [w.copy() for w in i3d_target.get_layer("Conv3d_1a_7x7_conv").get_weights()]
    with pytest.raises(
        ValueError, match=r"leaves 112 of i3d's 114 backbone layers unloaded: Conv3d_2b_1x1_conv, .*pretrained-partial"
    ):
        load_i3d_weights(i3d_target, files["stem_only"])
    np.testing.assert_array_equal(before[0], i3d_target.get_layer("Conv3d_1a_7x7_conv").get_weights()[0])

    model = build_i3d(num_classes=3, frames=8, size=32, pretrained=str(files["stem_only"]), pretrained_partial=True)
    for name in ("Conv3d_1a_7x7_conv", "Conv3d_1a_7x7_bn"):
        for a, b in zip(model.get_layer(name).get_weights(), weights[name]):
            np.testing.assert_array_equal(a, b)
    report = model.pretrained_report
    _check_report(report, file=files["stem_only"], loaded=4, left=112, partial=True)
    assert report["left"][:3] == ["Conv3d_2b_1x1_conv", "Conv3d_2b_1x1_bn", "Conv3d_2c_3x3_conv"]


def test_i3d_unused_file_layers_are_reported(i3d_release):
    weights, files = i3d_release
    with pytest.warns(UserWarning, match=r"1 weighted layer\(s\) .*match no i3d layer.*Conv3d_9z_extra_conv"):
        model = build_i3d(num_classes=3, frames=8, size=32, pretrained=str(files["extra"]))
    _assert_i3d_backbone_from_release(model, weights)
    report = model.pretrained_report
    _check_report(report, file=files["extra"], loaded=228, unused=1, head=0)
    assert report["unused"] == ["Conv3d_9z_extra_conv"]


def test_i3d_files_that_do_not_fit_say_so(i3d_release, i3d_target, tmp_path):
    _weights, files = i3d_release
    with pytest.raises(ValueError, match=r"layer Conv3d_1a_7x7_conv holds shapes \[\(7, 7, 7, 2, 64\)\]"):
        load_i3d_weights(i3d_target, files["flow_stem"], partial=True)
    garbage = tmp_path / "rgb.h5"
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(ValueError, match=r"rgb\.h5 is not an HDF5 file .*Keras I3D"):
        load_i3d_weights(i3d_target, garbage)
    with pytest.raises(FileNotFoundError, match="no I3D weights file"):
        load_i3d_weights(i3d_target, tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="pretrained_partial=True needs a pretrained file"):
        build_i3d(num_classes=3, frames=8, size=32, pretrained_partial=True)


# --------------------------------------------------------------------------- MoViNet
def _release_movinet(model_id, *, stream, positional_encoding=False):
    """A backbone configured as the README's release examples (base: 3d defaults; stream: (2+1)D, causal)."""
    from official.projects.movinet.modeling import movinet

    if not stream:
        return movinet.Movinet(model_id=model_id, causal=False, use_external_states=False)
    return movinet.Movinet(
        model_id=model_id,
        causal=True,
        conv_type="2plus1d",
        se_type="2plus3d",
        activation="hard_swish",
        gating_activation="hard_sigmoid",
        use_positional_encoding=positional_encoding,
        use_external_states=True,
    )


def _save_movinet_release(backbone, directory, seed):
    """MovinetClassifier(backbone, num_classes=600) saved as the releases: tf.train.Checkpoint(model=...)."""
    from official.projects.movinet.modeling.movinet_model import MovinetClassifier

    classifier = MovinetClassifier(backbone, num_classes=600, output_states=True)
    rng = np.random.default_rng(seed)
    for variable in classifier.variables:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(variable.dtype.as_numpy_dtype))
    tf.train.Checkpoint(model=classifier).save(str(directory / "ckpt"))  # -> ckpt-1.{index,data-*}, checkpoint
    return classifier


@pytest.fixture(scope="module")
def movinet_releases(tmp_path_factory):
    """Release checkpoints of a0 base, a0 stream and a3 stream (with positional encoding), built lazily."""
    built = {}

    def get(kind):
        if kind not in built:
            model_id, stream = {"a0_base": ("a0", False), "a0_stream": ("a0", True), "a3_stream": ("a3", True)}[kind]
            directory = tmp_path_factory.mktemp(f"movinet_{kind}")
            backbone = _release_movinet(model_id, stream=stream, positional_encoding=model_id == "a3")
            classifier = _save_movinet_release(backbone, directory, seed=len(built))
            built[kind] = (backbone, classifier, directory)
        return built[kind]

    return get


@pytest.fixture(scope="module")
def movinet_loaded(movinet_releases):
    """The suite's MoViNet built with each release as --pretrained (shared: building is the slow part)."""
    built = {}

    def get(kind):
        if kind not in built:
            _backbone, _classifier, directory = movinet_releases(kind)
            model_id, stream = kind.split("_")
            tf_keras.utils.set_random_seed(7)
            built[kind] = build_movinet(
                num_classes=3,
                frames=2,
                size=32,
                model_id=model_id,
                stream=stream == "stream",
                pretrained=str(directory),
            )
        return built[kind]

    return get


# a3 costs ~50 s on 2 cores (four symbolic passes of its backbone: reference, classifier, suite, suite head).
@pytest.mark.parametrize("kind", ["a0_base", "a0_stream", pytest.param("a3_stream", marks=pytest.mark.slow)])
def test_movinet_release_loads_every_backbone_tensor_and_a_fresh_head(movinet_releases, movinet_loaded, kind):
    backbone, classifier, directory = movinet_releases(kind)
    model = movinet_loaded(kind)
    theirs, ours = backbone.variables, model.backbone.variables
    assert len(theirs) == len(ours) > 300
    for a, b in zip(theirs, ours):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    if kind == "a3_stream":
        assert sum(v.name == "scale:0" for v in ours) > 0  # the positional encoding's scales came too
    release_head = classifier.layers[-1]
    assert [w.shape for w in release_head.weights] != [w.shape for w in model.head.weights]  # 600 -> 3 classes
    projection = [w for w in model.head.weights if "/head/" in w.name and w.shape.rank > 1]
    release_projection = [w for w in release_head.weights if "/head/" in w.name and w.shape.rank > 1]
    assert projection and [w.shape for w in projection] == [w.shape for w in release_projection]
    assert not np.array_equal(projection[0].numpy(), release_projection[0].numpy())  # same shape, still fresh
    prefix = tf.train.latest_checkpoint(str(directory))
    _check_report(model.pretrained_report, file=prefix, loaded=len(theirs), head=len(release_head.weights))


def test_movinet_release_of_another_configuration_is_refused_untouched(movinet_releases, movinet_loaded):
    model = movinet_loaded("a0_base")
    before = [v.numpy().copy() for v in model.backbone.variables]
    _b, _c, stream_dir = movinet_releases("a0_stream")
    with pytest.raises(ValueError, match=r"does not fit .*a0.*causal=False.*--stream"):
        load_movinet_backbone(model.backbone, stream_dir)
    for a, b in zip(before, model.backbone.variables):
        np.testing.assert_array_equal(a, b.numpy())  # a refused file leaves nothing behind


def test_movinet_unused_checkpoint_values_are_reported(movinet_releases, tmp_path):
    """A training checkpoint (model + optimizer) and a backbone with a positional encoding the model lacks."""
    backbone, classifier, _directory = movinet_releases("a0_stream")
    # Its own target: loading other checkpoints into the shared loaded model would change what the
    # release test (which may run later, in random order) compares.
    target = _release_movinet("a0", stream=True, positional_encoding=False)
    optimizer = tf_keras.optimizers.SGD(momentum=0.9)
    optimizer.build(classifier.trainable_variables)
    tf.train.Checkpoint(model=classifier, optimizer=optimizer).save(str(tmp_path / "train" / "ckpt"))
    with pytest.warns(UserWarning, match=r"values in .* fit nothing in the backbone"):
        report = load_movinet_backbone(target, tmp_path / "train")
    n_optimizer = sum(
        1 for key, _shape in tf.train.list_variables(str(tmp_path / "train")) if key.startswith("optimizer/")
    )
    assert n_optimizer > len(optimizer.variables()) > 100  # slots, iterations and the learning rate
    assert report["unused_count"] == n_optimizer and all(k.startswith("optimizer/") for k in report["unused"])
    assert report["tensors_loaded"] == len(backbone.variables) and report["left_count"] == 0

    # The same a0 stream backbone with a positional encoding (as a3-a5 have): its scales are unused here...
    posenc = _release_movinet("a0", stream=True, positional_encoding=True)
    n_scales = len(posenc.variables) - len(backbone.variables)
    assert n_scales > 0
    tf.train.Checkpoint(model=tf.train.Checkpoint(**{"layer_with_weights-0": posenc})).save(str(tmp_path / "pe/ckpt"))
    with pytest.warns(UserWarning, match="fit nothing"):
        report = load_movinet_backbone(target, tmp_path / "pe")
    assert report["unused_count"] == n_scales and all("/_pos_encoding/" in k for k in report["unused"])
    # ... and missing the other way round: refused, unless a partial load is asked for.
    _b, _c, stream_dir = movinet_releases("a0_stream")
    with pytest.raises(ValueError, match=rf"{n_scales} backbone variable\(s\) have no value .*pretrained-partial"):
        load_movinet_backbone(posenc, stream_dir)
    report = load_movinet_backbone(posenc, stream_dir, partial=True)
    assert (report["left_count"], report["partial"], report["tensors_loaded"]) == (
        n_scales,
        True,
        len(backbone.variables),
    )


def test_movinet_missing_checkpoint_is_a_clear_error(movinet_loaded, tmp_path):
    with pytest.raises(FileNotFoundError, match="no MoViNet checkpoint"):
        load_movinet_backbone(movinet_loaded("a0_base").backbone, tmp_path / "nothing")


# --------------------------------------------------------------------------- X3D and S3D
def _upstream_torch(name):
    from models._torchvision_compat import import_torchvision

    tv = import_torchvision()
    if name == "s3d":
        return tv.models.video.s3d(weights=None)
    import pytorchvideo.models.hub as hub  # only pytorchvideo.models: its transforms break on import

    return getattr(hub, name)(pretrained=False)


def _randomised_state(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in net.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            else:
                value.fill_(7)  # num_batches_tracked
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def torch_releases(tmp_path_factory):
    """Upstream X3D-XS/S and S3D with random weights, saved in the release layouts and variations of them."""
    root = tmp_path_factory.mktemp("torch_releases")
    out = {}
    for name in ("x3d_xs", "x3d_s", "s3d"):
        net = _upstream_torch(name)
        state = _randomised_state(net, seed=len(out))
        no_counts = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        # The upstream's own strict load accepts a state dict without the counters.
        _upstream_torch(name).load_state_dict(no_counts)
        files = {}
        if name == "s3d":
            files["release"] = root / "s3d-d76dad2f.pth"  # torchvision: a plain state dict
            torch.save(state, files["release"])
            torch.save(no_counts, root / "s3d_no_counts.pth")
            files["no_counts"] = root / "s3d_no_counts.pth"
        else:
            files["release"] = root / f"{name.upper()}.pyth"  # pytorchvideo model zoo: {"model_state": ...}
            torch.save({"model_state": state}, files["release"])
            files["no_counts"] = root / f"{name}_no_counts.pyth"
            torch.save({"model_state": no_counts}, files["no_counts"])
            # PySlowFast (PTVX3D wraps create_x3d as .model): its save_checkpoint layout.
            files["pyslowfast"] = root / f"{name}_pyslowfast.pyth"
            optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
            torch.save(
                {
                    "epoch": 300,
                    "model_state": {f"model.{k}": v for k, v in state.items()},
                    "optimizer_state": optimizer.state_dict(),
                    "cfg": "MODEL:\n  ARCH: x3d\n  MODEL_NAME: PTVX3D\n",
                },
                files["pyslowfast"],
            )
        out[name] = (state, files)
    return out


def _build_torch(name, **kw):
    torch.manual_seed(0)
    if name == "s3d":
        return build_s3d(num_classes=3, frames=8, size=32, **kw)
    return build_x3d(num_classes=3, frames=4, size=32, model_name=name, **kw)


@pytest.mark.parametrize(
    "name,layout",
    [
        ("x3d_xs", "release"),
        ("x3d_xs", "no_counts"),
        ("x3d_xs", "pyslowfast"),
        ("x3d_s", "release"),
        ("x3d_s", "pyslowfast"),
        ("s3d", "release"),
        ("s3d", "no_counts"),
    ],
)
def test_torch_release_loads_every_backbone_tensor_and_a_fresh_head(torch_releases, name, layout):
    state, files = torch_releases[name]
    head = S3D_HEAD if name == "s3d" else X3D_HEAD
    model = _build_torch(name, pretrained=str(files[layout]))
    fresh = _build_torch(name).net.state_dict()
    loaded = 0
    for key, value in model.net.state_dict().items():
        if key.startswith(head):
            assert value.shape[0] == 3 and torch.equal(value, fresh[key]), key  # the seeded new head
        elif key.endswith("num_batches_tracked") and layout == "no_counts":
            assert value.item() == 0, key  # kept at its start, as upstream's own load does
        else:
            assert torch.equal(value, state[key]), key
            loaded += 1
    assert loaded > 300
    _check_report(
        model.pretrained_report, file=files[layout], loaded=loaded, head=len([k for k in state if k.startswith(head)])
    )
    assert _build_torch(name).pretrained_report is None


def test_torch_partial_file_is_refused_unless_partial(torch_releases, tmp_path):
    state, _files = torch_releases["x3d_xs"]
    stem_and_stage1 = {k: v for k, v in state.items() if k.startswith(("blocks.0.", "blocks.1."))}
    path = tmp_path / "X3D_XS_part.pyth"
    torch.save({"model_state": stem_and_stage1}, path)
    with pytest.raises(ValueError, match=r"missing keys: blocks\.2\..*pretrained-partial"):
        _build_torch("x3d_xs", pretrained=str(path))
    model = _build_torch("x3d_xs", pretrained=str(path), pretrained_partial=True)
    for key, value in stem_and_stage1.items():
        assert torch.equal(model.net.state_dict()[key], value), key
    report = model.pretrained_report
    n_left = sum(1 for k in state if not k.startswith(("blocks.0.", "blocks.1.", *X3D_HEAD)))
    n_left -= sum(
        1 for k in state if k.endswith("num_batches_tracked") and not k.startswith(("blocks.0.", "blocks.1."))
    )
    _check_report(report, file=path, loaded=len(stem_and_stage1), left=n_left, partial=True)


def _unsafe_pickle(path):
    """A whole module pickled (torch.save(model)), as people often share checkpoints."""
    torch.save(_upstream_torch("s3d"), path)


def _truncated(path, source):
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "kind,match",
    [
        ("random", r"is not a PyTorch weights file .*download"),
        ("empty", r"is empty \(0 bytes\)"),
        ("unsafe", r"pickles Python objects \(torchvision\.models\.video\.s3d\.S3D\).*weights_only.*state_dict\(\)"),
        ("truncated", r"is a truncated or damaged PyTorch file.*download it again"),
        ("truncated_legacy", r"is a truncated or damaged PyTorch file"),
        ("html", r"is not a PyTorch weights file .*'<!DOCTYPE html>"),
    ],
)
def test_torch_files_that_are_not_state_dicts_say_what_they_are(torch_releases, tmp_path, kind, match):
    path = tmp_path / "s3d.pth"
    state, files = torch_releases["s3d"]
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "unsafe":
        _unsafe_pickle(path)
    elif kind == "truncated":
        _truncated(path, files["release"])
    elif kind == "truncated_legacy":
        legacy = tmp_path / "legacy.pth"
        torch.save(state, legacy, _use_new_zipfile_serialization=False)
        _truncated(path, legacy)
    else:
        path.write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    with pytest.raises(ValueError, match=match) as info:
        _build_torch("s3d", pretrained=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
