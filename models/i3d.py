"""I3D: Inception-v1 inflated to 3D (Carreira & Zisserman, "Quo Vadis, Action
Recognition? A New Model and the Kinetics Dataset", CVPR 2017), in tf_keras.

Layer names follow the Keras I3D releases (``Conv3d_1a_7x7``,
``MaxPool2d_2a_3x3``, ``Mixed_3b`` ... ``Mixed_5c``; a conv unit ``N`` is the
layers ``N_conv``, ``N_bn`` and ``N``), so their ImageNet+Kinetics RGB weights
(``rgb_imagenet_and_kinetics`` ``.h5``) load by name. The head is global
average pooling, dropout and a 1x1x1 conv ``Conv3d_6a_1x1`` to the classes:
with global pooling any input of at least 8 frames x 32² works.

TensorFlow is imported inside the builder, so ``import models`` stays cheap.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from models.registry import Option, register_model

__all__ = ["I3D_BLOCKS", "build_i3d", "load_i3d_weights"]

# Freezable blocks, input side first (freeze=K freezes the first K).
I3D_BLOCKS = (
    "Conv3d_1a_7x7",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "Mixed_5b",
    "Mixed_5c",
)
# Inception module widths: (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 pool-proj 1x1).
_MIXED = {
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
# Total strides of the network (time, space); inputs below them are all padding.
_MIN_FRAMES = 8
_MIN_SIZE = 32
HEAD = "Conv3d_6a_1x1_conv"


def _unit(layers, x, filters: int, kernel: tuple, name: str, momentum: float, strides=(1, 1, 1)):
    """Conv3D (no bias) + BatchNorm (no scale, as in the release) + ReLU, named like the release."""
    x = layers.Conv3D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=-1, scale=False, momentum=momentum, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=name)(x)


def _mixed(layers, x, key: str, momentum: float):
    b0, b1a, b1b, b2a, b2b, b3 = _MIXED[key]
    branch0 = _unit(layers, x, b0, (1, 1, 1), f"Conv3d_{key}_0a_1x1", momentum)
    branch1 = _unit(layers, x, b1a, (1, 1, 1), f"Conv3d_{key}_1a_1x1", momentum)
    branch1 = _unit(layers, branch1, b1b, (3, 3, 3), f"Conv3d_{key}_1b_3x3", momentum)
    branch2 = _unit(layers, x, b2a, (1, 1, 1), f"Conv3d_{key}_2a_1x1", momentum)
    branch2 = _unit(layers, branch2, b2b, (3, 3, 3), f"Conv3d_{key}_2b_3x3", momentum)
    branch3 = layers.MaxPooling3D((3, 3, 3), strides=(1, 1, 1), padding="same", name=f"MaxPool2d_{key}_3a_3x3")(x)
    branch3 = _unit(layers, branch3, b3, (1, 1, 1), f"Conv3d_{key}_3b_1x1", momentum)
    return layers.Concatenate(axis=-1, name=f"Mixed_{key}")([branch0, branch1, branch2, branch3])


def build_i3d(
    *,
    num_classes: int,
    # input
    frames: int = 20,
    size: int = 224,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    # training
    dropout: float = 0.5,
    bn_momentum: float = 0.99,
    freeze: int = 0,
    unfreeze_last: int | None = None,
    pretrained: str | None = None,
    pretrained_partial: bool = False,
):
    """I3D RGB classifier taking uint8 clips ``(B, frames, size, size, 3)``.

    Pixels are normalised inside the model as ``(x / 255 - mean) / std``;
    the defaults give [-1, 1], as the released Kinetics weights expect. Released weights (for users with internet)::

        wget https://github.com/dlpbc/keras-kinetics-i3d/releases/download/v0.2/rgb_inception_i3d_imagenet_and_kinetics_tf_dim_ordering_tf_kernels_no_top.h5
        python main/train_i3d.py --pretrained rgb_..._no_top.h5 ...

    Args:
        num_classes: classes of the new head.
        frames: clip length; >= 8 (the temporal stride).
        size: input side; >= 32 (the spatial stride).
        mean: per-channel mean on [0, 1] pixels (0.5: the release's [-1, 1]).
        std: per-channel std on [0, 1] pixels (0.5).
        dropout: dropout rate before the classifier (0.5 in the paper).
        bn_momentum: BatchNorm moving-average momentum (Keras convention:
            the share of the old statistics kept per step; 0.99, the Keras
            default the release was built with). Evaluation uses the moving statistics, which after N
            steps still weigh their initial (0, 1) by momentum**N: lower it
            (e.g. 0.9) for runs of only a few hundred steps.
        freeze: freeze the first K of :data:`I3D_BLOCKS` (0..12).
        unfreeze_last: train only the last K layers of the backbone (the
            layers before the head, as Keras lists them); the head always trains.
        pretrained: an ``.h5`` weights file (the Keras I3D release layout)
            loaded by layer name into the backbone; the head stays fresh.
            What was loaded is in the model's ``pretrained_report``.
        pretrained_partial: allow a ``pretrained`` file that leaves backbone
            layers unloaded (recorded in the report); refused otherwise.

    Returns:
        A tf_keras Model named ``i3d``, with ``pretrained_report`` (the
        :func:`load_i3d_weights` dict, or None without ``pretrained``).

    Raises:
        ValueError: input smaller than the strides, freeze out of range, or a
            ``pretrained`` file that does not fit (see :func:`load_i3d_weights`).
    """
    from models._keras_common import normalisation, unfreeze_last_layers
    from models._pretrained import check_partial
    from utils.core.tf_env import tf_keras

    if frames < _MIN_FRAMES or size < _MIN_SIZE:
        raise ValueError(
            f"i3d needs frames >= {_MIN_FRAMES} and size >= {_MIN_SIZE} (its temporal and spatial strides), "
            f"received frames={frames}, size={size}; raise --frames / --size"
        )
    if not 0.0 <= bn_momentum < 1.0:
        raise ValueError(f"bn_momentum expected in [0, 1), received {bn_momentum}")
    if not 0 <= freeze <= len(I3D_BLOCKS):
        raise ValueError(f"freeze expected 0..{len(I3D_BLOCKS)} blocks for i3d, received {freeze}")
    check_partial(pretrained, pretrained_partial)
    layers = tf_keras.layers
    clip = tf_keras.Input(shape=(frames, size, size, 3), dtype="uint8", name="clip")
    x = layers.Rescaling(*normalisation(mean, std), name="to_pm1")(clip)

    x = _unit(layers, x, 64, (7, 7, 7), "Conv3d_1a_7x7", bn_momentum, strides=(2, 2, 2))
    x = layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="MaxPool2d_2a_3x3")(x)
    x = _unit(layers, x, 64, (1, 1, 1), "Conv3d_2b_1x1", bn_momentum)
    x = _unit(layers, x, 192, (3, 3, 3), "Conv3d_2c_3x3", bn_momentum)
    x = layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="MaxPool2d_3a_3x3")(x)
    x = _mixed(layers, x, "3b", bn_momentum)
    x = _mixed(layers, x, "3c", bn_momentum)
    x = layers.MaxPooling3D((3, 3, 3), strides=(2, 2, 2), padding="same", name="MaxPool2d_4a_3x3")(x)
    for key in ("4b", "4c", "4d", "4e", "4f"):
        x = _mixed(layers, x, key, bn_momentum)
    x = layers.MaxPooling3D((2, 2, 2), strides=(2, 2, 2), padding="same", name="MaxPool2d_5a_2x2")(x)
    x = _mixed(layers, x, "5b", bn_momentum)
    x = _mixed(layers, x, "5c", bn_momentum)

    # Global pooling instead of the release's fixed (2, 7, 7) window, so any
    # input size works; at 224² the two agree up to the temporal average.
    x = layers.GlobalAveragePooling3D(keepdims=True, name="global_avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Conv3D(num_classes, (1, 1, 1), use_bias=True, name=HEAD)(x)
    logits = layers.Flatten(name="logits_flat")(x)
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    model = tf_keras.Model(clip, logits, name="i3d")

    report = load_i3d_weights(model, pretrained, partial=pretrained_partial) if pretrained else None
    # Past Keras' attribute tracking: a dict would become a tracked _DictWrapper (a checkpoint dependency, not JSON).
    object.__setattr__(model, "pretrained_report", report)
    if unfreeze_last is not None:
        head = model.layers.index(model.get_layer("global_avg_pool"))
        unfreeze_last_layers(model.layers[:head], unfreeze_last, "i3d")
    frozen = set(I3D_BLOCKS[:freeze])
    for layer in model.layers:
        # A unit's layers share its name as prefix; a Mixed block's are Conv3d_<key>_*.
        block = layer.name.removesuffix("_conv").removesuffix("_bn")
        if block in frozen or any(block.startswith(f"Conv3d_{b[6:]}_") for b in frozen if b.startswith("Mixed_")):
            layer.trainable = False
    return model


def load_i3d_weights(model, path: str | Path, *, partial: bool = False) -> dict:
    """Load a Keras I3D ``.h5`` (``save_weights`` layout) by layer name into ``model``'s backbone.

    The head (``Conv3d_6a_1x1_conv``, in the releases with top) is never
    loaded. Every other layer with weights must come from the file unless
    ``partial``: a file that leaves some unloaded (one holding only
    ``Conv3d_1a``, say) would otherwise train mostly from scratch while the
    run claims pretrained weights. File layers that match no model layer are
    reported (warning and report), as Keras' own by-name loading skips them.
    Nothing is assigned unless the whole file fits.

    Args:
        model: the model of :func:`build_i3d`.
        path: the ``.h5`` file (``save_weights`` layout, or a full-model file
            whose weights sit under ``model_weights``).
        partial: allow backbone layers the file lacks (they keep their initial
            values and are listed in the report).

    Returns:
        The :func:`models._pretrained.pretrained_report` dict; entries are layer names.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an HDF5 file, no layer in common, a layer of other
            shapes (e.g. the optical-flow release), or backbone layers left
            unloaded without ``partial``.
    """
    import h5py

    from models._pretrained import few, pretrained_report

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no I3D weights file at {path}; download the Keras I3D release (see models/i3d.py) or drop --pretrained"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(
            f"{path} is not an HDF5 file ({e}); expected the Keras I3D release .h5 "
            "(rgb_inception_i3d_imagenet_and_kinetics_tf_dim_ordering_tf_kernels_no_top.h5): check the download"
        ) from None
    with f:
        saved = _h5_layers(f)
        ours = [layer for layer in model.layers if layer.weights and layer.name != HEAD]
        plan, left, mismatched = [], [], []
        for layer in ours:
            if layer.name not in saved:
                left.append(layer.name)
                continue
            values = _aligned(layer, saved[layer.name])
            want = [tuple(w.shape) for w in layer.weights]
            if [v.shape for v in values] != want:
                mismatched.append(f"layer {layer.name} holds shapes {[v.shape for v in values]}, i3d expects {want}")
            plan.append((layer, values))
    names = {layer.name for layer in model.layers if layer.weights}
    unused = [name for name in saved if name not in names and name != HEAD]
    if mismatched:
        raise ValueError(
            f"{path}: {'; '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''}; "
            "is this the optical-flow release or another network? Use the RGB release (rgb_..._no_top.h5)"
        )
    if not plan:
        raise ValueError(
            f"{path} shares no layer name with i3d (expected names like Conv3d_1a_7x7_conv, Conv3d_5c_3b_1x1_bn; "
            f"the file has {few(list(saved))}); use the Keras I3D release .h5 (save_weights layout)"
        )
    if left and not partial:
        raise ValueError(
            f"{path} leaves {len(left)} of i3d's {len(ours)} backbone layers unloaded: {few(left)}; "
            "use the whole Keras I3D release (..._no_top.h5), or allow a partial load with --pretrained-partial "
            "(pretrained_partial=True), which trains the missing layers from their initial values"
        )
    for layer, values in plan:
        layer.set_weights(values)
    if unused:
        warnings.warn(
            f"{path}: {len(unused)} weighted layer(s) in the file match no i3d layer and were not loaded: {few(unused)}",
            stacklevel=2,
        )
    return pretrained_report(
        file=path,
        tensors_loaded=sum(len(values) for _layer, values in plan),
        unused=unused,
        skipped_head=[HEAD] if HEAD in saved else [],
        left=left,
        partial=partial,
    )


def _h5_layers(f) -> dict:
    """Layer name -> [(weight name, dataset)] for the layers of a Keras 2 weights file that hold weights."""

    def text(values):
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

    group = f["model_weights"] if "model_weights" in f else f  # full-model files nest the weights
    names = text(group.attrs["layer_names"]) if "layer_names" in group.attrs else list(group.keys())
    layers = {}
    for name in names:
        weight_names = text(group[name].attrs.get("weight_names", [])) if name in group else []
        if weight_names:
            layers[name] = [(w, group[name][w]) for w in weight_names]
    return layers


def _aligned(layer, saved) -> list:
    """The saved arrays in the order of ``layer.weights``: by weight name (``beta``, ``moving_mean``, ...)
    where both sides name the same set, as BatchNorm's three (C,) vectors would pass any shape check in the
    wrong order; else in file order, as Keras' own by-name loading does."""
    import numpy as np

    def base(name):
        return name.rsplit("/", 1)[-1].split(":")[0]

    by_name = {base(n): d for n, d in saved}
    ours = [base(w.name) for w in layer.weights]
    if sorted(by_name) == sorted(ours) and len(by_name) == len(saved):
        return [np.asarray(by_name[n]) for n in ours]
    return [np.asarray(d) for _n, d in saved]


register_model(
    "i3d",
    family="i3d",
    framework="keras",
    display="I3D",
    order=0,
    frames=20,
    size=224,
    # The Keras I3D release (from DeepMind's kinetics-i3d) takes RGB in [-1, 1].
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    # Inception-v1 3D: stem + 5 inception groups; a large model, small batches.
    space={"freeze": {"kind": "int", "min": 0, "max": 4}, "batch_size": {"kind": "choice", "values": [4, 8]}},
    tune_default=True,
    options=(Option("bn_momentum", float, 0.99, "BatchNorm moving-average momentum (Keras convention)"),),
    description="I3D Inception-v1 RGB (tf_keras), [-1,1] input; loads the Keras I3D release by layer name",
)(build_i3d)
