"""The training policy both engines obey: every decision that shapes a table's numbers, decided once.

Framework-free on purpose. The Keras and the PyTorch engine only turn these
numbers into framework calls; neither decides anything here on its own, so a
MoViNet row and an X3D row of one table were trained and evaluated by the
same rules. Each rule is pinned by tests over made-up histories
(``tests/test_policy.py``).

Rules:

- **Best epoch**: the highest val top-1; a tie goes to the lower val loss,
  then to the earlier epoch. NaN never wins. Selection uses val, never test.
- **Learning rate** of each epoch, in closed form from the config and the
  history so far (so a resumed run, also one resumed with more epochs, gets
  exactly the rate an uninterrupted one would):
  ``none`` = ``lr``; ``cosine`` = ``lr * (1 + cos(pi * e / epochs)) / 2`` for
  the 0-based epoch ``e``; ``plateau`` = ``lr`` halved once for every
  :data:`PLATEAU_PATIENCE` consecutive epochs without a new best: after the
  3rd such epoch, the next one runs at half.
- **Early stop**: after ``early_stop`` consecutive epochs without a new best.
- **Weight decay**: decoupled, ``w -= lr * weight_decay * w`` each step, on
  kernels only (tensors with >= 2 dimensions; never biases or normalisation
  parameters), for every optimizer. ``adamw`` is therefore ``adam``.
- **Optimizers**: the constants below; RMSprop as TensorFlow defines it
  (epsilon inside the square root), which the PyTorch engine implements
  (``models/_torch_optim.py``).
- **Gradient clipping**: ``clipnorm`` clips each gradient tensor's L2 norm
  (Keras' ``clipnorm``), before weight decay and the update.
- **Resuming** a run is refused when a setting that shapes the result differs
  from the checkpoint's (:func:`fingerprint`); more epochs stay allowed.
- **Data parallelism** (several processes: DDP, MultiWorkerMirroredStrategy;
  several GPUs: MirroredStrategy) trains the run of one process with the
  whole batch: ``--batch-size`` is the global batch, split evenly
  (``utils.core.distenv.per_process_batch``), BatchNorm normalises over the
  global batch (``models/_torch_global_bn.py``, ``models/_keras_global_bn.py``),
  gradients are averaged over the global batch, and one process
  writes the run. What still differs is float summation order, and dropout,
  whose masks each process draws from its own generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from utils.core.config import RunConfig, TrainConfig

__all__ = [
    "BEFORE_IT_EXISTED",
    "FINGERPRINT_EXEMPT",
    "OPTIMIZERS",
    "PLATEAU_FACTOR",
    "PLATEAU_PATIENCE",
    "EpochResult",
    "best_epoch",
    "decays",
    "epoch_lr",
    "epochs_without_gain",
    "filled",
    "fingerprint",
    "fingerprint_diff",
    "is_better",
    "optimizer_settings",
    "should_stop",
]

PLATEAU_PATIENCE = 3  # epochs without a new best before the plateau schedule halves the LR
PLATEAU_FACTOR = 0.5

# The constants of each optimizer, the same for both engines. Adam's epsilon
# is the paper's; RMSprop's are the MoViNet paper's (and the seed thesis's).
OPTIMIZERS = {
    "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
    "adamw": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
    "sgd": {},
    "rmsprop": {"rho": 0.9, "epsilon": 1.0},
}


@dataclass(frozen=True)
class EpochResult:
    """What the policy needs to know about one finished epoch (1-based ``epoch``)."""

    epoch: int
    val_top1: float
    val_loss: float

    @classmethod
    def from_row(cls, row: dict) -> EpochResult:
        """From a history.csv row (strings) or an engine's dict."""

        def num(key):
            try:
                return float(row.get(key, "nan"))
            except (TypeError, ValueError):
                return math.nan

        return cls(int(row["epoch"]), num("val_top1"), num("val_loss"))


def _key(r: EpochResult) -> tuple:
    top1 = r.val_top1 if math.isfinite(r.val_top1) else -math.inf
    loss = r.val_loss if math.isfinite(r.val_loss) else math.inf
    return (top1, -loss, -r.epoch)


def is_better(candidate: EpochResult, best: EpochResult | None) -> bool:
    """Whether ``candidate`` replaces ``best``: higher val top-1, then lower val loss; NaN never wins."""
    if not math.isfinite(candidate.val_top1):
        return False
    return best is None or _key(candidate) > _key(best)


def best_epoch(history: Sequence[EpochResult]) -> EpochResult | None:
    """The best epoch of ``history`` (None when no epoch has a finite val top-1)."""
    best = None
    for r in history:
        if is_better(r, best):
            best = r
    return best


def epochs_without_gain(history: Sequence[EpochResult]) -> int:
    """Consecutive epochs at the end of ``history`` without a new best."""
    best, bad = None, 0
    for r in history:
        if is_better(r, best):
            best, bad = r, 0
        else:
            bad += 1
    return bad


def epoch_lr(train: TrainConfig, epoch: int, history: Sequence[EpochResult]) -> float:
    """The learning rate of the 0-based ``epoch``, given the epochs before it.

    Args:
        train: the run's training settings (``lr``, ``schedule``, ``warmup_epochs``, ``epochs``).
        epoch: 0-based epoch about to run.
        history: the finished epochs before it, in order.
    """
    # Warm-up scales whatever the schedule gives: a transformer trained from scratch on a few
    # hundred clips takes its first steps at the full rate badly (docs/pose.md).
    warm = min(1.0, (epoch + 1) / ((train.warmup_epochs or 0) + 1))
    return warm * _scheduled_lr(train, epoch, history)


def _scheduled_lr(train: TrainConfig, epoch: int, history: Sequence[EpochResult]) -> float:
    if train.schedule == "cosine":
        progress = min(epoch, train.epochs) / train.epochs
        return 0.5 * train.lr * (1.0 + math.cos(math.pi * progress))
    if train.schedule == "plateau":
        best, bad, halvings = None, 0, 0
        for r in history[:epoch]:
            if is_better(r, best):
                best, bad = r, 0
            else:
                bad += 1
                if bad % PLATEAU_PATIENCE == 0:
                    halvings += 1
        return train.lr * PLATEAU_FACTOR**halvings
    return train.lr


def should_stop(train: TrainConfig, history: Sequence[EpochResult]) -> bool:
    """Early stop: ``early_stop`` (> 0) consecutive epochs without a new best."""
    return bool(train.early_stop) and epochs_without_gain(history) >= train.early_stop


def decays(shape: Sequence[int]) -> bool:
    """Whether weight decay applies to a parameter of this shape: kernels (>= 2 dims) only."""
    return len(tuple(shape)) >= 2


def optimizer_settings(train: TrainConfig) -> dict:
    """The numbers an engine builds its optimizer from: kind, lr, its constants, momentum, decay, clipnorm."""
    settings = {"kind": "adam" if train.optimizer == "adamw" else train.optimizer, "lr": train.lr,
                **OPTIMIZERS[train.optimizer], "weight_decay": train.weight_decay, "clipnorm": train.clipnorm}  # fmt: skip
    if train.optimizer in ("sgd", "rmsprop"):
        settings["momentum"] = train.momentum
    return settings


# The one rule of which settings shape a result. Neutral: where a run writes, what it is
# called, how fast it goes, whether it writes TensorBoard events; they never make two runs
# different (resume, the report's rows).
RESULT_NEUTRAL = frozenset(
    {"run_id", "results", "tags", "dry_run", "tensorboard", "train.resume", "train.compile", "train.channels_last",
     "data.workers"}
)  # fmt: skip
# A run may resume with more epochs; the seeds of one table row differ in their seed and (moved) store.
FINGERPRINT_EXEMPT = RESULT_NEUTRAL | {"train.epochs"}
ROW_EXEMPT = RESULT_NEUTRAL | {"train.seed", "data.root"}


def settings(config: dict, exempt: frozenset = FINGERPRINT_EXEMPT, prefix: str = "") -> dict:
    """A config (nested dicts) as flat ``section.key -> value``, without the ``exempt`` keys.

    Used by the resume check (:func:`fingerprint`, exempt :data:`FINGERPRINT_EXEMPT`) and by
    the report (which runs a row may average, exempt :data:`ROW_EXEMPT`).
    """
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name in exempt:
            continue  # tags and the like: not flattened, so none of their keys count either
        if isinstance(value, dict) and name != "model.options":
            out.update(settings(value, exempt, f"{name}."))
        else:
            out[name] = value
    return out


def fingerprint(cfg: RunConfig | dict, store: str | None = None) -> dict:
    """The settings that shape a run's result, as flat ``section.key -> value`` (JSON-ready).

    The store is identified by what it holds, ``store`` (``wlasl.clip_store.store_digest``:
    its store.json and manifest), never by where it lies: a run moved with its store to
    another filesystem or folder name still resumes, and a run pointed at another store in
    a folder of the same name does not. Without ``store`` (the HParams table, checkpoints
    from before the digest) the store is its folder's name.
    """
    flat = settings(cfg.to_dict() if isinstance(cfg, RunConfig) else cfg)
    flat = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flat.items()}
    if store is not None:
        flat.pop("data.root", None)
        flat["data.store"] = store
    elif isinstance(flat.get("data.root"), str):
        flat["data.root"] = flat["data.root"].rstrip("/").rsplit("/", 1)[-1]
    return flat


# Settings whose code default is "the model's own" (None, filled in by models.train.resolve), as a
# run checkpointed before the setting existed had them: it trained without warm-up.
BEFORE_IT_EXISTED = {"train.warmup_epochs": 0}


@functools.cache  # the report fills every run's settings; the defaults never change in a process
def _defaults() -> dict:
    """What a setting missing from an older checkpoint was: its code default, or :data:`BEFORE_IT_EXISTED`."""
    from utils.core.config import config_from_dict

    return {**fingerprint(config_from_dict({"model": {"name": ""}, "data": {"root": ""}})), **BEFORE_IT_EXISTED}


def filled(flat: dict, exempt: frozenset = FINGERPRINT_EXEMPT) -> dict:
    """``flat`` (from :func:`fingerprint` or :func:`settings`) with every setting it lacks, as it was then.

    A record or checkpoint written before a setting existed lacks it; it trained
    with the setting's code default (or :data:`BEFORE_IT_EXISTED`), so adding a
    setting never makes an older run look different, to resume or to the report.
    """
    defaults = {k: v for k, v in _defaults().items() if k not in ("model.name", "data.root") and k not in exempt}
    return {**defaults, **flat}  # a copy: the cached defaults are never handed out


def fingerprint_diff(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every setting that differs (empty when the run may resume).

    A setting the saved fingerprint lacks (an option added to the suite after
    the run started) counts as what it was then (:func:`filled`), so adding
    options never breaks the resume of older runs that did not use them.
    """
    saved = filled(saved)
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k, '(unset)')!r} -> {current.get(k, '(unset)')!r}" for k in keys if saved.get(k) != current.get(k)]
