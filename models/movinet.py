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

import importlib
import warnings
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
        pretrained_partial: allow a ``pretrained`` checkpoint that leaves
            backbone variables without a value (recorded in the report);
            refused otherwise.

    Returns:
        A tf_keras Model with ``.backbone`` (the Movinet), ``.head`` and
        ``pretrained_report`` (the :func:`load_movinet_backbone` dict, or
        None without ``pretrained``).

    Raises:
        ValueError: unknown model_id, input too small, freeze too large, or a
            checkpoint that does not fit this backbone.
    """
    # tf_env first: it sets TF_USE_LEGACY_KERAS before TensorFlow loads.
    from utils.core.tf_env import tf_keras

    # isort: split
    from official.projects.movinet.modeling import movinet, movinet_layers

    from models._keras_common import unfreeze_last_layers
    from models._pretrained import check_partial

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
    check_partial(pretrained, pretrained_partial)
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
    report = load_movinet_backbone(backbone, pretrained, partial=pretrained_partial) if pretrained else None
    _freeze(backbone, freeze)
    if unfreeze_last is not None:
        unfreeze_last_layers(backbone.layers, unfreeze_last, f"movinet_{model_id}")
    model = _uint8_model(tf_keras)(
        backbone, head, mean=mean, std=std, name=f"movinet_{model_id}{'_stream' if stream else ''}"
    )
    # The backbone is a functional model, built with its input spec; one
    # symbolic call of the head on the backbone's known head shape creates the
    # head's variables. A symbolic pass over the whole model (model.build)
    # would trace the backbone once more: about half of every MoViNet's build.
    head(tf_keras.Input(shape=backbone.output_shape[0]["head"][1:]))
    model.built = True
    # Past Keras' attribute tracking: a dict would become a tracked _DictWrapper (a checkpoint dependency, not JSON).
    object.__setattr__(model, "pretrained_report", report)
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


def load_movinet_backbone(backbone, path: str | Path, *, partial: bool = False) -> dict:
    """Restore a released MoViNet checkpoint (``tf.train.Checkpoint(model=...)``) into ``backbone``.

    The releases save a MovinetClassifier, whose backbone is its first layer
    with weights (``model/layer_with_weights-0``); the head
    (``layer_with_weights-1``) is left out, so any class count loads.

    The checkpoint's object graph is matched against the backbone's objects
    by name, as ``tf.train.Checkpoint.restore`` does, but before anything is
    assigned: a checkpoint that does not fit leaves the backbone untouched.
    Every backbone variable must get a value unless ``partial`` (upstream's
    ``assert_existing_objects_matched``); checkpoint values that fit nothing
    (an optimizer's slots, layers this configuration lacks) are reported,
    not refused, as upstream's restore ignores them too.

    Args:
        backbone: the ``Movinet`` of :func:`build_movinet`.
        path: a directory with a ``checkpoint`` file, or a ``ckpt-N`` prefix.
        partial: allow backbone variables the checkpoint lacks (they keep
            their initial values and are listed in the report).

    Returns:
        The :func:`models._pretrained.pretrained_report` dict; file entries are
        checkpoint keys, ``left`` entries are paths in the backbone.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: an unreadable checkpoint, not a MovinetClassifier one, or
            one of another variant or configuration (names what is missing
            and what does not fit).
    """
    from models._pretrained import few, pretrained_report
    from utils.core.tf_env import tf

    # The object-graph proto has no tf.* alias; imported only after tf_env has configured and loaded TensorFlow.
    graph_pb2 = importlib.import_module("tensorflow.core.protobuf.trackable_object_graph_pb2")

    path = Path(path)
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
    if not prefix or not Path(f"{prefix}.index").is_file():
        raise FileNotFoundError(
            f"no MoViNet checkpoint at {path} (expected a directory with ckpt-N.index, or a ckpt-N prefix); "
            "download and unpack a release, see models/movinet.py"
        )
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(
            f"checkpoint {prefix} cannot be read ({str(e).splitlines()[0][:160]}); download and unpack the release "
            "again (ckpt-N.index and ckpt-N.data-* belong together)"
        ) from None
    if not reader.has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"):
        raise ValueError(
            f"checkpoint {prefix} is a name-based (TF1 Saver) checkpoint without an object graph; MoViNet releases "
            "are tf.train.Checkpoint(model=MovinetClassifier) files: use one of those"
        )
    graph = graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    model_node = _child(graph, 0, "model")
    backbone_node = _child(graph, model_node, "layer_with_weights-0")
    if backbone_node is None:
        found = ", ".join(ref.local_name for ref in graph.nodes[0 if model_node is None else model_node].children)
        raise ValueError(
            f"checkpoint {prefix} is not a MoViNet release (tf.train.Checkpoint(model=MovinetClassifier)): "
            f"expected model/layer_with_weights-0, found {found or 'nothing'}"
        )
    pairs = _match(graph, backbone_node, backbone, tf, prefix)
    head_node = _child(graph, model_node, "layer_with_weights-1")
    head = _keys_under(graph, head_node) - _keys_under(graph, backbone_node) if head_node is not None else set()
    every = {attr.checkpoint_key for node in graph.nodes for attr in node.attributes}
    paired = {key for _variable, key in pairs}
    # save_counter is tf.train.Checkpoint's own bookkeeping, not a weight.
    unused = sorted(k for k in every - paired - head if not k.startswith("save_counter/"))
    matched = {id(variable) for variable, _key in pairs}
    paths = _variable_paths(backbone, tf)
    left = [paths.get(id(v), v.name) for v in backbone.variables if id(v) not in matched]
    shapes = reader.get_variable_to_shape_map()
    mismatched = [
        f"{key} {tuple(shapes[key])} vs {tuple(variable.shape)}"
        for variable, key in pairs
        if tuple(shapes[key]) != tuple(variable.shape)
    ]
    if mismatched or not pairs or (left and not partial):
        config = backbone.get_config()
        hint = ", or --pretrained-partial to load what it holds" if pairs and not mismatched else ""
        raise ValueError(
            f"checkpoint {prefix} does not fit this MoViNet backbone (model_id={config['model_id']}, "
            f"causal={config['causal']}, conv_type={config['conv_type']}, "
            f"positional encoding={config['use_positional_encoding']}): {len(left)} backbone variable(s) have no "
            f"value in it ({few(left)}); {len(unused)} of its values fit nothing in the backbone ({few(unused)}); "
            f"shape mismatches (file vs model): {few(mismatched)}. Use the release of the same variant and type "
            f"(movinet_<id>_base without --stream, movinet_<id>_stream with it){hint}"
        )
    for variable, key in pairs:
        variable.assign(reader.get_tensor(key))
    if unused:
        warnings.warn(
            f"checkpoint {prefix}: {len(unused)} values in it fit nothing in the backbone and were not loaded: "
            f"{few(unused)}",
            stacklevel=2,
        )
    return pretrained_report(
        file=prefix, tensors_loaded=len(pairs), unused=unused, skipped_head=sorted(head), left=left, partial=partial
    )


def _child(graph, node: int | None, name: str) -> int | None:
    """The id of ``node``'s child called ``name`` in a checkpoint's object graph, or None."""
    if node is None:
        return None
    return next((ref.node_id for ref in graph.nodes[node].children if ref.local_name == name), None)


def _keys_under(graph, node: int) -> set[str]:
    """Checkpoint keys of every value reachable from ``node``."""
    keys, seen, todo = set(), set(), [node]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        keys.update(attr.checkpoint_key for attr in graph.nodes[current].attributes)
        todo.extend(ref.node_id for ref in graph.nodes[current].children)
    return keys


def _match(graph, node: int, obj, tf, prefix: str) -> list:
    """(variable, checkpoint key) pairs found by walking the checkpoint's graph and ``obj``'s children together
    by local name, as ``tf.train.Checkpoint.restore`` does.

    A Keras functional model names each weighted layer twice: ``layer-<i>``
    (its index among all layers) and ``layer_with_weights-<j>``. The index
    shifts when a configuration adds weightless layers (the state inputs of a
    positional encoding, say), so where both name the same object only the
    second is followed.

    Raises:
        ValueError: a variable would take two values, or a value two variables.
    """
    pairs, seen, todo = [], set(), [(node, obj)]
    while todo:
        current, trackable = todo.pop()
        if (current, id(trackable)) in seen:
            continue
        seen.add((current, id(trackable)))
        if isinstance(trackable, tf.Variable):
            pairs += [
                (trackable, a.checkpoint_key) for a in graph.nodes[current].attributes if a.name == "VARIABLE_VALUE"
            ]
        refs = graph.nodes[current].children
        targets = [ref.node_id for ref in refs]
        children = tf.train.TrackableView.children(trackable)
        for ref in refs:
            by_index = ref.local_name.startswith("layer-") and targets.count(ref.node_id) > 1
            if ref.local_name in children and not by_index:
                todo.append((ref.node_id, children[ref.local_name]))
    keys_of, variables_of = {}, {}
    for variable, key in pairs:
        keys_of.setdefault(id(variable), set()).add(key)
        variables_of.setdefault(key, set()).add(id(variable))
    if any(len(v) > 1 for v in keys_of.values()) or any(len(v) > 1 for v in variables_of.values()):
        raise ValueError(
            f"checkpoint {prefix} matches this MoViNet backbone ambiguously (one value for two variables, or two "
            "values for one): it holds another configuration; use the release of the same variant and type"
        )
    return list({id(variable): (variable, key) for variable, key in pairs}.values())


def _variable_paths(root, tf) -> dict[int, str]:
    """id(variable) -> its shortest path of child names under ``root``, to name the ones left unloaded."""
    paths, seen, queue = {}, {id(root)}, [(root, "")]
    while queue:
        obj, prefix = queue.pop(0)
        for name, child in tf.train.TrackableView.children(obj).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, tf.Variable):
                paths[id(child)] = f"{prefix}{name}"
            else:
                queue.append((child, f"{prefix}{name}/"))
    return paths


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
