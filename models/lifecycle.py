"""The life of one run directory, the same for both engines.

:class:`Run` owns everything an engine must not decide on its own: what a
run writes (``config.json``, ``metrics.json`` through running / stopped /
failed / completed, ``history.csv``, the evaluation outputs), when it may
resume, which epoch is best, the learning rate of each epoch and when to
stop (through :mod:`models.policy`), the checkpoint bookkeeping, every
log line, the TensorBoard events (``tb/``, :mod:`models.tensorboard_run`),
and the one epoch loop of both engines (:meth:`Run.train`). An engine
(:class:`Engine`, the contract ``models/engine_keras.py`` and
``models/engine_torch.py`` implement) supplies framework code only: a
:class:`Trainer` whose :class:`Checkpointer` saves and loads its files, one
training step, and predictions; the loaders supply the training batches of
an epoch through one interface (:class:`wlasl.transforms.TrainStream`).

Checkpoints (``checkpoints/``): the engine writes its files under names the
run gives it (``last-e3s0``, ``best-e2``); ``state.json`` then records them,
relative to ``checkpoints/`` so a copied or moved run resumes. The state
keeps the two newest "last" checkpoints: a damaged newest one (a node died
while writing it) falls back to the one before with a warning that names
the file. Files no entry refers to (older checkpoints, temporaries of a
killed write) are deleted.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from models import policy
from models.tensorboard_run import TB_DIR, RunBoard, run_hparams
from utils.core.config import RunConfig
from utils.core.files import atomic_write_text, make_dirs
from utils.core.metrics import METRICS, evaluate_logits
from utils.core.preempt import Cancelled, Preempted
from utils.core.records import RunRecord, append_history, read_history, read_record, write_json, write_record
from utils.core.runlock import RunLock
from wlasl.clip_store import store_digest

__all__ = ["HEARTBEAT_S", "Checkpointer", "Engine", "NonFiniteLoss", "ResumeRefused", "Run", "Sums", "Trainer"]

STATE_FILE = "state.json"
STATE_SCHEMA = 2
KEEP_LAST = 2  # "last" checkpoints kept: the newest and a fallback
HEARTBEAT_S = 60.0  # a progress line inside epochs that run longer than this
LOCK_WAIT_S = 30.0  # a requeued job may start while its previous process is still exiting


class NonFiniteLoss(ValueError):
    """The training loss became NaN or inf; the message gives the epoch, step and learning rate."""


class ResumeRefused(ValueError):
    """The run directory holds a checkpoint this run may not resume from (the message says why and what to do)."""


class Checkpointer(Protocol):
    """The engine's checkpoint I/O, called by :class:`Run`.

    ``save(kind, tag)`` writes ``kind`` (``last``: everything a resume needs;
    ``best``: the weights) under ``checkpoints/<kind>-<tag>...`` and returns
    the file names (or name prefixes) it wrote, relative to ``checkpoints/``;
    on a non-writing rank it writes nothing and returns the same names.
    ``load(kind, files)`` restores them and raises on a damaged file.
    """

    def save(self, kind: str, tag: str) -> list[str]: ...

    def load(self, kind: str, files: list[str]) -> None: ...


class Trainer(Protocol):
    """The framework half of :meth:`Run.train`, the epoch loop both engines share.

    ``begin_epoch(batches)`` readies the model for training and returns the
    epoch's batches as the step consumes them (the Keras side distributes
    them over its replicas); ``train_step(batch)`` returns the summed loss,
    the correct count and the clip count of one step; ``stop_requested(flag)``
    says whether any process of the run saw a stop signal (the same answer in
    every process); ``predict(data)`` gives logits and labels over evaluation
    batches with the current weights; ``end_training()`` waits for every
    process (before the final evaluation, and before a stopped run exits).
    """

    checkpointer: Checkpointer

    def set_lr(self, lr: float) -> None: ...

    def begin_epoch(self, batches: Iterable) -> Iterable: ...

    def train_step(self, batch) -> tuple[float, float, int]: ...

    def stop_requested(self, flag) -> bool: ...

    def predict(self, data) -> tuple: ...

    def end_training(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """What a framework's engine module offers (``models/engine_keras.py``, ``models/engine_torch.py``).

    ``prepare_process(cfg)`` sets the process up before the loaders touch the
    framework; ``build_scope(cfg)`` is where the model is built (seed, dtype,
    distribution); ``fit`` trains through :meth:`Run.train`; ``predict_logits``
    and ``load_weights`` serve a finished run's model (export, distillation).
    """

    def prepare_process(self, cfg: RunConfig) -> None: ...

    def build_scope(self, cfg: RunConfig) -> AbstractContextManager: ...

    def fit(self, model, loaders, cfg: RunConfig, run_dir, *, flag=None, distill=None) -> RunRecord: ...

    def predict_logits(self, model, dataset) -> tuple: ...

    def load_weights(self, model, folder: Path, files: list[str]) -> None: ...


@dataclass
class Sums:
    """Running sums of a training epoch (checkpointed with a mid-epoch stop)."""

    loss: float = 0.0
    correct: float = 0.0
    count: int = 0
    step: int = 0

    def add(self, loss_sum: float, correct: float, count: int) -> None:
        self.loss += float(loss_sum)
        self.correct += float(correct)
        self.count += int(count)
        self.step += 1

    def means(self) -> tuple[float, float]:
        n = max(self.count, 1)
        return self.loss / n, self.correct / n


class Run:
    """One run directory's lifecycle; see the module docstring.

    Args:
        run_dir: ``<results>/runs/<run_id>``.
        cfg: the resolved run configuration.
        framework: ``keras`` or ``torch``.
        num_classes: the store's class count (a checkpoint for another count is refused).
        env: what to record about the environment (``utils.core.records.environment``).
        main: whether this process writes (rank 0 of a distributed run).

    Raises:
        ValueError: the directory holds a checkpoint and resume is off, or the
            checkpoint belongs to another model, class count or settings.
    """

    def __init__(self, run_dir: str | Path, cfg: RunConfig, *, framework: str, num_classes: int, env: dict, main: bool = True):
        self.dir = Path(run_dir)
        self.ckpt_dir = self.dir / "checkpoints"
        self.cfg, self.main, self.num_classes = cfg, main, num_classes
        self.fingerprint = policy.fingerprint(cfg, store=store_digest(cfg.data.root))
        self.state = self._read_state()
        self.entry: dict | None = None  # the checkpoint resumed from
        self.record = RunRecord(
            run_id=cfg.run_id or self.dir.name, model=cfg.model.name, framework=framework, config=cfg.to_dict(),
            env={**env, "num_classes": num_classes}, tags=dict(cfg.tags),
        )  # fmt: skip
        self.history: list[policy.EpochResult] = []
        self.board: RunBoard | None = None  # opened by resume(), once the resume point is known
        self._steps_per_epoch: int | None = None  # learnt from step(); kept in the checkpoint state
        self._beat: tuple = (None, 0.0, 0.0, 0)  # (epoch, loss, correct, count) at the last heartbeat
        self.epoch = 0
        self.stopped_early = False
        self._best: dict | None = None
        self._wall0 = 0.0
        self._t0 = time.monotonic()
        self._tick = self._t0

    # ------------------------------------------------------------------ state

    def _read_state(self) -> dict | None:
        path = self.ckpt_dir / STATE_FILE
        if not path.is_file():
            return None
        if not self.cfg.train.resume:
            raise ResumeRefused(
                f"{self.dir} already holds a checkpoint and resume is off (--no-resume); "
                f"delete {self.dir} or pick another --run-id"
            )
        try:
            state = json.loads(path.read_text())
            entries = state["checkpoints"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ResumeRefused(
                f"{path} is damaged ({type(e).__name__}: {e}); its run cannot resume. Delete {self.dir} to start "
                f"over, or restore the folder from a backup"
            ) from None
        if state.get("schema") != STATE_SCHEMA or not entries:
            raise ResumeRefused(
                f"{path} was written by another version of the suite (schema {state.get('schema')!r}, "
                f"expected {STATE_SCHEMA}); train into a new --run-id"
            )
        if state["num_classes"] != self.num_classes:
            raise ResumeRefused(
                f"the checkpoint in {self.ckpt_dir} was trained for {state['num_classes']} classes but the store has "
                f"{self.num_classes}; pick another --run-id, or start a new run from it with --pretrained"
            )
        if state["model"] != self.cfg.model.name:
            raise ResumeRefused(
                f"{self.dir} holds a {state['model']} run, this command trains {self.cfg.model.name}; "
                f"pick another --run-id"
            )
        saved = state["fingerprint"]
        # A checkpoint from before stores were told apart by content names its store's folder, as then.
        current = self.fingerprint if "data.store" in saved else policy.fingerprint(self.cfg)
        diff = policy.fingerprint_diff(saved, current)
        if any(d.startswith("data.store:") for d in diff):
            raise ResumeRefused(
                f"{self.dir} was trained on another store than {self.cfg.data.root} holds now (its store.json or "
                f"manifest.csv differ: other clips, or the store was made again). Train on the original store, or "
                f"pick another --run-id to start a new run on this one"
            )
        if diff:
            raise ResumeRefused(
                f"{self.dir} was trained with other settings, so it cannot resume with these ({'; '.join(diff)}). "
                f"Rerun with the original settings (more --epochs is fine), or pick another --run-id"
            )
        return state

    def _write_state(self, entry: dict) -> None:
        entries = [entry] + (self.state or {}).get("checkpoints", [])[: KEEP_LAST - 1]
        self.state = {"schema": STATE_SCHEMA, "model": self.cfg.model.name, "num_classes": self.num_classes,
                      "fingerprint": self.fingerprint, "checkpoints": entries}  # fmt: skip
        if not self.main:
            return
        atomic_write_text(self.ckpt_dir / STATE_FILE, json.dumps(self.state, indent=1), fsync=True)
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Delete checkpoint files no entry refers to (old checkpoints, temporaries of a killed write)."""
        keep = {STATE_FILE}
        for e in self.state["checkpoints"]:
            keep.update(e["files"])
            keep.update((e.get("best") or {}).get("files", []))
        for path in self.ckpt_dir.iterdir():
            if not any(path.name == k or path.name.startswith(k + ".") for k in keep):
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def done(self) -> bool:
        """The run already completed these epochs (a rerun of a finished job): nothing to do."""
        path = self.dir / "metrics.json"
        if self.state is None or not path.is_file():
            return False
        try:
            record = read_record(path)
        except ValueError:
            return False
        newest = self.state["checkpoints"][0]
        finished = newest["epoch"] >= self.cfg.train.epochs or newest.get("stopped_early")
        from models.evaluation import SCORE_SPLITS

        # Scores deleted (a damaged file's fix): not done, the finish evaluates the kept best weights again.
        scored = all((self.dir / f"scores_{split}.npz").is_file() for split in SCORE_SPLITS)
        if record.status == "completed" and finished and scored:
            self.record = record
            return True
        return False

    @contextmanager
    def active(self):
        """Hold the run while it trains: the run lock, config and record first, failures recorded on the way out.

        The lock (``utils.core.runlock``) tells the report a live "running"
        record from one whose process was killed; a second process on the
        same run is refused instead of corrupting it.
        """
        if self.main:
            make_dirs(self.ckpt_dir, f"run {self.record.run_id} (--results {self.cfg.results})")
        with RunLock(self.dir, wait_s=LOCK_WAIT_S) if self.main else nullcontext():
            if self.main:
                write_json(self.dir / "config.json", self.cfg.to_dict())
            self.save_record("running")
            try:
                yield self
            except Preempted:
                raise
            except BaseException as e:
                error = str(e) if isinstance(e, NonFiniteLoss) else f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
                self.save_record("failed", error)
                if self.board:
                    self.board.end("failure", self.epoch)
                raise
            finally:
                if self.board:
                    self.board.close()

    def resume(self, ckpt: Checkpointer) -> Sums:
        """Restore the newest loadable checkpoint (if any); returns the partial epoch's sums to continue from."""
        if self.state is None:
            self._open_board(0, 0)
            return Sums()
        for i, entry in enumerate(self.state["checkpoints"]):
            try:
                ckpt.load("last", entry["files"])
            except Exception as e:  # noqa: BLE001 - any damage (truncated, empty, unreadable) falls back
                names = ", ".join(str(self.ckpt_dir / f) for f in entry["files"])
                rest = self.state["checkpoints"][i + 1 :]
                if not rest:
                    raise ResumeRefused(
                        f"checkpoint {names} is damaged ({type(e).__name__}: {str(e)[:200]}) and no earlier one is "
                        f"kept; delete {self.dir} to train from scratch, or restore it from a backup"
                    ) from None
                self.log(f"warning: checkpoint {names} is damaged ({type(e).__name__}: {str(e)[:200]}); "
                         f"falling back to the one before it (epoch {rest[0]['epoch'] + 1})")  # fmt: skip
                continue
            self.entry = entry
            # Newer (damaged) entries are dropped: they must not become the fallback.
            self.state["checkpoints"] = self.state["checkpoints"][i:]
            break
        e = self.entry
        self.epoch, self.stopped_early, self._best, self._wall0 = e["epoch"], bool(e.get("stopped_early")), e.get("best"), e["wall_s"]
        rows = [r for r in read_history(self.dir) if int(r["epoch"]) <= self.epoch]
        self.history = [policy.EpochResult.from_row(r) for r in rows]
        self.record.epochs, self.record.best = self.epoch, self._best_public()
        self.record.env["resumed_from"] = {"epoch": self.epoch + 1, "step": e["step"], "checkpoint": e["files"][0]}
        self.log(f"resuming {self.record.run_id} from epoch {self.epoch + 1}, step {e['step']} "
                 f"(checkpoint {self.ckpt_dir / e['files'][0]})")  # fmt: skip
        self._steps_per_epoch = e.get("steps_per_epoch")
        self._open_board(self.epoch, self.epoch * (self._steps_per_epoch or 0) + e["step"])
        return Sums(**e["sums"]) if e.get("sums") else Sums()

    def _open_board(self, epochs: int, steps: int) -> None:
        """TensorBoard's folder for this process: what the resume point keeps, then this start's session."""
        if self.main and self.cfg.writes_tensorboard:
            self.board = RunBoard(self.dir / TB_DIR, keep_epochs=epochs, keep_steps=steps, hparams=run_hparams(self.cfg))

    def epochs(self) -> Iterator[int]:
        """The 0-based epochs left to run."""
        if self.stopped_early:
            return
        for epoch in range(self.epoch, self.cfg.train.epochs):
            self._tick = time.monotonic()
            self._epoch_t0 = self._tick
            yield epoch

    def lr(self, epoch: int) -> float:
        return policy.epoch_lr(self.cfg.train, epoch, self.history)

    def step(self, epoch: int, sums: Sums, steps: int, lr: float) -> None:
        """After each training step: check the loss, and print a heartbeat in long epochs."""
        if not math.isfinite(sums.loss):
            raise NonFiniteLoss(
                f"non-finite training loss ({sums.loss}) at epoch {epoch + 1}, step {sums.step} with learning rate "
                f"{lr:.3g}; lower --lr, check the data, or turn off --mixed-precision"
            )
        self._steps_per_epoch = steps
        now = time.monotonic()
        if now - self._tick >= HEARTBEAT_S:
            self._tick = now
            loss, top1 = sums.means()
            self.log(f"epoch {epoch + 1}/{self.cfg.train.epochs}  step {sums.step}/{steps}  train loss {loss:.4f} "
                     f"top1 {top1:.3f}  ({now - self._epoch_t0:.0f} s into the epoch)")  # fmt: skip
            # TensorBoard gets the mean since the previous heartbeat of this epoch, at the run's step count.
            _, b_loss, b_correct, b_count = self._beat if self._beat[0] == epoch else (epoch, 0.0, 0.0, 0)
            if self.board and sums.count > b_count:
                n = sums.count - b_count
                self.board.heartbeat(epoch * steps + sums.step, (sums.loss - b_loss) / n, (sums.correct - b_correct) / n)
            self._beat = (epoch, sums.loss, sums.correct, sums.count)

    def preempt(self, ckpt: Checkpointer, epoch: int, sums: Sums, flag, wait: Callable[[], None] = lambda: None) -> None:
        """Checkpoint mid-epoch, record "stopped" (preempted: it requeues) or "cancelled" (scancel), and raise.

        ``wait`` returns once every process of the run got there (the trainer's
        ``end_training``): every process leaves with the same exit code (85 or
        86) after the writing one has written, so srun, which ends the other
        tasks of a step a while after the first one ends
        (``utils.cluster.launch``), never cuts the writing short.

        Raises:
            Cancelled: the job was cancelled; the checkpoint is kept for a later rerun.
            Preempted: otherwise; the job requeues itself (or, outside SLURM, the same command resumes).
        """
        self._checkpoint(ckpt, epoch, sums)
        where = f"epoch {epoch + 1}, step {sums.step}"
        cancelled = getattr(flag, "cancelled", False)
        if cancelled:
            self.save_record("cancelled", f"cancelled (scancel) at {where}; the checkpoint is kept: run the same "
                             "command again to resume")  # fmt: skip
        else:
            self.save_record("stopped", f"preempted by signal {flag.requested} at {where}")
        wait()
        if cancelled:
            raise Cancelled(f"cancelled at {where}; checkpoint saved, the same command resumes it")
        then = "the job requeues itself and resumes" if os.environ.get("SLURM_JOB_ID") else "rerun the same command to resume"
        raise Preempted(f"signal {flag.requested} at {where}; checkpoint saved, {then}")

    def train(self, trainer: Trainer, loaders, flag) -> RunRecord:
        """The epoch loop of both engines: resume, train epoch by epoch, keep the best, evaluate it.

        Each epoch's batches come from ``loaders.train.epoch(epoch, skip, max_batches)``
        (a resumed epoch skips the batches it already trained on; ``steps_per_epoch``
        caps an epoch here, for every loader); ``flag`` is polled before every step.
        """
        with self.active():
            sums = self.resume(trainer.checkpointer)
            cap = self.cfg.train.steps_per_epoch
            total = len(loaders.train) if cap is None else min(cap, len(loaders.train))
            for epoch in self.epochs():
                lr = self.lr(epoch)
                trainer.set_lr(lr)
                for batch in trainer.begin_epoch(loaders.train.epoch(epoch, sums.step, cap)):
                    if trainer.stop_requested(flag):
                        self.preempt(trainer.checkpointer, epoch, sums, flag, wait=trainer.end_training)
                    sums.add(*trainer.train_step(batch))
                    self.step(epoch, sums, total, lr)
                if self.end_epoch(trainer.checkpointer, epoch, sums, evaluate_logits(*trainer.predict(loaders.val)), lr):
                    break
                sums = Sums()
            trainer.end_training()
            self.log("evaluating the best-on-val weights on the train, val and test splits")
            evaluation = {"train": loaders.train_eval, "val": loaders.val, "test": loaders.test}
            return self.finish(trainer.checkpointer, lambda split: trainer.predict(evaluation[split]), loaders.ids,
                               loaders.glosses)  # fmt: skip

    def end_epoch(self, ckpt: Checkpointer, epoch: int, sums: Sums, val: dict, lr: float) -> bool:
        """Record the epoch, keep the best weights, checkpoint; returns True when training should stop early."""
        wall = time.monotonic() - self._epoch_t0
        train_loss, train_top1 = sums.means()
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_top1": train_top1,
               **{f"val_{m.key}": val[m.key] for m in METRICS if m.per_epoch}, "lr": lr, "wall_s": wall}  # fmt: skip
        if self.main:
            append_history(self.dir, {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
        if self.board:  # beside history.csv, before the checkpoint: a restart drops what outlives it, as there
            self.board.epoch(row)
        result = policy.EpochResult(epoch + 1, val["top1"], val["loss"])
        best = policy.EpochResult(self._best["epoch"], self._best["val_top1"], self._best["val_loss"]) if self._best else None
        if policy.is_better(result, best):
            self._best = {"epoch": epoch + 1, "val_top1": val["top1"], "val_loss": val["loss"],
                          "files": ckpt.save("best", f"e{epoch + 1}")}  # fmt: skip
        self.history = self.history[:epoch] + [result]
        self.stopped_early = policy.should_stop(self.cfg.train, self.history)
        self._checkpoint(ckpt, epoch + 1, Sums())
        self.record.epochs, self.record.best = epoch + 1, self._best_public()
        self.save_record("running")
        self.log(f"epoch {epoch + 1}/{self.cfg.train.epochs}  train loss {train_loss:.4f} top1 {train_top1:.3f}  "
                 f"val loss {val['loss']:.4f} top1 {val['top1']:.3f} top5 {val['top5']:.3f}  lr {lr:.3g}  {wall:.1f} s")  # fmt: skip
        if self.stopped_early:
            self.log(f"early stop: no gain on val for {self.cfg.train.early_stop} epochs")
        return self.stopped_early

    def finish(self, ckpt: Checkpointer, predict: Callable[[str], tuple], ids: dict, glosses: list[str]) -> RunRecord:
        """Evaluate the best-on-val weights on every split, write the outputs, record "completed".

        Args:
            ckpt: to load the best weights.
            predict: ``split -> (logits, labels)`` with the current weights.
            ids: ``split -> video ids`` in the order ``predict`` returns them.
            glosses: class names.
        """
        from models.evaluation import SCORE_SPLITS, write_split
        from models.tensorboard_run import FINAL_SPLITS, split_images

        if self._best:
            ckpt.load("best", self._best["files"])
        metrics, images = {}, {}
        for split in SCORE_SPLITS:
            logits, labels = predict(split)
            if self.board and split in FINAL_SPLITS:
                images.update(split_images(split, labels, logits, glosses))
            if self.main:
                metrics[split] = write_split(self.dir, split, ids[split], labels, logits, glosses)
            else:
                metrics[split] = evaluate_logits(logits, labels)
        if math.isnan(metrics["val"]["top1"]):
            self.log("warning: the val split is empty; the best epoch is arbitrary")
        self.record.metrics = metrics
        if self.board:  # before the record says completed: a rerun of a completed run writes nothing
            self.board.finish(self.record.epochs, metrics, images)
        self.save_record("completed")
        return self.record

    # ------------------------------------------------------------------ helpers

    def _checkpoint(self, ckpt: Checkpointer, epoch: int, sums: Sums) -> None:
        files = ckpt.save("last", f"e{epoch}s{sums.step}")
        entry = {"epoch": epoch, "step": sums.step, "sums": asdict(sums) if sums.step else None, "files": files,
                 "best": self._best, "wall_s": self.wall_s, "stopped_early": self.stopped_early,
                 "steps_per_epoch": self._steps_per_epoch}  # fmt: skip
        self._write_state(entry)

    def _best_public(self) -> dict:
        return {k: v for k, v in (self._best or {}).items() if k != "files"}

    @property
    def wall_s(self) -> float:
        """Wall time of the run, summed over resumes."""
        return round(self._wall0 + time.monotonic() - self._t0, 3)

    def save_record(self, status: str, error: str | None = None) -> None:
        self.record.status, self.record.error, self.record.wall_s = status, error, self.wall_s
        if self.main:
            write_record(self.dir, self.record)

    def log(self, message: str) -> None:
        if self.main:
            print(message, file=sys.stdout, flush=True)
