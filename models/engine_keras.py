"""The Keras engine: ``fit(model, loaders, cfg, run_dir) -> RunRecord`` for every tf_keras model.

Every decision about the run (learning rate, best epoch, early stop, what is
written, when to resume) is :mod:`models.lifecycle` / :mod:`models.policy`'s;
this module holds what is TensorFlow-specific:

- the model built under the seed, the dtype policy (mixed precision on GPU)
  and a MirroredStrategy when the node has several GPUs (MultiWorkerMirroredStrategy
  over several SLURM tasks); with several replicas every BatchNorm layer
  normalises over the global batch (:mod:`models._keras_global_bn`) and
  ``--batch-size`` is the global batch, as in the PyTorch engine (models/policy.py);
- the optimizer from the policy's numbers (decoupled weight decay on
  kernels only, per-tensor ``clipnorm``);
- a custom loop rather than ``model.fit``: the data of an epoch is a pure
  function of (seed, epoch) (see ``wlasl.loader_tf``) and the loop knows
  which step it is at, so a run stopped anywhere resumes to the same
  history, and the preemption flag is polled at every step;
- checkpoint files (``last-*``: weights + optimizer; ``best-*``: weights;
  ``tf.train.Checkpoint``), fsynced once per epoch.

``--compile`` turns on XLA (``jit_compile``) for the train step on this side.

Distillation: :func:`kd_loss`, the TensorFlow form of
:func:`models.distill.kd_loss`, on soft targets looked up by each clip's
``inputs["index"]``.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from models import policy
from models._keras_global_bn import to_global_batchnorm
from models.distill import Distillation, check_fit
from models.lifecycle import NonFiniteLoss, Run
from utils.core.distenv import per_process_batch
from utils.core.files import fsync_files
from utils.core.preempt import PreemptionFlag
from utils.core.records import RunRecord, environment
from utils.core.tf_env import set_precision, tf, tf_keras
from utils.core.tf_strategy import choose_strategy

__all__ = ["NonFiniteLoss", "build_scope", "fit", "kd_loss", "load_weights", "make_optimizer", "predict_logits",
           "prepare_process"]


def prepare_process(cfg) -> None:
    """Called before anything else of the run touches TensorFlow (the loaders do).

    A MultiWorkerMirroredStrategy (a job over several nodes) can only be made
    before the process's first TensorFlow operation; ``choose_strategy``
    caches it, so ``build_scope`` later gets the same object.
    """
    choose_strategy(tf.config.list_physical_devices("GPU"))


def _is_chief(strategy) -> bool:
    """Whether this process writes the run (task 0 of a multi-worker job; always on one node)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is None or not getattr(resolver, "task_type", None) or resolver.task_id == 0


@contextlib.contextmanager
def build_scope(cfg):
    """Where ``models.train.run`` builds the model: seed, dtype policy, and the
    MirroredStrategy scope when the node has several GPUs (variables must be
    created under it)."""
    tf_keras.utils.set_random_seed(cfg.train.seed)
    set_precision(cfg.train.mixed_precision)
    gpus = tf.config.list_physical_devices("GPU")
    strategy = choose_strategy(gpus)  # multi-node, multi-GPU or default: utils.core.tf_strategy
    with strategy.scope():
        yield strategy


def make_optimizer(train, variables):
    """The optimizer of :func:`models.policy.optimizer_settings`, weight decay on kernels only."""
    s = policy.optimizer_settings(train)
    common = {"learning_rate": s["lr"], "weight_decay": s["weight_decay"] or None, "clipnorm": s["clipnorm"]}
    if s["kind"] == "adam":
        opt = tf_keras.optimizers.Adam(beta_1=s["beta_1"], beta_2=s["beta_2"], epsilon=s["epsilon"], **common)
    elif s["kind"] == "sgd":
        opt = tf_keras.optimizers.SGD(momentum=s["momentum"], **common)
    elif s["kind"] == "rmsprop":
        opt = tf_keras.optimizers.RMSprop(rho=s["rho"], momentum=s["momentum"], epsilon=s["epsilon"], **common)
    else:
        raise ValueError(f"optimizer expected one of {sorted(policy.OPTIMIZERS)}, received {s['kind']!r}")
    opt.exclude_from_weight_decay(var_list=[v for v in variables if not policy.decays(v.shape)])
    if tf_keras.mixed_precision.global_policy().name == "mixed_float16":
        opt = tf_keras.mixed_precision.LossScaleOptimizer(opt)
    return opt


def kd_loss(logits, labels, teacher_probs, *, alpha: float, temperature: float):
    """Per-clip ``A * CE + (1 - A) * T² * KL(teacher_T || student_T)`` (:func:`models.distill.kd_loss`)."""
    ce = tf_keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    log_q = tf.nn.log_softmax(logits / temperature, axis=-1)
    kl = tf.reduce_sum(tf.math.xlogy(teacher_probs, teacher_probs) - teacher_probs * log_q, axis=-1)  # 0 log 0 = 0
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


class _Steps:
    """The compiled train and eval steps of one model under its strategy (and its soft targets, when distilling)."""

    def __init__(self, model, optimizer, cfg, augment, distill: Distillation | None = None):
        self.model, self.optimizer, self.augment, self.distill = model, optimizer, augment, distill
        self.strategy = model.distribute_strategy
        # The table lives on the device; each replica gathers its clips' rows by inputs["index"].
        self.targets = tf.constant(distill.targets) if distill else None
        if cfg.dry_run:
            # Two steps run faster eagerly than tracing MoViNet's graph (~30 s on CPU).
            self.train, self.eval = self._train, self._eval
        else:
            xla = bool(cfg.train.compile)  # --compile: XLA on the Keras side
            self.train = tf.function(self._train, jit_compile=xla, reduce_retracing=True)
            self.eval = tf.function(self._eval, reduce_retracing=True)

    def _train_replica(self, x, y):
        model, opt = self.model, self.optimizer
        with tf.GradientTape() as tape:
            logits = model(self.augment(x), training=True)  # the loaders' crop, where the step runs
            if self.distill is None:
                per_clip = tf_keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            else:
                soft = tf.gather(self.targets, x["index"])
                per_clip = kd_loss(logits, y, soft, alpha=self.distill.alpha, temperature=self.distill.temperature)
            loss = tf.nn.compute_average_loss(per_clip)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = opt.get_scaled_loss(loss) if hasattr(opt, "get_scaled_loss") else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        if hasattr(opt, "get_unscaled_gradients"):
            grads = opt.get_unscaled_gradients(grads)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return tf.reduce_sum(per_clip), correct, tf.cast(tf.shape(y)[0], tf.float32)

    def _train(self, x, y):
        out = self.strategy.run(self._train_replica, args=(x, y))
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in out]

    def _eval(self, x, y):
        logits, y = self.strategy.run(lambda a, b: (self.model(a, training=False), b), args=(x, y))
        if self.strategy.num_replicas_in_sync > 1:
            return self.strategy.gather(logits, 0), self.strategy.gather(y, 0)
        return logits, y

    def any_worker(self, flag: bool) -> bool:
        """True in every process when it is true in one (an all-reduce over the workers of a multi-worker run)."""
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return flag  # one process: nothing to agree on
        value = self.strategy.run(lambda: tf.constant(float(flag)))
        return float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)) > 0

    def distribute(self, ds):
        return self.strategy.experimental_distribute_dataset(ds) if self.strategy.num_replicas_in_sync > 1 else ds

    def predict(self, ds, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        logits, labels = [], []
        for x, y in self.distribute(ds):
            lg, lb = self.eval(x, y)
            logits.append(lg.numpy())
            labels.append(lb.numpy())
        if not logits:
            return np.zeros((0, num_classes), np.float32), np.zeros((0,), np.int64)
        return np.concatenate(logits).astype(np.float32), np.concatenate(labels).astype(np.int64)


class _Checkpoints:
    """The engine's files in ``checkpoints/`` (see models.lifecycle.Checkpointer)."""

    def __init__(self, folder: Path, model, optimizer, main: bool):
        self.folder, self.main = folder, main
        self.objects = {"last": tf.train.Checkpoint(model=model, optimizer=optimizer), "best": tf.train.Checkpoint(model=model)}

    def save(self, kind: str, tag: str) -> list[str]:
        name = f"{kind}-{tag}"
        if not self.main:
            # Every worker of a multi-worker job must take part in a save; only the chief's is kept. The
            # worker's copy goes to its own temporary folder: inside checkpoints/ the chief, cleaning up
            # files no checkpoint names, would delete it under the worker's feet.
            with tempfile.TemporaryDirectory(prefix="slr-worker-ckpt-") as scratch:
                self.objects[kind].write(str(Path(scratch) / name))
            return [name]
        self.objects[kind].write(str(self.folder / name))
        fsync_files(sorted(self.folder.glob(f"{name}.*")))
        return [name]

    def load(self, kind: str, files: list[str]) -> None:
        status = self.objects[kind].read(str(self.folder / files[0]))
        if kind == "last":
            status.assert_existing_objects_matched()
        else:
            status.expect_partial()


class _Trainer:
    """The TensorFlow half of :meth:`models.lifecycle.Run.train` (see models.lifecycle.Trainer)."""

    def __init__(self, steps: _Steps, checkpointer: _Checkpoints, optimizer, num_classes: int):
        self.steps, self.checkpointer, self.optimizer, self.num_classes = steps, checkpointer, optimizer, num_classes

    def set_lr(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(lr)

    def begin_epoch(self, batches):
        return self.steps.distribute(batches)

    def train_step(self, batch) -> tuple[float, float, int]:
        loss, correct, count = (float(v) for v in self.steps.train(*batch))
        return loss, correct, int(count)

    def stop_requested(self, flag) -> bool:
        # A signal may reach one worker a step before the others: they all stop at the same step, or the
        # others would wait in that step's all-reduce for a worker that is saving a checkpoint.
        return self.steps.any_worker(flag.requested is not None)

    def predict(self, data):
        return self.steps.predict(data, self.num_classes)

    def end_training(self) -> None:
        self.steps.any_worker(False)  # an all-reduce over the workers: every one has got here


def fit(model, loaders, cfg, run_dir, *, flag=None, distill: Distillation | None = None) -> RunRecord:
    """Train ``model`` on ``loaders.train``, keep the best on val, evaluate it on every split.

    Resumes from ``run_dir/checkpoints`` when it holds a checkpoint. ``distill``
    holds the soft targets of a distillation run (``models.distill.prepare``).

    Raises:
        ValueError: the checkpoint does not fit this run, or ``cfg`` names
            teachers and ``distill`` is missing (or the reverse).
        NonFiniteLoss: the loss became NaN/inf (the record says failed).
        Preempted: SIGUSR1/SIGTERM arrived; checkpoint saved, record "stopped" (``Cancelled``: "cancelled").
    """
    check_fit(cfg, distill, train_size=len(loaders.ids["train"]), num_classes=loaders.num_classes)
    replicas = model.distribute_strategy.num_replicas_in_sync
    per_process_batch(cfg.data.batch_size, replicas)  # the global batch splits evenly over the replicas
    if replicas > 1:
        to_global_batchnorm(model)  # the run of one process with the whole batch (models/policy.py)
    env = environment(
        params=int(model.count_params()),
        trainable_params=int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
        tensorflow=tf.__version__,
        precision=tf_keras.mixed_precision.global_policy().name,
        replicas=replicas,
        pretrained=getattr(model, "pretrained_report", None),
    )
    run = Run(run_dir, cfg, framework="keras", num_classes=loaders.num_classes, env=env, main=_is_chief(model.distribute_strategy))
    if run.done:
        run.log(f"{run.record.run_id} already completed {run.record.epochs} epochs; nothing to do")
        return run.record
    with model.distribute_strategy.scope():
        optimizer = make_optimizer(cfg.train, model.trainable_variables)
        optimizer.build(model.trainable_variables)
    ckpt = _Checkpoints(run.ckpt_dir, model, optimizer, run.main)
    trainer = _Trainer(_Steps(model, optimizer, cfg, loaders.augment, distill), ckpt, optimizer, loaders.num_classes)
    with PreemptionFlag() if flag is None else contextlib.nullcontext(flag) as flag:
        return run.train(trainer, loaders, flag)


def predict_logits(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Centre-view logits and labels of a restored model over ``dataset``.

    What :mod:`models.distill` scores an older teacher's train split with.
    """
    logits, labels = [], []
    for x, y in dataset:
        logits.append(model(x, training=False).numpy())
        labels.append(y.numpy())
    return np.concatenate(logits).astype(np.float32), np.concatenate(labels).astype(np.int64)


def load_weights(model, folder: Path, files: list[str]) -> None:
    """Load a run's saved weights (``checkpoints/<files>``, as state.json names them) into ``model``."""
    tf.train.Checkpoint(model=model).read(str(Path(folder) / files[0])).expect_partial()
