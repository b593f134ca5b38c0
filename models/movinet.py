"""MoViNet a0-a5 (Kondratyuk et al., "MoViNets: Mobile Video Networks for
Efficient Video Recognition", CVPR 2021), from tf-models-official.

The network is ``official.projects.movinet`` (a tf_keras model); this module
adds what the suite's builder contract asks for: uint8 input with the
[0, 1] scaling inside the model, a fresh classifier head for ``num_classes``,
dropout, freezing the first K blocks, the causal (streaming) variant, and
loading a released checkpoint into the backbone.

TensorFlow is imported inside the builder, so ``import models`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from models.registry import Option, register_model

__all__ = ["MOVINET_VARIANTS", "build_movinet", "load_movinet_backbone", "movinet_blocks"]

MOVINET_VARIANTS = ("a0", "a1", "a2", "a3", "a4", "a5")
# The released streaming checkpoints add a positional encoding on a3-a5.
_POSITIONAL_ENCODING = {"a3", "a4", "a5"}
# Spatial stride of the backbone (stem 2 x four stride-2 blocks).
_SPATIAL_STRIDE = 32


def build_movinet(
    *,
    num_classes: int,
    # input
    frames: int = 20,
    size: int = 172,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    # architecture
    model_id: str = "a0",
    stream: bool = False,
    conv_type: str | None = None,
    # training
    dropout: float = 0.5,
    bn_momentum: float = 0.99,
    stochastic_depth: float = 0.0,
    freeze: int = 0,
    unfreeze_last: int | None = None,
    pretrained: str | None = None,
    pretrained_partial: bool = False,
):
    """MoViNet classifier taking uint8 clips ``(B, frames, size, size, 3)`` RGB.

    Variants (Kinetics-600 top-1 of the released base models, input):
    a0 72.3 (50x172²), a1 76.7 (50x172²), a2 78.6 (50x224²), a3 81.8
    (120x256²), a4 83.5 (80x290²), a5 84.3 (120x320²); the suite trains all at
    20x172² by default, as in the seed thesis.

    Released checkpoints (for users with internet; the cluster needs the
    local copy)::

        wget https://storage.googleapis.com/tf_model_garden/vision/movinet/movinet_a0_base.tar.gz
        tar -xzf movinet_a0_base.tar.gz     # -> movinet_a0_base/ckpt-1.{index,data-*}
        python main/train_movinet.py --variant a0 --pretrained movinet_a0_base ...
        # streaming: movinet_a0_stream.tar.gz with --stream

    Args:
        num_classes: classes of the new head.
        frames: clip length (any >= 1: MoViNet has no temporal stride).
        size: input side; >= 32 (the backbone's spatial stride).
        mean: per-channel mean on [0, 1] pixels (0: MoViNet takes [0, 1] RGB).
        std: per-channel std on [0, 1] pixels (1).
        model_id: ``a0`` ... ``a5``.
        stream: the causal variant (causal convolutions and pooling, the
            released ``*_stream`` configuration: (2+1)D convs, 2+3D
            squeeze-excitation, hard-swish). Trained on whole clips here; the
            same weights run frame by frame with external states.
        conv_type: ``3d`` (the released base checkpoints), ``2plus1d``
            (about 30x faster on CPU) or ``3d_2plus1d``; None = the released
            configuration of the variant (3d base, 2plus1d stream).
        dropout: dropout rate before the classifier.
        bn_momentum: BatchNorm moving-average momentum of the backbone
            (``norm_momentum``; Keras convention, 0.99 as in the released
            configurations). Evaluation uses the moving statistics, which
            after N steps still weigh their initial (0, 1) by momentum**N:
            lower it (e.g. 0.9) for runs of only a few hundred steps.
        stochastic_depth: drop rate of the residual blocks
            (``stochastic_depth_drop_rate``; 0 upstream, 0.1 in the seed thesis).
        freeze: freeze the first K of the blocks listed by :func:`movinet_blocks`
            (stem, block0..blockN, backbone head conv).
        unfreeze_last: train only the last K layers of ``backbone.layers``
            (the seed thesis unfroze the last 45 of a4); the head always trains.
        pretrained: a released checkpoint (directory or ``ckpt-N`` prefix)
            loaded into the backbone; the head stays fresh.
        pretrained_partial: accept a checkpoint that leaves backbone variables unloaded.

    Returns:
        A tf_keras Model with ``.backbone`` (the Movinet) and ``.head``.

    Raises:
        ValueError: unknown model_id, input too small, freeze too large, or a
            checkpoint that does not fit this backbone.
    """
    # tf_env first: it sets TF_USE_LEGACY_KERAS before TensorFlow loads.
    from utils.core.tf_env import tf_keras

    # isort: split
    from official.projects.movinet.modeling import movinet, movinet_layers

    from models._keras_common import unfreeze_last_layers

    if model_id not in MOVINET_VARIANTS:
        raise ValueError(f"model_id expected one of {MOVINET_VARIANTS}, received {model_id!r}")
    if size < _SPATIAL_STRIDE or frames < 1:
        raise ValueError(
            f"movinet_{model_id} needs size >= {_SPATIAL_STRIDE} (its spatial stride) and frames >= 1, "
            f"received frames={frames}, size={size}; raise --size"
        )
    released = (
        {"conv_type": "2plus1d", "se_type": "2plus3d", "activation": "hard_swish", "gating_activation": "hard_sigmoid"}
        if stream
        else {"conv_type": "3d", "se_type": "3d", "activation": "swish", "gating_activation": "sigmoid"}
    )
    if not 0.0 <= bn_momentum < 1.0:
        raise ValueError(f"bn_momentum expected in [0, 1), received {bn_momentum}")
    if not 0.0 <= stochastic_depth < 1.0:
        raise ValueError(f"stochastic_depth expected in [0, 1), received {stochastic_depth}")
    if conv_type is not None:
        released["conv_type"] = conv_type
    shape = (frames, size, size, 3)
    backbone = movinet.Movinet(
        model_id=model_id,
        causal=stream,
        use_positional_encoding=stream and model_id in _POSITIONAL_ENCODING,
        input_specs=tf_keras.layers.InputSpec(shape=(None, *shape)),
        norm_momentum=bn_momentum,
        stochastic_depth_drop_rate=stochastic_depth,
        **released,
    )
    head = movinet_layers.ClassifierHead(
        head_filters=backbone.head_filters,
        num_classes=num_classes,
        dropout_rate=dropout,
        conv_type=backbone.conv_type,
        activation=released["activation"],
        name="classifier_head",
    )
    # Movinet builds its skip-projection BatchNorms without norm_momentum
    # (tf-models-official 2.20 keeps their 0.99); momentum is read at call
    # time, so setting it here reaches every BatchNorm of the backbone.
    for layer in backbone.submodules:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    if pretrained:
        load_movinet_backbone(backbone, pretrained)
    _freeze(backbone, freeze)
    if unfreeze_last is not None:
        unfreeze_last_layers(backbone.layers, unfreeze_last, f"movinet_{model_id}")
    model = _uint8_model(tf_keras)(
        backbone, head, mean=mean, std=std, name=f"movinet_{model_id}{'_stream' if stream else ''}"
    )
    # One symbolic pass creates the head's variables. (A functional wrapper
    # around MovinetClassifier would trace the backbone twice more: ~10 s each.)
    model.build((None, *shape))
    return model


def _uint8_model(tf_keras):
    """The model class, defined lazily so TensorFlow is imported only when building."""
    import numpy as np

    from models._keras_common import normalisation

    class MovinetUint8(tf_keras.Model):
        """uint8 clips -> (x / 255 - mean) / std -> MoViNet backbone -> classifier head -> float32 logits."""

        def __init__(self, backbone, head, mean, std, **kwargs):
            super().__init__(**kwargs)
            self.backbone, self.head = backbone, head
            # numpy, not tuples: Keras would wrap a tuple attribute for tracking.
            scale, offset = normalisation(mean, std)
            self._scale, self._offset = np.asarray(scale, np.float32), np.asarray(offset, np.float32)

        def call(self, clips, training=None):
            from utils.core.tf_env import tf

            # MoViNet was trained on [0, 1] RGB (mean 0, std 1): normalise here so loaders ship uint8.
            dtype = self.compute_dtype
            x = tf.cast(clips, dtype) * tf.cast(self._scale, dtype) + tf.cast(self._offset, dtype)
            endpoints, _states = self.backbone(x, training=training)
            logits = self.head(endpoints["head"], training=training)
            # float32 even under a mixed policy: the loss needs the range.
            return tf.cast(logits, tf.float32)

    return MovinetUint8


def movinet_blocks(backbone) -> list[list]:
    """The backbone's layers grouped into freezable blocks, input side first."""
    groups: dict[str, list] = {}
    for layer in backbone.layers:
        if layer.name == "inputs" or layer.name.startswith("state_"):
            continue
        groups.setdefault(layer.name.split("_layer")[0], []).append(layer)
    return list(groups.values())


def _freeze(backbone, freeze: int) -> None:
    blocks = movinet_blocks(backbone)
    if not 0 <= freeze <= len(blocks):
        raise ValueError(f"freeze expected 0..{len(blocks)} blocks for {backbone.name}, received {freeze}")
    for block in blocks[:freeze]:
        for layer in block:
            layer.trainable = False


def load_movinet_backbone(backbone, path: str | Path) -> None:
    """Restore a released MoViNet checkpoint (``tf.train.Checkpoint(model=...)``) into ``backbone``.

    The releases save a MovinetClassifier, whose backbone is its first layer
    with weights (``model/layer_with_weights-0``); the head
    (``layer_with_weights-1``) is left out, so any class count loads.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the checkpoint is another variant or configuration.
    """
    from utils.core.tf_env import tf

    path = Path(path)
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
    if not prefix or not Path(f"{prefix}.index").is_file():
        raise FileNotFoundError(
            f"no MoViNet checkpoint at {path} (expected a directory with ckpt-N.index, or a ckpt-N prefix); "
            "download and unpack a release, see models/movinet.py"
        )
    reader = tf.train.Checkpoint(model=tf.train.Checkpoint(**{"layer_with_weights-0": backbone}))
    status = reader.restore(prefix).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(
            f"checkpoint {prefix} does not fit {backbone.name} (model_id, conv_type or --stream differ?): "
            f"{str(e).splitlines()[0][:300]}"
        ) from None


# MoViNet: stem + 5 block groups; light models take larger batches and were
# trained with RMSprop/SGD-like rates around 1e-3..1e-2 on Kinetics.
_SPACE = {
    "lr": {"kind": "float", "min": 3e-4, "max": 3e-2, "sampling": "log"},
    "freeze": {"kind": "int", "min": 0, "max": 4},
    "batch_size": {"kind": "choice", "values": [8, 16, 32]},
}
_OPTIONS = (
    Option("conv_type", str, None, "3d (the released base checkpoints), 2plus1d (~30x faster on CPU) or 3d_2plus1d; "
           "default: the released configuration", choices=("3d", "2plus1d", "3d_2plus1d")),
    Option("bn_momentum", float, 0.99, "BatchNorm moving-average momentum (Keras convention)"),
    Option("stochastic_depth", float, 0.0, "drop rate of the residual blocks (0.1 in the seed thesis)"),
)  # fmt: skip

for _i, _variant in enumerate(MOVINET_VARIANTS):
    register_model(
        f"movinet_{_variant}",
        family="movinet",
        framework="keras",
        display=f"MoViNet-{_variant.upper()}",
        order=10 + _i,
        frames=20,
        size=172,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        space=_SPACE,
        tune_default=_variant == "a0",
        streaming=True,
        options=_OPTIONS,
        description=f"MoViNet-{_variant.upper()} (tf-models-official), [0,1] input; --stream for the causal variant",
        kwargs={"model_id": _variant},
    )(build_movinet)
