"""keras-tuner driving the suite's own training: one trial = one normal run.

keras-tuner's stock oracles (Hyperband, Bayesian optimisation) propose the
hyperparameters; :class:`StudyTuner.run_trial` turns them into a RunConfig,
trains it with ``models.train.run`` (so checkpoints, run records and resume
are exactly those of plain training, for both frameworks) and reports the
objective read back from the run record. Hyperband's epoch budget is the
run's ``train.epochs``; a promoted trial starts from a copy of its parent's
checkpoints, and the engine resumes from them.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

# The Keras side's one switch: TF_USE_LEGACY_KERAS=1 before TensorFlow is
# imported (keras_tuner imports it), so keras-tuner and the tf_keras models
# agree on one Keras (utils/core/tf_env.py says why).
import utils.core.tf_env  # noqa: F401

# isort: split
import keras_tuner
from keras_tuner.errors import FailedTrialError, FatalError

from models.registry import get_model
from models.tensorboard_run import TB_DIR
from utils.core.config import RunConfig
from utils.core.metrics import OBJECTIVES as _OBJECTIVE_METRIC
from utils.core.metrics import metric
from utils.core.preempt import Cancelled, Preempted, PreemptionFlag
from utils.core.records import RecordError, RunRecord, environment, objective_value, read_record, write_record
from utils.tuning.space import trial_config
from utils.tuning.study import Study

__all__ = ["OBJECTIVES", "SearchPreempted", "StudyTuner", "make_hyperparameters", "make_oracle"]

# keras-tuner objective name -> its direction; the names and the record lookup
# (utils.core.records.objective_value) come from the one metric table.
OBJECTIVES = {name: "max" if metric(key).higher_better else "min" for name, key in _OBJECTIVE_METRIC.items()}


class SearchPreempted(FatalError):
    """The job was asked to stop; the running trial saved a checkpoint.

    A FatalError, so keras-tuner re-raises it instead of marking the trial
    failed; the trial stays "ongoing" in the oracle's state and is retried
    (resuming from its checkpoint) when the same command runs again.
    ``cancelled``: a user's scancel (no requeue), not a preemption.
    """

    def __init__(self, message: str, cancelled: bool = False):
        super().__init__(message)
        self.cancelled = cancelled


def make_hyperparameters(space: dict) -> keras_tuner.HyperParameters:
    """The declared space as keras-tuner HyperParameters.

    Hyperband's oracle, used without a model-building function, runs zero
    trials unless it is handed the space up front (seen in use), so both
    oracles get it this way.
    """
    hp = keras_tuner.HyperParameters()
    for name, spec in space.items():
        kind = spec["kind"]
        if kind == "float":
            hp.Float(name, spec["min"], spec["max"], step=spec["step"], sampling=spec["sampling"])
        elif kind == "int":
            hp.Int(name, spec["min"], spec["max"], step=spec["step"] or 1, sampling=spec["sampling"])
        elif kind == "choice":
            hp.Choice(name, spec["values"])
        else:
            hp.Fixed(name, spec["value"])
    return hp


def make_oracle(
    kind: str,
    *,
    space: dict,
    objective: str,
    max_trials: int | None,
    max_epochs: int,
    factor: int = 3,
    seed: int = 0,
):
    """A stock keras-tuner oracle over ``space``.

    Args:
        kind: ``hyperband`` or ``bayesian``.
        space: normalised space (utils.tuning.space).
        objective: a key of :data:`OBJECTIVES`.
        max_trials: Bayesian: trials to run. Hyperband: optional cap on the
            trials of its brackets (None = one full Hyperband iteration).
        max_epochs: Hyperband: the largest epoch budget of a trial.
        factor: Hyperband's reduction factor.
        seed: oracle seed (the run seed; keras-tuner treats 0 as "random",
            hence the +1).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"--objective expected one of {sorted(OBJECTIVES)}, received {objective!r}")
    direction = OBJECTIVES[objective]
    target = keras_tuner.Objective(objective, direction=direction)
    hps = make_hyperparameters(space)
    common = {"objective": target, "hyperparameters": hps, "seed": seed + 1}
    if kind == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=max_epochs, factor=factor, **common)
        oracle.max_trials = max_trials  # the base Oracle stops creating trials at this count
    elif kind == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials or 20, **common)
    else:
        raise ValueError(f"--tuner expected 'hyperband' or 'bayesian', received {kind!r}")
    oracle.verbose = 0  # keras-tuner counts trials from 1 on screen; StudyTuner prints them by id instead
    return oracle


class StudyTuner(keras_tuner.Tuner):
    """A Tuner whose trials are runs of the suite's training engines.

    Args:
        oracle: a stock keras-tuner oracle (see :func:`make_oracle`).
        study: where the study lives.
        base: the RunConfig every trial starts from (CLI options).
        family: model family, for the ``variant`` hyperparameter.
        objective: a key of :data:`OBJECTIVES`.
        max_epochs: epochs of a trial when the oracle gives no budget (Bayesian).
        train_fn: ``RunConfig -> RunRecord``; ``models.train.run`` by default.
        poll_s: pause between asks when the oracle is busy (Hyperband waits
            for a round to finish before promoting).
        chief_listen: ``(host, port)``: this process is the distributed chief
            and only serves the oracle there (see utils.tuning.distributed).
    """

    def __init__(self, oracle, *, study: Study, base: RunConfig, family: str, objective: str, max_epochs: int,
                 train_fn: Callable[[RunConfig], RunRecord] | None = None, poll_s: float = 1.0,
                 chief_listen: tuple[str, int] | None = None):
        self.study = study
        self.chief_listen = chief_listen
        self.base = base
        self.family = family
        self.objective = objective
        self.max_epochs = max_epochs
        self.train_fn = train_fn
        self.poll_s = poll_s
        self._idle_asks = 0
        self._flag: PreemptionFlag | None = None
        super().__init__(oracle=oracle, directory=str(study.root.parent), project_name=study.root.name, overwrite=False)
        if hasattr(self.oracle, "stub"):  # a distributed worker: keras-tuner wrapped the oracle in a gRPC client
            from utils.tuning.distributed import DeadlineStub

            self.oracle.stub = DeadlineStub(self.oracle.stub)

    # -- the search loop ---------------------------------------------------

    def search(self, *args, **kwargs):
        """Run trials until the oracle stops; SIGUSR1/SIGTERM between trials stops cleanly."""
        if self.chief_listen is not None:
            from utils.tuning.distributed import serve_oracle

            self.save()
            serve_oracle(self.oracle, *self.chief_listen, poll_s=self.poll_s)
            return None
        with PreemptionFlag() as flag:
            self._flag = flag
            try:
                return super().search(*args, **kwargs)
            finally:
                self._flag = None

    def pre_create_trial(self):
        if self._flag is not None and self._flag.requested:
            raise SearchPreempted(f"signal {self._flag.requested} between trials; rerun the command to resume",
                                  cancelled=self._flag.cancelled)  # fmt: skip
        # The base loop asks again at once when the oracle answers IDLE
        # (Hyperband waiting for a round): back off instead of spinning.
        if self._idle_asks:
            time.sleep(min(self.poll_s * self._idle_asks, 10 * self.poll_s))
        self._idle_asks += 1

    def on_trial_begin(self, trial):
        """Name the trial by its id, as its run directory, record and best.json do (keras-tuner counts from 1)."""
        self._idle_asks = 0
        self._trial_t0 = time.monotonic()
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/"))  # fmt: skip
        print(f"\nSearch: running trial {trial.trial_id} ({values or 'default configuration'})\n", flush=True)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        took = time.monotonic() - getattr(self, "_trial_t0", time.monotonic())
        best = self.oracle.get_best_trials(1)
        so_far = f"; best so far: trial {best[0].trial_id} ({best[0].score})" if best else ""
        print(f"Trial {trial.trial_id} Complete [{took:.0f} s]: {self.objective} = {trial.score}{so_far}", flush=True)
        _release_memory()

    def stopped_by_failures(self) -> bool:
        """Whether the search ended because too many trials failed in a row (the oracle's own limit),
        read from the trials' states, not from the wording of keras-tuner's error."""
        run = 0
        for trial in self.oracle.trials.values():
            run = run + 1 if trial.status == keras_tuner.engine.trial.TrialStatus.FAILED else 0
        return run >= self.oracle.max_consecutive_failed_trials

    # -- one trial -------------------------------------------------------------

    def trial_config(self, trial_id: str, values: dict) -> RunConfig:
        """The RunConfig of one trial: base + values, its own run dir, tags."""
        epochs = int(values.get("tuner/epochs") or self.max_epochs)
        # dry_run=False below keeps models.train.resolve from shrinking the trial a second time
        # (it would override Hyperband's epochs); the tag keeps the dry run visible in the record.
        tags = {**self.base.tags, "study": self.study.name, "trial": trial_id}
        if self.base.dry_run:
            tags["dry_run"] = True
        if values.get("tuner/trial_id"):
            tags["parent_trial"] = values["tuner/trial_id"]
        cfg = trial_config(self.base, values, self.family)
        # resume=True always: a promoted or retried trial continues from its checkpoint. The TensorBoard
        # switch is resolved from the base config, as dry_run=False would otherwise turn it on.
        return cfg.replace(
            train={"epochs": epochs, "resume": True}, run_id=self.study.run_id(trial_id),
            results=str(self.study.root), dry_run=False, tags=tags, tensorboard=self.base.writes_tensorboard,
        )

    def run_trial(self, trial, *args, **kwargs):
        values = dict(trial.hyperparameters.values)
        cfg = self.trial_config(trial.trial_id, values)
        record = _finished(cfg.run_dir, cfg.train.epochs)
        if record is None:
            parent = values.get("tuner/trial_id")
            if parent:
                seed_from_parent(self.study.run_dir(parent), cfg.run_dir)
            record = self._train(trial.trial_id, cfg)
        value = objective_value(record, self.objective)
        if not math.isfinite(value):
            reason = f"objective {self.objective} is {value} in {cfg.run_dir / 'metrics.json'}"
            mark_failed(cfg, reason)
            raise FailedTrialError(f"trial {trial.trial_id}: {reason}")
        return {self.objective: value}

    def _train(self, trial_id: str, cfg: RunConfig) -> RunRecord:
        """Train one trial; failures become failed records and FailedTrialError."""
        train = self.train_fn
        if train is None:
            from models.train import run as train
        try:
            record = train(cfg)
        except Preempted as e:
            raise SearchPreempted(f"trial {trial_id} stopped ({e})", cancelled=isinstance(e, Cancelled)) from e
        except (FileNotFoundError, KeyError) as e:
            # Configuration, not this trial's values (a missing --pretrained file, an
            # unknown model): every trial would fail the same way. The store itself was
            # checked before the search; a StoreError now (batch larger than the split)
            # depends on the trial's values, so it only fails the trial.
            mark_failed(cfg, f"{type(e).__name__}: {e}")
            raise FatalError(f"trial {trial_id}: {type(e).__name__}: {e}") from e
        except Exception as e:  # noqa: BLE001 - OOM, non-finite loss, a crash: record it, search on
            reason = f"{type(e).__name__}: {e}"
            mark_failed(cfg, f"{reason}\n{traceback.format_exc()}")
            print(f"trial {trial_id} failed: {reason}; the search goes on", file=sys.stderr)
            raise FailedTrialError(f"trial {trial_id}: {reason}") from e
        if record.status != "completed":
            reason = (record.error or record.status).strip().splitlines()[0]
            print(f"trial {trial_id} {record.status}: {reason}; the search goes on", file=sys.stderr)
            raise FailedTrialError(f"trial {trial_id} {record.status}: {reason}")
        return record

    # keras-tuner's Keras-model saving/loading does not apply: the engines
    # checkpoint into each trial's run dir.
    def save_model(self, trial_id, model, step=0):
        pass

    def load_model(self, trial):
        raise NotImplementedError(f"trial models live in their run dirs: {self.study.run_dir(trial.trial_id)}")


def _finished(run_dir: Path, epochs: int) -> RunRecord | None:
    """The run's record if it already completed ``epochs`` (a rerun after a kill)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        record = read_record(path)
    except RecordError:
        return None
    return record if record.status == "completed" and record.epochs >= epochs else None


def seed_from_parent(parent_dir: Path, run_dir: Path) -> bool:
    """Copy the parent trial's checkpoints (and TensorBoard folder) into a promoted trial's run dir.

    A copy, not hard links: an engine that rewrites a checkpoint file in
    place would otherwise change the parent's. Skipped when the trial already
    has checkpoints of its own (a retried promotion resumes its own).

    Returns:
        True when checkpoints were copied.
    """
    src, dst = parent_dir / "checkpoints", run_dir / "checkpoints"
    if dst.is_dir() and any(dst.iterdir()):
        return False
    if not src.is_dir() or not any(src.iterdir()):
        print(f"promoted trial: parent has no checkpoints in {src}; training from scratch", file=sys.stderr)
        return False
    board = parent_dir / TB_DIR
    if board.is_dir() and not (run_dir / TB_DIR).exists():
        # The promoted trial's curves start with its parent's epochs; its first start keeps
        # those up to the copied checkpoint and drops the parent's end-of-run images and session.
        shutil.copytree(board, run_dir / TB_DIR)
    tmp = run_dir / ".checkpoints.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    _relocate(tmp, src, dst)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)  # whole directory or nothing, should the copy be killed
    return True


def _relocate(copy_dir: Path, src: Path, dst: Path) -> None:
    """Point path references inside copied JSON side files at the copy.

    The Keras engine's ``checkpoints/state.json`` names its checkpoint files
    by path (``<run_dir>/checkpoints/last-3``); left as is, the promoted
    trial would read the parent's files and, on its first save, delete them
    as "the old checkpoint".
    """
    forms = sorted({str(src), str(src.resolve())}, key=len, reverse=True)
    target = str(dst)
    for path in copy_dir.rglob("*.json"):
        text = path.read_text()
        new = text
        for form in forms:
            new = new.replace(json.dumps(form)[1:-1], json.dumps(target)[1:-1])
        if new != text:
            path.write_text(new)


def mark_failed(cfg: RunConfig, reason: str) -> None:
    """Make the trial's run record say failed, with the reason (engines may not have)."""
    path = cfg.run_dir / "metrics.json"
    record = None
    if path.is_file():
        try:
            record = read_record(path)
        except RecordError:
            record = None
    if record is None:
        try:
            framework = get_model(cfg.model.name).framework
        except KeyError:
            framework = "torch"
        record = RunRecord(run_id=cfg.run_id, model=cfg.model.name, framework=framework, config=cfg.to_dict(),
                           env=environment(), tags=dict(cfg.tags))
    if record.status != "failed" or not record.error:  # keep the engine's own reason when it gave one
        record.status, record.error = "failed", reason
    write_record(cfg.run_dir, record)


def _release_memory() -> None:
    """Free the last trial's model before the next is built (long searches)."""
    if "tf_keras" in sys.modules:
        sys.modules["tf_keras"].backend.clear_session()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
