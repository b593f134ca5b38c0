"""Keras runs (I3D, MoViNet) -> SavedModel and TFLite (float32, or full-integer int8).

The exported graph is the run's model behind a ``tf.function`` with a fixed
``(1, T, S, S, 3)`` uint8 input named ``clips`` and a ``logits`` output; the
model normalises inside, so the file takes raw RGB pixels.

TFLite has no builtin kernel for ``MaxPool3D`` (I3D has eleven). Max pooling
is separable, so before converting each ``MaxPooling3D`` is replaced by a
spatial ``max_pool2d`` on ``(B*T, H, W, C)`` followed by a temporal one on
``(B, T, H*W, C)``: the same maximum over the same window and padding, with
builtin ops only (the evaluation through the exported file checks it).

int8 is full-integer post-training quantisation (``TFLITE_BUILTINS_INT8``):
calibrated on train clips, uint8 pixels in (the cast inside the model stays
exact), float32 logits out. Ops without an int8 kernel (``CONV_3D``: I3D)
make the conversion fail, and the error names them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from models.export.contract import ExportError

__all__ = ["convert_tflite", "float_ops", "save_savedmodel", "serving_function", "tflite_friendly", "translate_converter_error"]


def serving_function(model, frames: int, size: int):
    """The model as a concrete function: ``clips`` uint8 ``(1, T, S, S, 3)`` -> ``logits`` float32 ``(1, C)``."""
    from utils.core.tf_env import tf

    @tf.function(input_signature=[tf.TensorSpec((1, frames, size, size, 3), tf.uint8, name="clips")])
    def serve(clips):
        return {"logits": tf.cast(model(clips, training=False), tf.float32)}

    return serve.get_concrete_function()


def _separable_max_pool_3d(tf_keras):
    from utils.core.tf_env import tf

    class SeparableMaxPool3D(tf_keras.layers.Layer):
        """MaxPooling3D as a spatial then a temporal 2-D max pool (TFLite builtins only; same result)."""

        def __init__(self, pool_size, strides, padding, **kwargs):
            kwargs.pop("data_format", None)
            super().__init__(**kwargs)
            self.pool_size, self.strides, self.padding = tuple(pool_size), tuple(strides), padding.upper()

        def call(self, x):
            (kt, kh, kw), (st, sh, sw) = self.pool_size, self.strides
            t, h, w, c = x.shape[1:]
            y = tf.nn.max_pool2d(tf.reshape(x, (-1, h, w, c)), (kh, kw), (sh, sw), self.padding)
            h2, w2 = y.shape[1:3]
            y = tf.nn.max_pool2d(tf.reshape(y, (-1, t, h2 * w2, c)), (kt, 1), (st, 1), self.padding)
            return tf.reshape(y, (-1, y.shape[1], h2, w2, c))

    return SeparableMaxPool3D


def tflite_friendly(model):
    """``model`` with every MaxPooling3D made of 2-D max pools (a clone sharing no state), or ``model`` itself.

    Raises:
        ExportError: the model has MaxPooling3D but is not a functional model (it cannot be cloned).
    """
    from utils.core.tf_env import tf_keras

    if not any(isinstance(m, tf_keras.layers.MaxPooling3D) for m in model.submodules):
        return model
    if not getattr(model, "_is_graph_network", False):
        raise ExportError(
            f"{model.name} uses MaxPool3D, which has no TFLite builtin, and is not a functional model the export can "
            "rewrite; export --format savedmodel instead"
        )
    pool = _separable_max_pool_3d(tf_keras)

    def clone(layer):
        if isinstance(layer, tf_keras.layers.MaxPooling3D):
            cfg = layer.get_config()
            return pool(cfg["pool_size"], cfg["strides"], cfg["padding"], name=cfg["name"])
        return layer.__class__.from_config(layer.get_config())

    out = tf_keras.models.clone_model(model, clone_function=clone)
    out.set_weights(model.get_weights())
    return out


def translate_converter_error(err: Exception, *, what: str, int8: bool) -> ExportError:
    """A converter failure as a one-line ExportError naming the ops and what works instead."""
    text = str(err)
    ops = re.findall(r"TF Select ops: ([^\n]+)", text)
    ops = sorted({o.strip() for line in ops for o in line.split(",")})
    if not ops:
        ops = sorted({m.upper() for m in re.findall(r"'tfl\.([a-z0-9_]+)'", text)})
    if not ops:
        ops = sorted(set(re.findall(r"op(?:eration)?[: ]+'?([A-Za-z0-9_.]+)'? (?:is not|not)", text)))
    first = next((line.strip() for line in text.splitlines() if "error" in line.lower()), text.strip().splitlines()[0] if text.strip() else type(err).__name__)
    named = ", ".join(ops) if ops else f"(converter said: {first[:200]})"
    if int8:
        return ExportError(
            f"{what}: cannot quantise to full-integer int8 TFLite: op(s) {named} have no int8 kernel; "
            "what works instead: the float32 TFLite export (drop --int8) or --format savedmodel"
        )
    return ExportError(
        f"{what}: cannot convert to TFLite: op(s) {named} have no TFLite builtin kernel; "
        "what works instead: --format savedmodel (TensorFlow runtime)"
    )


def convert_tflite(concrete, trackable, *, what: str, representative=None) -> bytes:
    """Convert a concrete function to a TFLite flatbuffer; int8 when ``representative`` yields calibration inputs.

    Raises:
        ExportError: an op does not convert or does not quantise (named).
    """
    from utils.core.tf_env import tf

    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], trackable)
    # Convert the frozen function directly. The default first saves the model as a SavedModel and
    # loads it back, which for MoViNet (hundreds of custom-gradient functions) took 9 min instead
    # of 17 s for a0 at 32 px on this CPU, with the same file.
    conv.experimental_lower_to_saved_model = False
    if representative is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        # Full integer: every op int8, or the conversion fails (no silent float fallback).
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8  # the pixels themselves
        conv.inference_output_type = tf.float32  # logits, as the float model gives them
    try:
        data = conv.convert()
    except Exception as e:  # ConverterError and friends: the converter's own types vary between TF versions
        raise translate_converter_error(e, what=what, int8=representative is not None) from None
    if representative is not None:
        # TFLITE_BUILTINS_INT8 does not make the converter fail on an op without an int8 kernel:
        # it keeps that op in float32 between QUANTIZE/DEQUANTIZE (I3D's CONV_3D: a "int8" file
        # as large as the float one). Refuse such a file, naming the ops.
        left = float_ops(data)
        if left:
            named = ", ".join(f"{op} (x{n})" for op, n in sorted(left.items()))
            raise ExportError(
                f"{what}: cannot quantise to full-integer int8 TFLite: op(s) {named} have no int8 kernel and "
                "would stay float32; what works instead: the float32 TFLite export (drop --int8) or --format savedmodel"
            )
    return data


def float_ops(data: bytes) -> dict[str, int]:
    """Ops of a TFLite flatbuffer that compute in float32 (not counting the (de)quantise and cast at its edges)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default XNNPACK delegate, which would fold ops into opaque DELEGATE nodes.
    interp = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    out: dict[str, int] = {}
    for op in interp._get_ops_details():  # the public API has no op listing; this one is stable across LiteRT 1.x/2.x
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "CAST"):
            continue
        inputs = [tensors[i] for i in op["inputs"] if i >= 0 and i in tensors]
        if any(t["dtype"] == np.float32 for t in inputs):
            out[op["op_name"]] = out.get(op["op_name"], 0) + 1
    return out


def save_savedmodel(model, concrete, path: Path) -> None:
    """Write a SavedModel with the ``serving_default`` signature (``clips`` -> ``logits``)."""
    from utils.core.tf_env import tf

    module = tf.Module()
    module.model = model
    tf.saved_model.save(module, str(path), signatures={"serving_default": concrete})
