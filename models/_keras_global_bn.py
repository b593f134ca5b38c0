"""BatchNorm over the global batch of a Keras run with several replicas (MultiWorkerMirroredStrategy, MirroredStrategy).

The Keras twin of :mod:`models._torch_global_bn`: with several replicas each
BatchNorm layer normalises with the statistics of every replica's clips, so
the run is the run of one process with the whole batch. tf_keras's own
``synchronized=True`` layer gets there with two differences from that
one-process run, both fixed here:

- its moving variance takes the biased batch variance, while the fused
  kernel a one-process run uses takes the unbiased one (Bessel's
  correction); with few values per channel (a late block at 32 px sees 16)
  that is a 7 % larger moving variance on one side, and evaluation differs;
- it all-reduces the sum, the squared sum and the count separately: three
  collectives per layer and per step, each a round trip between nodes.

Here each replica computes its own mean and sum of squared deviations per
channel and writes them with its count into its own slot; one all-reduce
gathers every slot and the exact pooled formula gives the global mean and
variance (no ``E[x²] - E[x]²`` cancellation). The all-reduce carries a
gradient (TensorFlow sums the gradients over the replicas), which is what
BatchNorm's gradient over the whole batch needs.
"""

from __future__ import annotations

from utils.core.tf_env import tf, tf_keras

__all__ = ["to_global_batchnorm"]


def _global_moments(layer):
    """A replacement for ``layer._calculate_mean_and_var`` (the instance's own, tf_keras's signature)."""
    local_moments = layer._no_sync_calculate_mean_and_var

    def moments(x, reduction_axes, keep_dims, mask=None):
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1 or mask is not None:
            object.__setattr__(layer, "_slr_values", None)
            return local_moments(x, reduction_axes, keep_dims, mask=mask)
        y = tf.cast(x, tf.float32)
        mean = tf.reduce_mean(y, axis=reduction_axes, keepdims=True)
        m2 = tf.reduce_sum(tf.square(y - mean), axis=reduction_axes, keepdims=True)
        channels = tf.size(mean)
        count = tf.cast(tf.size(y) // channels, tf.float32)
        mine = tf.concat([tf.reshape(mean, [-1]), tf.reshape(m2, [-1]), tf.reshape(count, [1])], 0)
        width, replicas = tf.size(mine), ctx.num_replicas_in_sync
        slot = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
        padded = tf.pad(mine, [[slot * width, (replicas - 1 - slot) * width]])
        slots = tf.reshape(ctx.all_reduce(tf.distribute.ReduceOp.SUM, padded), [replicas, -1])
        means, m2s, counts = slots[:, :channels], slots[:, channels : 2 * channels], slots[:, 2 * channels :]
        n = tf.reduce_sum(counts)
        global_mean = tf.reduce_sum(counts * means, 0) / n
        variance = tf.reduce_sum(m2s + counts * tf.square(means - global_mean), 0) / n
        object.__setattr__(layer, "_slr_values", n)  # for the moving variance (unbiased, as the fused kernel keeps it)
        shape = tf.shape(mean) if keep_dims else tf.shape(tf.squeeze(mean, reduction_axes))
        return tf.cast(tf.reshape(global_mean, shape), x.dtype), tf.cast(tf.reshape(variance, shape), x.dtype)

    return moments


def _unbiased_moving_variance(layer):
    """A replacement for ``layer._assign_moving_average``: the moving variance takes ``n / (n - 1)`` times the batch's."""
    assign = layer._assign_moving_average

    def update(variable, value, momentum, inputs_size):
        n = getattr(layer, "_slr_values", None)
        if n is not None and variable is layer.moving_variance:
            value = value * tf.cast(n / tf.maximum(n - 1.0, 1.0), value.dtype)
        return assign(variable, value, momentum, inputs_size)

    return update


def to_global_batchnorm(model) -> int:
    """Make every BatchNorm layer of ``model`` normalise over the global batch; returns how many changed.

    Call it before the first training step is traced. The layers keep their
    variables (checkpoints and the optimizer are unaffected); with one
    replica they behave as before.
    """
    changed = 0
    for layer in model.submodules:
        if isinstance(layer, tf_keras.layers.BatchNormalization) and not getattr(layer, "_slr_global", False):
            if layer.renorm or layer.virtual_batch_size is not None:
                raise ValueError(f"{layer.name}: BatchNorm with renorm or virtual_batch_size cannot be made global")
            # The fused kernel computes its statistics itself; the path that calls the methods below is the other one.
            layer.fused = False
            for name, value in (("_calculate_mean_and_var", _global_moments(layer)),
                                ("_assign_moving_average", _unbiased_moving_variance(layer)), ("_slr_global", True)):
                object.__setattr__(layer, name, value)  # plain attributes, out of Keras' tracking
            changed += 1
    return changed
