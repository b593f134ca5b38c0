"""The Keras engine: ``fit(model, loaders, cfg, run_dir) -> RunRecord`` for every tf_keras model.

``--compile`` turns on XLA (``jit_compile``) for the train step on this side.

A custom loop rather than ``model.fit``: the data of an epoch is a pure
function of (seed, epoch) (see ``wlasl.loader_tf``), and the loop knows
which step it is at, so a run stopped anywhere (SLURM preemption, a crash
after an epoch) resumes to the same history, the preemption flag is polled
at every step, and a non-finite loss stops with its step and learning rate.

Files under ``run_dir`` (besides the run record, see ``utils.core.records``)::

    checkpoints/state.json     epoch, step, best, LR state, wall time, class count
    checkpoints/last-*         weights + optimizer (tf.train.Checkpoint)
    checkpoints/best-*         weights of the best epoch on val top-1
    tensorboard/               scalars per epoch
    predictions.csv, predictions_val.csv, confusion_test.csv/.npy, plots/confusion_test.png
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import traceback
from pathlib import Path

import numpy as np

from utils.core.files import atomic_write_text
from utils.core.metrics import confusion_matrix, evaluate_logits, write_predictions
from utils.core.preempt import Preempted, PreemptionFlag
from utils.core.records import RunRecord, append_history, environment, write_json, write_record
from utils.core.tf_env import set_precision, tf, tf_keras
from utils.core.tf_strategy import choose_strategy

__all__ = ["NonFiniteLoss", "build_scope", "fit", "make_optimizer"]

PLATEAU_PATIENCE = 3  # epochs without val gain before the plateau schedule halves the LR


class NonFiniteLoss(ValueError):
    """The training loss became NaN or inf; the message gives the step and learning rate."""


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


def make_optimizer(cfg):
    """adam (L2 added to the loss when weight_decay > 0), adamw or sgd (momentum 0.9), decoupled decay."""
    t = cfg.train
    if t.optimizer == "adamw":
        opt = tf_keras.optimizers.AdamW(learning_rate=t.lr, weight_decay=t.weight_decay)
    elif t.optimizer == "sgd":
        opt = tf_keras.optimizers.SGD(learning_rate=t.lr, momentum=0.9, weight_decay=t.weight_decay or None)
    else:
        opt = tf_keras.optimizers.Adam(learning_rate=t.lr)
    if tf_keras.mixed_precision.global_policy().name == "mixed_float16":
        opt = tf_keras.mixed_precision.LossScaleOptimizer(opt)
    return opt


def _epoch_lr(cfg, epoch: int, state: dict) -> float:
    t = cfg.train
    if t.schedule == "cosine":
        return 0.5 * t.lr * (1.0 + math.cos(math.pi * epoch / t.epochs))
    if t.schedule == "plateau":
        return state["plateau_lr"]
    return t.lr


def _fresh_state(num_classes: int, lr: float) -> dict:
    return {
        "epoch": 0,  # epochs completed
        "step": 0,  # batches done within the current epoch (> 0 after a preemption)
        "global_step": 0,
        "partial": [0.0, 0, 0],  # loss sum, correct, count of the current epoch so far
        "best": {},
        "best_prefix": None,
        "last_prefix": None,
        "plateau_lr": lr,
        "bad_epochs": 0,
        "wall_s": 0.0,
        "num_classes": num_classes,
    }


class _Steps:
    """The compiled train and eval steps of one model under its strategy."""

    def __init__(self, model, optimizer, cfg):
        self.model, self.optimizer = model, optimizer
        self.strategy = model.distribute_strategy
        self.l2 = cfg.train.weight_decay if cfg.train.optimizer == "adam" else 0.0
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
            logits = model(x, training=True)
            per_clip = tf_keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_clip)
            if self.l2:
                loss += self.l2 * tf.add_n([tf.nn.l2_loss(v) for v in model.trainable_variables if "kernel" in v.name])
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

    def distribute(self, ds):
        return self.strategy.experimental_distribute_dataset(ds) if self.strategy.num_replicas_in_sync > 1 else ds

    def predict(self, ds, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        logits, labels = [], []
        for x, y in self.distribute(ds):
            lg, lb = self.eval(x, y)
            logits.append(lg.numpy())
            labels.append(lb.numpy())
        if not logits:
            return np.zeros((0, num_classes)), np.zeros((0,), np.int64)
        return np.concatenate(logits).astype(np.float64), np.concatenate(labels).astype(np.int64)


def _load_state(ckpt_dir: Path, cfg, num_classes: int) -> dict | None:
    path = ckpt_dir / "state.json"
    if not path.is_file():
        return None
    if not cfg.train.resume:
        raise ValueError(
            f"{ckpt_dir.parent} already holds a checkpoint and resume is off (--no-resume); "
            f"delete {ckpt_dir.parent} or pick another --run-id"
        )
    state = json.loads(path.read_text())
    if state["num_classes"] != num_classes:
        raise ValueError(
            f"the checkpoint in {ckpt_dir} was trained for {state['num_classes']} classes but the data has "
            f"{num_classes}; pick another --run-id, or start a new run from it with --pretrained"
        )
    return state


def _save(ckpt_dir: Path, ckpt, state: dict, kind: str, tag: str) -> None:
    """Write checkpoint ``<kind>-<tag>``, then state.json naming it, then drop the old one."""
    old = state.get(f"{kind}_prefix")
    state[f"{kind}_prefix"] = ckpt.write(str(ckpt_dir / f"{kind}-{tag}"))
    atomic_write_text(ckpt_dir / "state.json", json.dumps(state, indent=1))
    if old and old != state[f"{kind}_prefix"]:
        for f in Path(old).parent.glob(Path(old).name + ".*"):
            f.unlink(missing_ok=True)


def _finish(model, steps, loaders, state, run_dir: Path) -> dict:
    """Evaluate the best-on-val weights on val and test; write predictions and the confusion matrix."""
    if state["best_prefix"]:
        tf.train.Checkpoint(model=model).read(state["best_prefix"]).expect_partial()
    metrics = {}
    for split, ds, ids in (("val", loaders.val, loaders.val_ids), ("test", loaders.test, loaders.test_ids)):
        logits, labels = steps.predict(ds, loaders.num_classes)
        metrics[split] = evaluate_logits(logits, labels)
        name = "predictions.csv" if split == "test" else f"predictions_{split}.csv"
        write_predictions(run_dir / name, ids, labels, logits, loaders.glosses)
        if split == "test":
            cm = confusion_matrix(labels, logits.argmax(axis=1), loaders.num_classes)
            np.save(run_dir / "confusion_test.npy", cm)
            header = ",".join(["true\\pred", *loaders.glosses])
            rows = [",".join([g, *map(str, r)]) for g, r in zip(loaders.glosses, cm)]
            atomic_write_text(run_dir / "confusion_test.csv", "\n".join([header, *rows]) + "\n")
            _plot_confusion(run_dir / "plots" / "confusion_test.png", cm, loaders.glosses)
    return metrics


def _plot_confusion(path: Path, cm: np.ndarray, glosses: list[str]) -> None:
    """Row-normalised confusion matrix as a PNG (gloss labels up to 30 classes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    n = len(glosses)
    side = min(4 + 0.12 * n, 20)
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax.set(xlabel="predicted", ylabel="true", title="test confusion (row-normalised)")
    if n <= 30:
        ax.set_xticks(range(n), glosses, rotation=90)
        ax.set_yticks(range(n), glosses)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def fit(model, loaders, cfg, run_dir) -> RunRecord:
    """Train ``model`` on ``loaders.train``, keep the best on val, evaluate it on val and test.

    Resumes from ``run_dir/checkpoints`` when it holds a checkpoint.

    Raises:
        ValueError: a checkpoint exists and ``cfg.train.resume`` is off, or
            its class count differs from the data's.
        NonFiniteLoss: the loss became NaN/inf (the record says failed).
        Preempted: SIGUSR1/SIGTERM arrived; checkpoint saved, record "stopped".
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    state = _load_state(ckpt_dir, cfg, loaders.num_classes)
    resumed = state is not None
    state = state or _fresh_state(loaders.num_classes, cfg.train.lr)
    t0 = time.time() - state["wall_s"]  # wall time sums over resumes
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())

    with model.distribute_strategy.scope():
        optimizer = make_optimizer(cfg)
        optimizer.build(model.trainable_variables)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    if resumed and state["last_prefix"]:
        ckpt.read(state["last_prefix"]).assert_existing_objects_matched()
    steps = _Steps(model, optimizer, cfg)
    record = RunRecord(
        run_id=cfg.run_id,
        model=cfg.model.name,
        framework="keras",
        config=cfg.to_dict(),
        epochs=state["epoch"],
        best=state["best"],
        wall_s=state["wall_s"],
        tags=dict(cfg.tags),
        env=environment(
            params=int(model.count_params()),
            trainable_params=int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
            tensorflow=tf.__version__,
            precision=tf_keras.mixed_precision.global_policy().name,
            replicas=model.distribute_strategy.num_replicas_in_sync,
            resumed_from_epoch=state["epoch"] if resumed else None,
        ),
    )

    def save_record(status: str, error: str | None = None) -> None:
        record.status, record.error = status, error
        record.epochs, record.best = state["epoch"], state["best"]
        record.wall_s = time.time() - t0
        write_record(run_dir, record)

    save_record("running")
    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard"))
    try:
        with PreemptionFlag() as flag:
            _train_loop(model, steps, loaders, cfg, run_dir, ckpt, state, flag, writer, save_record, t0)
        record.metrics = _finish(model, steps, loaders, state, run_dir)
    except (Preempted, NonFiniteLoss):
        raise
    except Exception as e:
        save_record("failed", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        raise
    save_record("completed")
    return record


def _train_loop(model, steps, loaders, cfg, run_dir, ckpt, state, flag, writer, save_record, t0) -> None:
    """Epochs from ``state`` to the end (or early stop); updates ``state`` in place."""
    ckpt_dir = run_dir / "checkpoints"
    best_model = tf.train.Checkpoint(model=model)
    max_batches = cfg.train.steps_per_epoch
    for epoch in range(state["epoch"], cfg.train.epochs):
        lr = _epoch_lr(cfg, epoch, state)
        steps.optimizer.learning_rate.assign(lr)
        loss_sum, correct, count = state["partial"]
        epoch_t0 = time.time()
        for x, y in steps.distribute(loaders.train.epoch(epoch, skip_batches=state["step"], max_batches=max_batches)):
            if flag.requested:
                state["partial"] = [loss_sum, correct, count]
                state["wall_s"] = time.time() - t0
                _save(ckpt_dir, ckpt, state, "last", f"e{epoch}s{state['step']}")
                save_record("stopped", f"preempted by signal {flag.requested} at epoch {epoch} step {state['step']}")
                raise Preempted(f"signal {flag.requested} at epoch {epoch} step {state['step']}")
            batch_loss, batch_correct, batch_n = (float(v) for v in steps.train(x, y))
            if not math.isfinite(batch_loss):
                msg = (
                    f"non-finite training loss ({batch_loss}) at step {state['global_step'] + 1} "
                    f"(epoch {epoch + 1}, batch {state['step'] + 1}) with learning rate {lr:.3g}; "
                    "lower --lr, check the data, or turn off --mixed-precision"
                )
                save_record("failed", msg)
                raise NonFiniteLoss(msg)
            loss_sum, correct, count = loss_sum + batch_loss, correct + batch_correct, count + batch_n
            state["step"] += 1
            state["global_step"] += 1

        logits, labels = steps.predict(loaders.val, loaders.num_classes)
        val = evaluate_logits(logits, labels)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(count, 1),
            "train_top1": correct / max(count, 1),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top2": val["top2"],
            "val_top5": val["top5"],
            "lr": lr,
            "wall_s": time.time() - epoch_t0,
        }
        append_history(run_dir, row)
        with writer.as_default(step=epoch + 1):
            for key, value in row.items():
                if key != "epoch":
                    tf.summary.scalar(key, value)
        writer.flush()

        improved = math.isfinite(val["top1"]) and val["top1"] > state["best"].get("val_top1", -1.0)
        if improved:
            state["best"] = {"epoch": epoch + 1, "val_top1": val["top1"], "val_loss": val["loss"]}
            state["bad_epochs"] = 0
            _save(ckpt_dir, best_model, state, "best", f"e{epoch + 1}")
        else:
            state["bad_epochs"] += 1
            if cfg.train.schedule == "plateau" and state["bad_epochs"] % PLATEAU_PATIENCE == 0:
                state["plateau_lr"] *= 0.5
        state.update(epoch=epoch + 1, step=0, partial=[0.0, 0, 0])
        state["wall_s"] = time.time() - t0
        _save(ckpt_dir, ckpt, state, "last", f"e{epoch + 1}")
        save_record("running")
        print(
            f"epoch {epoch + 1}/{cfg.train.epochs}  loss {row['train_loss']:.4f}  train top1 {row['train_top1']:.3f}  "
            f"val top1 {val['top1']:.3f}  lr {lr:.2e}  ({row['wall_s']:.1f} s)",
            flush=True,
        )
        if cfg.train.early_stop and state["bad_epochs"] >= cfg.train.early_stop:
            print(f"early stop: no val gain in {cfg.train.early_stop} epochs", flush=True)
            break
