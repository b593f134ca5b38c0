"""2D-CNN frame baseline: MobileNetV2 (Sandler et al., "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018) on every frame, temporal
pooling, then the classifier; in tf_keras.

The per-frame network is ``tf_keras.applications.MobileNetV2`` (width 1.0,
no top) built with ``weights=None``: nothing is downloaded. ``--pretrained``
is a local copy of the keras-applications ImageNet file
``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5``,
read by layer name (the convolutions do not depend on the input side, so
the 224² file fits any ``size``). The model stays a plain functional model
with a uint8 input, which is what the exporters convert.

With ``temporal="avg"`` the clip's frames are an unordered set: a baseline
that shows how much a table's 3D models gain from motion (on the synthetic
set, whose classes differ only by the direction of motion, it stays at
chance). ``temporal="conv"`` adds one small 1D convolution over time.

TensorFlow is imported inside the builder, so ``import models`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from models.registry import Option, register_model

__all__ = ["N_BLOCKS", "TEMPORAL", "build_cnn2d", "frame_blocks", "load_mobilenet_v2_weights"]

TEMPORAL = ("avg", "conv")
N_BLOCKS = 18  # freezable blocks of MobileNetV2: stem, block_1 ... block_16, top (see frame_blocks)
_MIN_SIZE = 32  # MobileNetV2's total stride; keras-applications refuses smaller inputs too
_RELEASE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"  # the keras-applications file
_TEMPORAL_FILTERS = 256  # the 1D conv: 1280 -> 256 channels, kernel 3 (~1 M weights, half the backbone's)


def build_cnn2d(
    *,
    num_classes: int,
    # input
    frames: int = 20,
    size: int = 224,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    # architecture
    temporal: str = "avg",
    # training
    dropout: float = 0.5,
    bn_momentum: float = 0.999,
    freeze: int = 0,
    unfreeze_last: int | None = None,
    pretrained: str | None = None,
    pretrained_partial: bool = False,
):
    """MobileNetV2 on each frame -> temporal pooling -> dropout -> dense, taking uint8 clips ``(B, frames, size, size, 3)``.

    ImageNet top-1 of the released MobileNetV2 1.0 at 224²: 71.8 (the
    paper's Table 4: 72.0); 3.4 M parameters with the 1000-class top,
    2.26 M without.

    Released weights (for users with internet; the cluster needs the local copy)::

        wget https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
        python main/train_cnn2d.py --pretrained mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 ...

    Args:
        num_classes: classes of the new head.
        frames: clip length (any >= 1).
        size: input side; >= 32.
        mean: per-channel mean on [0, 1] pixels (0.5: MobileNetV2's [-1, 1]).
        std: per-channel std on [0, 1] pixels (0.5).
        temporal: ``avg`` (mean of the frame features) or ``conv`` (a
            1D convolution over time, 256 filters, kernel 3, ReLU, then the mean).
        dropout: dropout rate before the classifier.
        bn_momentum: BatchNorm moving-average momentum of the backbone (Keras
            convention; 0.999 as keras-applications builds it). Evaluation
            uses the moving statistics: lower it (e.g. 0.9) for runs of only a
            few hundred steps from scratch.
        freeze: freeze the first K of the 18 blocks of :func:`frame_blocks`
            (stem, block_1 ... block_16, the last 1x1 conv).
        unfreeze_last: train only the last K layers of the per-frame network;
            the temporal layers and the head always train.
        pretrained: the keras-applications no-top ``.h5`` (see above).
        pretrained_partial: accept a file that leaves backbone layers unloaded.

    Returns:
        A functional tf_keras Model named ``cnn2d``; ``get_layer("frames").layer``
        is the per-frame network.

    Raises:
        ValueError: input too small, unknown ``temporal``, freeze out of
            range, or a weights file that does not fit.
        FileNotFoundError: no file at ``pretrained``.
    """
    from models._keras_common import normalisation, unfreeze_last_layers
    from utils.core.tf_env import tf_keras

    if size < _MIN_SIZE or frames < 1:
        raise ValueError(
            f"cnn2d needs size >= {_MIN_SIZE} (MobileNetV2's stride) and frames >= 1, "
            f"received frames={frames}, size={size}; raise --size"
        )
    if temporal not in TEMPORAL:
        raise ValueError(f"temporal expected one of {list(TEMPORAL)}, received {temporal!r}")
    if not 0.0 <= bn_momentum < 1.0:
        raise ValueError(f"bn_momentum expected in [0, 1), received {bn_momentum}")
    if not 0 <= freeze <= N_BLOCKS:
        raise ValueError(f"freeze expected 0..{N_BLOCKS} blocks for cnn2d, received {freeze}")
    if pretrained:
        _check_weights_file(pretrained)  # before the (slow) build
    layers = tf_keras.layers
    backbone = tf_keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    if pretrained:
        load_mobilenet_v2_weights(backbone, pretrained, partial=pretrained_partial)
    for block in frame_blocks(backbone)[:freeze]:
        for layer in block:
            layer.trainable = False
    # One feature vector per frame; a named pooling layer keeps layer names
    # stable whatever else the session has built.
    encoder = tf_keras.Model(
        backbone.input, layers.GlobalAveragePooling2D(name="frame_pool")(backbone.output), name="mobilenet_v2_frame"
    )
    if unfreeze_last is not None:
        unfreeze_last_layers(encoder.layers[1:], unfreeze_last, "cnn2d")

    clip = tf_keras.Input(shape=(frames, size, size, 3), dtype="uint8", name="clip")
    x = layers.Rescaling(*normalisation(mean, std), name="to_pm1")(clip)
    # TimeDistributed folds time into the batch: every frame goes through the same network.
    x = layers.TimeDistributed(encoder, name="frames")(x)  # (B, frames, 1280)
    if temporal == "conv":
        x = layers.Conv1D(_TEMPORAL_FILTERS, 3, padding="same", activation="relu", name="temporal_conv")(x)
    x = layers.GlobalAveragePooling1D(name="temporal_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    # float32 logits even under a mixed policy: the loss needs the range.
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return tf_keras.Model(clip, logits, name="cnn2d")


def frame_blocks(backbone) -> list[list]:
    """MobileNetV2's layers as freezable blocks, input side first: stem, block_1 ... block_16, top (N_BLOCKS)."""
    groups: dict[str, list] = {}
    for layer in backbone.layers:
        name = layer.name
        if type(layer).__name__ == "InputLayer":
            continue
        if name.startswith("block_"):
            key = "_".join(name.split("_")[:2])
        elif name.startswith(("Conv1", "bn_Conv1", "expanded_conv")):
            key = "stem"
        else:
            key = "top"  # Conv_1, Conv_1_bn, out_relu
        groups.setdefault(key, []).append(layer)
    return list(groups.values())


def _check_weights_file(path: str | Path) -> Path:
    """``path`` when it is an HDF5 file; FileNotFoundError / ValueError that say what to do otherwise."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no MobileNetV2 weights file at {path}; download the keras-applications release (see models/cnn2d.py) "
            f"or drop --pretrained"
        )
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not a Keras weights file (HDF5); expected {_RELEASE}")
    return path


def load_mobilenet_v2_weights(backbone, path: str | Path, *, partial: bool = False) -> None:
    """Load a keras-applications MobileNetV2 ``.h5`` into ``backbone`` by layer name.

    The release was written by Keras ``save_weights``: a ``layer_names``
    attribute, one group per layer with its ``weight_names`` in the layer's
    weight order. A file with the top (``..._224.h5``) loads too: its
    classifier has no layer here and is left out.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a Keras weights file, a layer of another shape (another
            width multiplier), or backbone layers the file leaves unloaded
            (unless ``partial``).
    """
    import h5py
    import numpy as np

    path = _check_weights_file(path)
    found, missing = [], []
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f  # a whole-model file nests the weights
        if "layer_names" not in group.attrs:
            raise ValueError(f"{path} is not a Keras weights file (no layer_names); expected {_RELEASE}")
        for layer in (layer for layer in backbone.layers if layer.weights):
            if layer.name not in group:
                missing.append(layer.name)
                continue
            saved = group[layer.name]
            names = [n.decode() if isinstance(n, bytes) else n for n in saved.attrs["weight_names"]]
            values = [np.asarray(saved[n]) for n in names]
            want = [tuple(w.shape) for w in layer.weights]
            if [v.shape for v in values] != want:
                raise ValueError(
                    f"{path}: layer {layer.name} holds shapes {[v.shape for v in values]}, cnn2d expects {want}; "
                    f"is this the width 1.0 MobileNetV2 file ({_RELEASE})?"
                )
            found.append((layer, values))
    if not found:
        raise ValueError(f"{path} shares no layer name with MobileNetV2 (expected Conv1, block_1_expand, ...)")
    if missing and not partial:
        plural = "s" if len(missing) > 1 else ""
        raise ValueError(
            f"{path} leaves {len(missing)} backbone layer{plural} unloaded ({', '.join(missing[:5])}); "
            f"use the complete release file, or accept it with --pretrained-partial"
        )
    # Nothing is set before every check passed: a refused file leaves the backbone as it was.
    for layer, values in found:
        layer.set_weights(values)

register_model(
    "cnn2d",
    family="cnn2d",
    framework="keras",
    display="2D-CNN (MobileNetV2)",
    order=50,
    frames=20,
    size=224,
    # keras-applications' MobileNetV2 preprocess_input maps pixels to [-1, 1].
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    # A light 2D network: larger batches; freeze in steps of 4 of the 18 blocks.
    space={
        "freeze": {"kind": "int", "min": 0, "max": 12, "step": 4},
        "batch_size": {"kind": "choice", "values": [8, 16, 32]},
    },
    tune_default=True,
    options=(
        Option("temporal", str, "avg", "temporal pooling of the frame features: avg (order-free) or conv (1D conv, kernel 3)",
               choices=TEMPORAL),
        Option("bn_momentum", float, 0.999, "BatchNorm moving-average momentum (Keras convention)"),
    ),  # fmt: skip
    description="MobileNetV2 (tf_keras.applications) on every frame + temporal avg/conv pooling, [-1,1] input; "
    "--pretrained the keras-applications ImageNet no-top .h5",
)(build_cnn2d)
