"""What a run shows in TensorBoard: ``<run_dir>/tb/``, written by :class:`models.lifecycle.Run` for both engines.

Tags (one TensorBoard run per training run, so one curve per run in each chart):

- per epoch, step = the epoch (1, 2, ...): ``epoch/train_loss``,
  ``epoch/train_top1``, ``epoch/lr``, ``epoch/val_loss``, ``epoch/val_top1``,
  ``epoch/val_top2``, ``epoch/val_top5`` (the row ``history.csv`` gets);
- within long epochs, at each heartbeat line (``models.lifecycle.HEARTBEAT_S``),
  step = training steps since the run began (``epoch * steps_per_epoch + step``):
  ``heartbeat/train_loss`` and ``heartbeat/train_top1``, the mean over the
  steps since the previous heartbeat;
- at the end, step = the last epoch: ``final/<split>_<metric>`` (the record's
  val and test metrics, of the best-on-val weights), the images
  ``images/<split>_confusion`` and ``images/<split>_per_class_top1``, and the HParams
  session's end (``success``; ``failure`` when the run failed). The session's
  start, written when the process starts, holds the run's hyperparameters:
  every result-shaping setting (:func:`models.policy.fingerprint`), plus the
  study and trial of a tuning trial.

A requeued run continues the same curves without a duplicated or backwards
step. Each process start rewrites the folder into one new file: the points
of epochs up to the checkpoint it resumes from, and the heartbeats up to its
step, in order; then it deletes the older files and appends to the new one.
Points a killed process wrote after its last checkpoint go with them. That
cannot be left to TensorBoard: measured with TensorBoard 2.20, a later file
that repeats steps 3-4 of an earlier file's 1-5 is served as 1, 2, 3', 4' by
the Rust data server (the default) but as 1, 2, 3, 4, 5, 3', 4' by the
Python loader (``--load_fast=false``). A server already running when a job
restarts has read the old file: the Rust server replaces repeated steps as
above; for the Python loader the new file opens with a ``SessionLog.START``
(:func:`utils.core.tb_events.restart`), on which it drops what it held.
"""

from __future__ import annotations

import math
import sys
import time
import types
import typing
from pathlib import Path

from models import policy
from utils.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig

__all__ = ["EPOCH_TAGS", "FINAL_SPLITS", "HEARTBEAT_TAGS", "METRICS", "TB_DIR", "RunBoard", "hparam_types", "run_hparams",
           "split_images", "write_experiment"]

TB_DIR = "tb"
# history.csv column -> tag
# (TensorBoard shows tag groups in name order: "epoch" first, then "final", "heartbeat", "images".)
EPOCH_TAGS = {col: f"epoch/{col}" for col in ("train_loss", "train_top1", "lr", "val_loss", "val_top1", "val_top2", "val_top5")}
HEARTBEAT_TAGS = {"loss": "heartbeat/train_loss", "top1": "heartbeat/train_top1"}
FINAL_SPLITS = ("val", "test")
FINAL_METRICS = ("top1", "top5", "loss", "per_class_top1")
# The HParams table's metric columns: the final metrics, then the live val curve (the last epoch's value).
METRICS = {
    **{f"final/{s}_{m}": f"{s} {m} (best-on-val weights)" for s in FINAL_SPLITS for m in FINAL_METRICS},
    "epoch/val_top1": "val top1 (last epoch)",
    "epoch/val_loss": "val loss (last epoch)",
}
# Tags of the run's record that say who it belongs to (tuning), shown beside the settings.
HPARAM_TAGS = ("study", "trial")
# Shown although a resume may change it (more epochs): Hyperband's trials differ in it.
HPARAM_EXTRA = ("train.epochs",)
_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def run_hparams(cfg: RunConfig) -> dict:
    """The run's hyperparameters as the HParams plugin shows them: ``section.key -> bool | number | text``.

    Every result-shaping setting (:func:`models.policy.fingerprint`, so never
    the run id, the results folder or TensorBoard itself) and the epochs, the
    builder options as ``model.options.<name>``, and a trial's study and trial
    id. Unset settings (None) are left out; lists become comma-separated text.
    """
    flat = policy.fingerprint(cfg)
    flat.update({key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in HPARAM_EXTRA})
    out = {}
    for key, value in flat.items():
        items = {f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value}
        for name, v in items.items():
            if v is None:
                continue
            out[name] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    out.update({t: str(cfg.tags[t]) for t in HPARAM_TAGS if t in cfg.tags})
    return out


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, (int, float)) else "string"


def hparam_types(cfg: RunConfig) -> dict[str, str]:
    """``name -> number | string | bool`` of every hyperparameter a run of ``cfg`` shows (unset ones too)."""
    out = {}
    for key in [*policy.fingerprint(cfg), *HPARAM_EXTRA]:
        section, _, field = key.partition(".")
        hint = typing.get_type_hints(_SECTIONS[section])[field] if section in _SECTIONS else str
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        out[key] = {bool: "bool", int: "number", float: "number"}.get(hint, "string")
    out.pop("model.options", None)  # a mapping: its entries come from run_hparams below
    out.update({name: _kind(v) for name, v in run_hparams(cfg).items()})
    out.update({tag: "string" for tag in HPARAM_TAGS})
    return out


def write_experiment(folder: str | Path, cfg: RunConfig) -> Path:
    """The HParams experiment (its columns) for the runs below ``folder``: a tuning study's root.

    Written to ``<folder>/tb/``, so ``tensorboard --logdir <folder>`` shows
    one table over every run below it. The columns are the same for every
    study and plain run (no per-study domains), so under a wider ``--logdir``
    (``results/``), where TensorBoard uses whichever experiment it finds
    first, no run is filtered out.
    """
    from utils.core import tb_events

    tb = Path(folder) / TB_DIR
    tb.mkdir(parents=True, exist_ok=True)
    path = tb / "events.out.tfevents.0000000000.experiment"  # one file, replaced whole
    tb_events.write_file(path, [tb_events.experiment(hparam_types(cfg), METRICS)])
    return path


def split_images(split: str, labels, logits, glosses: list[str]) -> dict[str, bytes]:
    """``images/<split>_confusion`` and ``images/<split>_per_class_top1`` as PNGs (:mod:`models.figures`)."""
    import numpy as np

    from models.evaluation import class_summary, top_classes
    from models.figures import confusion_figure, per_class_figure, png_bytes

    labels = np.asarray(labels, np.int64)
    cm, top1, _, counts = class_summary(labels, top_classes(logits), len(glosses))
    return {
        f"images/{split}_confusion": png_bytes(confusion_figure(cm, glosses, f"{split} confusion (best-on-val weights)")),
        f"images/{split}_per_class_top1": png_bytes(per_class_figure(top1, counts, glosses, split)),
    }


def _scalar_limit(tag: str, keep_epochs: int, keep_steps: int) -> int | None:
    """How far a point of ``tag`` survives a restart (None: not at all, it is written again)."""
    if tag in EPOCH_TAGS.values():
        return keep_epochs
    if tag in HEARTBEAT_TAGS.values():
        return keep_steps
    return None


def _kept(files: list[Path], keep_epochs: int, keep_steps: int) -> list:
    """The points of ``files`` a restart keeps, in order, each tag's steps strictly increasing.

    A point whose step is not past its tag's previous one replaces the points
    from that step on (a restart that went back: the later file is the newer
    truth), which also removes the copies a restart killed half-way leaves.
    """
    from utils.core import tb_events

    events, by_tag, dropped = [], {}, set()
    for path in files:
        for event in tb_events.read_events(path):
            values = event.summary.value
            if len(values) != 1 or not values[0].HasField("simple_value"):
                continue  # images and HParams sessions: written again at the end / the start
            tag = values[0].tag
            limit = _scalar_limit(tag, keep_epochs, keep_steps)
            if limit is None or event.step > limit:
                continue
            earlier = by_tag.setdefault(tag, [])
            while earlier and events[earlier[-1]].step >= event.step:
                dropped.add(earlier.pop())
            earlier.append(len(events))
            events.append(event)
    return [e for i, e in enumerate(events) if i not in dropped]


class RunBoard:
    """The run's TensorBoard folder for one process (the main rank's).

    Args:
        folder: ``<run_dir>/tb``.
        keep_epochs: epochs done by the checkpoint this process resumes from (0: a fresh start).
        keep_steps: training steps done by then (heartbeat points up to it survive).
        hparams: :func:`run_hparams` of the run.

    Writing never stops a run: a failed write (disk full, permissions) prints
    one warning naming the folder, and the run goes on without event files.
    """

    def __init__(self, folder: str | Path, *, keep_epochs: int, keep_steps: int, hparams: dict):
        self.folder, self._file = Path(folder), None
        try:
            self._open(keep_epochs, keep_steps, hparams)
        except ImportError as e:
            print(f"warning: no TensorBoard events for this run: {e}; pip install tensorboard -c constraints.txt",
                  file=sys.stderr, flush=True)  # fmt: skip
        except OSError as e:
            self._stop(e)

    def _open(self, keep_epochs: int, keep_steps: int, hparams: dict) -> None:
        from utils.core import tb_events as ev

        self._ev = ev
        self.folder.mkdir(parents=True, exist_ok=True)
        ev.remove_pending(self.folder)  # the run lock is held: no other process writes here
        old = ev.event_files(self.folder)
        path = self.folder / ev.event_file_name(self.folder)
        # The kept points reach their new file before the old files go: a kill in between
        # leaves copies, which the next start drops the same way. The restart marker first, so a
        # TensorBoard that already shows the old file replaces its points instead of adding these.
        ev.write_file(path, [ev.restart(), *_kept(old, keep_epochs, keep_steps)])
        for p in old:
            p.unlink(missing_ok=True)
        self._file = ev.EventFile(path)
        self._file.write([ev.session_start(hparams, start_time=time.time())])

    def __bool__(self) -> bool:
        """Whether events are being written (False after a failed write, or without the tensorboard package)."""
        return self._file is not None

    def _guard(self, fn, *args) -> None:
        if self._file is None:
            return
        try:
            fn(*args)
        except OSError as e:
            self._stop(e)

    def _stop(self, e: OSError) -> None:
        print(f"warning: TensorBoard events in {self.folder} stop here ({type(e).__name__}: {e}); "
              f"the run goes on without them", file=sys.stderr, flush=True)  # fmt: skip
        try:
            self.close()
        except OSError:
            self._file = None

    def _scalars(self, values: dict, step: int) -> None:
        now = time.time()
        self._file.write([self._ev.scalar(tag, v, step, now) for tag, v in values.items() if v is not None and math.isfinite(v)])

    def epoch(self, row: dict) -> None:
        """One epoch's row (``history.csv``'s columns), at step = its epoch."""
        self._guard(self._scalars, {tag: row.get(col) for col, tag in EPOCH_TAGS.items()}, int(row["epoch"]))

    def heartbeat(self, step: int, loss: float, top1: float) -> None:
        """The mean train loss and top-1 since the previous heartbeat, at step = training steps so far."""
        self._guard(self._scalars, {HEARTBEAT_TAGS["loss"]: loss, HEARTBEAT_TAGS["top1"]: top1}, step)

    def finish(self, epoch: int, metrics: dict, images: dict[str, bytes]) -> None:
        """The final metrics and images at step ``epoch``, then the session's end (success)."""
        final = {f"final/{s}_{m}": metrics.get(s, {}).get(m) for s in FINAL_SPLITS for m in FINAL_METRICS}
        self._guard(self._scalars, final, epoch)
        self._guard(lambda: self._file.write([self._ev.image(tag, png, epoch) for tag, png in images.items()]))
        self.end("success", epoch)

    def end(self, status: str, epoch: int = 0) -> None:
        """The HParams session's end: ``success`` or ``failure``."""
        self._guard(lambda: self._file.write([self._ev.session_end(status, end_time=time.time(), step=epoch)]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
