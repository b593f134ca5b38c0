"""The one place the TensorFlow side imports TensorFlow and Keras.

tf-models-official's MoViNet is a tf_keras (Keras 2) model, while plain
``tf.keras`` in TF 2.20 is Keras 3; keras-tuner's stock tuners and the
MoViNet layers only agree when ``TF_USE_LEGACY_KERAS=1`` is set before
TensorFlow is first imported (seen in use: otherwise keras-tuner refuses the MoViNet model). Every Keras-side
module therefore does ``from utils.core.tf_env import tf, tf_keras`` and never
imports tensorflow itself.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["tf", "tf_keras", "set_precision"]

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    # Too late to switch: tf.keras is already Keras 3 in this process. Our
    # code uses tf_keras directly and still works; keras-tuner would not.
    warnings.warn(
        "TensorFlow was imported before utils.core.tf_env set TF_USE_LEGACY_KERAS=1, so tf.keras is Keras 3 "
        "here; import utils.core.tf_env (or a Keras model module) before anything that imports tensorflow",
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow turns its oneDNN kernels on by default only on some Intel CPUs. On an AMD EPYC
# (common on HPC clusters) it falls back to Eigen, whose 3D-convolution training is far slower:
# an I3D train step at 8 x 32², batch 8, one thread, took 19 s there and 0.27 s with oneDNN.
# A user's explicit TF_ENABLE_ONEDNN_OPTS=0 still wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# Hide TensorFlow's start-up noise: INFO/WARNING always (oneDNN, TF-TRT banners);
# on a machine without an NVIDIA device also the ERROR-level CUDA probe lines
# ("failed call to cuInit", "Unable to register cuDNN factory"), which are
# expected there. A GPU node keeps its errors.
_NO_GPU = not os.path.exists("/dev/nvidiactl") or os.environ.get("CUDA_VISIBLE_DEVICES") == ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if _NO_GPU else "2")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

# Retracing warnings ("5 out of the last 5 calls triggered tf.function
# retracing") are about performance, not correctness: keep them out of run logs.
tf.get_logger().setLevel("ERROR")


def set_precision(mixed: bool) -> str:
    """Set the global Keras dtype policy before a model is built; returns its name.

    Mixed precision only pays on a GPU; on CPU it is slower, so it falls back
    to float32 there. bfloat16 is used where the GPU supports it (Ampere+),
    as it needs no loss scaling.
    """
    name = "float32"
    if mixed and tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        major = (details.get("compute_capability") or (0, 0))[0]
        name = "mixed_bfloat16" if major >= 8 else "mixed_float16"
    tf_keras.mixed_precision.set_global_policy(name)
    return name
