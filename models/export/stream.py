"""The streaming graph of a MoViNet ``--stream`` run: one frame and the states in, logits and new states out.

A stream MoViNet is causal: its convolutions buffer the frames they still
need, and its pooling keeps running sums. Built with
``use_external_states=True`` those buffers become inputs and outputs, so
the same weights run one frame at a time and, after the last frame of a
clip, give the logits the clip model gives for the whole clip.

The graph is rebuilt from the run's own model (``MovinetUint8``: backbone +
head + in-model normalisation): a second ``Movinet`` backbone with the same
constructor arguments (read from the trained one) and external states, the
trained weights copied in, and the trained head reused as is.
"""

from __future__ import annotations

import numpy as np

from models.export.contract import ExportError

__all__ = ["StreamGraph", "build_stream_graph", "is_stream_run"]

# Movinet constructor arguments the trained backbone keeps as private
# attributes (its get_config() omits se_type and gating_activation).
_BACKBONE_ARGS = (
    "model_id", "causal", "use_positional_encoding", "conv_type", "se_type", "activation", "gating_activation",
    "use_sync_bn", "norm_momentum", "norm_epsilon", "average_pooling_type",
)  # fmt: skip


def is_stream_run(restored) -> bool:
    return restored.spec.family == "movinet" and bool(restored.cfg.model.stream)


class StreamGraph:
    """The TensorFlow streaming step of a stream MoViNet run.

    Attributes:
        concrete: the concrete function ``(image, *states) -> {"logits", **states}``.
        backbone: the external-state backbone (holds the copied weights).
        state_names: state input names, sorted (the function's input order after ``image``).
        inputs: ``["image", *state_names]``, the converted file's input order.
        outputs: ``["logits", *state_names]``, its output order (a dict's keys, sorted).
    """

    def __init__(self, concrete, backbone, state_names, init_states, size: int):
        self.concrete, self.backbone, self.size = concrete, backbone, size
        self.state_names = list(state_names)
        self.inputs = ["image", *self.state_names]
        self.outputs = ["logits", *self.state_names]
        self._init = init_states

    def initial_states(self) -> dict:
        return {n: np.asarray(v) for n, v in self._init.items()}

    def frames(self, x: np.ndarray):
        """Yield the running logits after each frame of a clip ``(1, T, S, S, 3)`` uint8 (TensorFlow)."""
        from utils.core.tf_env import tf

        states = [self._init[n] for n in self.state_names]
        for t in range(x.shape[1]):
            out = self.concrete(tf.constant(x[:, t : t + 1], tf.uint8), *states)
            states = [out[n] for n in self.state_names]
            yield np.asarray(out["logits"], np.float32)

    def contract(self, file: str) -> dict:
        """The contract.json ``stream`` entry."""
        init = self.initial_states()
        return {
            "file": file,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "image": {"shape": [1, 1, self.size, self.size, 3], "dtype": "uint8", "pixel_range": [0, 255]},
            "states": {n: {"shape": list(init[n].shape), "dtype": str(init[n].dtype)} for n in self.state_names},
            "usage": "states start at zeros; feed frames in order, pass each call's states to the next; "
                     "logits after the clip's last frame = the clip model's logits",
        }  # fmt: skip


def build_stream_graph(restored) -> StreamGraph:
    """The streaming step of a stream MoViNet run (see the module docstring).

    Raises:
        ExportError: not a stream MoViNet run, or the trained weights do not fit the streaming backbone.
    """
    from utils.core.tf_env import tf, tf_keras

    # isort: split
    from official.projects.movinet.modeling import movinet

    if not is_stream_run(restored):
        raise ExportError(f"{restored.run_dir}: a streaming model needs a MoViNet run trained with --stream; this is {restored.spec.name}"
                          f"{'' if restored.spec.family != 'movinet' else ' without --stream'}")
    model = restored.model
    trained = model.backbone
    size = restored.cfg.model.size
    args = {k: getattr(trained, f"_{k}") for k in _BACKBONE_ARGS if hasattr(trained, f"_{k}")}
    backbone = movinet.Movinet(
        **args,
        use_external_states=True,
        output_states=True,
        input_specs=tf_keras.layers.InputSpec(shape=(1, 1, size, size, 3)),
    )
    theirs, ours = trained.get_weights(), backbone.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise ExportError(f"{restored.run_dir}: the trained backbone's weights do not fit its streaming rebuild "
                          f"({len(theirs)} vs {len(ours)} tensors); export --format savedmodel instead")  # fmt: skip
    backbone.set_weights(theirs)
    init = backbone.init_states((1, 1, size, size, 3))
    names = sorted(init)
    scale = tf.constant(model._scale, tf.float32)
    offset = tf.constant(model._offset, tf.float32)
    head = model.head
    specs = [tf.TensorSpec(init[n].shape, init[n].dtype, name=n) for n in names]

    @tf.function(input_signature=[tf.TensorSpec((1, 1, size, size, 3), tf.uint8, name="image"), *specs])
    def step(image, *states):
        # The same normalisation as MovinetUint8.call, then backbone and head on one frame.
        x = tf.cast(image, tf.float32) * scale + offset
        endpoints, new = backbone({"image": x, **dict(zip(names, states))}, training=False)
        logits = tf.cast(head(endpoints["head"], training=False), tf.float32)
        return {"logits": logits, **{n: new[n] for n in names}}

    return StreamGraph(step.get_concrete_function(), backbone, names, init, size)
