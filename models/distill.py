"""Knowledge distillation between runs of either engine: the teachers' soft targets by video id, and the loss.

A teacher is a finished run directory. Its soft targets are its per-class
scores on the train split, centre view, un-augmented: ``scores_train.npz``,
which every completed run writes beside its val and test scores
(:mod:`models.evaluation`). A run from before that file existed gets it
computed once, through the teacher's own engine (:func:`models.restore.restore_run`
and a centre-view pass over the teacher's clip store), and saved in the
teacher's run for the next student. Teachers and students meet only through
these files, so a PyTorch X3D teaches a Keras model and the other way round.

The student's loss per clip (Hinton, Vinyals & Dean, "Distilling the
Knowledge in a Neural Network", 2015)::

    L = A * CE(y, softmax(z)) + (1 - A) * T² * KL(p_T || softmax(z / T))

with ``z`` the student's logits, ``y`` the label and ``p_T`` the teachers'
probabilities at temperature ``T``. The soft term's gradient,
``(1 - A) * T * (softmax(z / T) - p_T)``, shrinks as 1/T² against what it
would be at T = 1 for large T, so the T² keeps the two terms' balance when T
changes. ``A = 0``: soft targets only (the student never sees a label);
``A = 1``: plain training.

Several teachers: ``p_T`` is the mean of the teachers' ``softmax(z_k / T)``,
an average of probabilities, not of logits. Each teacher's logits live on
its own scale (another engine, architecture, training length): averaging
logits would let the most confident teacher outvote the others, while the
mean of distributions is the ensemble's own prediction (Hinton et al.'s
ensembles of specialists are averaged the same way) and a proper
distribution for the KL.

What lives here, once and framework-free: reading and checking teachers
(:func:`load_teacher`, :func:`prepare`), the soft-target table (one row per
training clip, in the order of ``Loaders.ids["train"]``; the loaders hand
the engine each clip's index into it), and the reference loss
:func:`kd_loss`. Each engine computes the same loss with its framework ops
(``models.engine_torch.kd_loss``, ``models.engine_keras.kd_loss``);
``tests/test_distill.py`` holds all three to a hand computation.

Refused before training starts, each with a one-line error: a teacher that
is not a completed run, another class list, scores from another clip store
(other labels, or a store whose clips were cut from other videos, ranges or
splits; the same videos at another size or frame count are fine), and
missing video ids (a teacher that saw fewer clips).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.build import open_store
from models.evaluation import read_scores
from models.registry import get_model
from utils.core.config import RunConfig
from utils.core.readers import DamagedFile
from utils.core.records import RecordError, read_record
from wlasl.clip_store import StoreError

__all__ = ["Distillation", "Teacher", "TeacherError", "check_fit", "kd_loss", "load_teacher", "prepare", "soft_targets"]

# Manifest columns that say which source a clip was cut from; they do not
# depend on the store's frames, size or margin, so stores of one WLASL
# selection at 172² and 224² agree on them (a keypoint store has no bbox:
# the columns both manifests have are compared).
SOURCE_COLUMNS = ("gloss", "label", "split", "frame_start", "frame_end", "bbox")


class TeacherError(ValueError):
    """A teacher whose scores cannot teach this student (one line: which run, what differs, what to do)."""


@dataclass(frozen=True)
class Teacher:
    """A finished run's train-split scores, as a student reads them.

    Attributes:
        run_dir: the teacher's run directory.
        run_id: its run id (named in the student's record).
        model: its registry name (``a+b`` for an ensemble of runs).
        stores: ``(store root, model name)`` it learned from: its ``config.json``
            ``data.root``, or each member's for an ensemble (``models/ensemble.py``).
        video_ids: train clips scored, in the file's order.
        labels: their labels as the teacher's store gave them.
        logits: ``(clips, classes)`` float32.
        glosses: the teacher's class list.
        computed: the scores were computed now (a run from before every run wrote them).
    """

    run_dir: Path
    run_id: str
    model: str
    stores: tuple[tuple[str, str], ...]
    video_ids: list[str]
    labels: np.ndarray
    logits: np.ndarray
    glosses: list[str]
    computed: bool = False


@dataclass(frozen=True)
class Distillation:
    """What an engine needs to distil: the loss constants and one soft-target row per training clip.

    Attributes:
        alpha: A, the weight of the label loss.
        temperature: T.
        targets: ``(train clips, classes)`` float32: the teachers' mean
            probabilities at T; row i belongs to ``Loaders.ids["train"][i]``.
        teachers: the teachers' run ids (the student's record names them).
    """

    alpha: float
    temperature: float
    targets: np.ndarray
    teachers: tuple[str, ...]

    @property
    def tag(self) -> str:
        """The record's ``tags["teachers"]``: run ids, comma-separated."""
        return ",".join(self.teachers)


def soft_targets(teacher_logits, temperature: float) -> np.ndarray:
    """The mean over teachers of ``softmax(logits / T)``: float32 ``(clips, classes)`` (see the module docstring)."""
    probs = []
    for logits in teacher_logits:
        z = np.asarray(logits, np.float64) / temperature
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    return np.mean(probs, axis=0).astype(np.float32)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def kd_loss(student_logits, labels, teacher_probs, *, alpha: float, temperature: float) -> np.ndarray:
    """The distillation loss of each clip, float64: the definition the engines' framework versions follow.

    ``alpha * CE(labels, softmax(z)) + (1 - alpha) * T² * KL(p || softmax(z / T))``,
    with ``0 * log 0 = 0`` where the teachers give a class no probability.
    """
    z = np.asarray(student_logits, np.float64)
    p = np.asarray(teacher_probs, np.float64)
    labels = np.asarray(labels, np.int64)
    ce = -_log_softmax(z)[np.arange(len(z)), labels]
    p_log_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    kl = (p_log_p - p * _log_softmax(z / temperature)).sum(axis=1)
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


# --------------------------------------------------------------------------- teachers


def load_teacher(run_dir: str | Path) -> Teacher:
    """A completed run's train-split scores; computed once through its engine when the run predates them.

    Raises:
        FileNotFoundError: not a run directory.
        TeacherError: the run is not completed, its scores are unreadable, or
            they must be computed and its clip store is gone.
    """
    run_dir = Path(run_dir)
    if not ((run_dir / "metrics.json").is_file() and (run_dir / "config.json").is_file()):
        raise FileNotFoundError(
            f"teacher {run_dir} is not a finished run directory (no metrics.json / config.json); pass --teacher "
            f"results/runs/<run_id> of a completed run"
        )
    try:
        record = read_record(run_dir / "metrics.json")
        if record.status != "completed":
            raise TeacherError(
                f"teacher {run_dir} is {record.status}, not completed; finish it first (rerun its command) or pick "
                f"another teacher"
            )
        if record.framework == "ensemble":  # fused scores, no model: its stores are its members'
            cfg, stores = None, tuple(_run_store(Path(d)) for d in record.tags.get("member_dirs", []))
        else:
            cfg = _run_config(run_dir)
            stores = ((cfg.data.root, cfg.model.name),)
    except (RecordError, ValueError, KeyError, TypeError, OSError) as e:
        if isinstance(e, TeacherError):
            raise
        raise TeacherError(f"teacher {run_dir}: unreadable run files ({' '.join(str(e).split())})") from None
    path, computed = run_dir / "scores_train.npz", False
    if not path.is_file():
        if cfg is None:
            raise TeacherError(
                f"teacher {run_dir} is an ensemble without train scores (a member had none); fuse members that all "
                f"have scores_train.npz (python main/ensemble.py), or name the members as teachers"
            )
        scores, computed = _compute_train_scores(run_dir, cfg), True
    else:
        try:
            scores = read_scores(run_dir, "train")
        except DamagedFile as e:
            raise TeacherError(f"teacher {e} (or delete it: the student then scores the teacher's train split again "
                               "from its checkpoint)") from None
    return Teacher(
        run_dir=run_dir, run_id=record.run_id, model=record.model, stores=stores,
        video_ids=[str(v) for v in scores["video_id"]], labels=np.asarray(scores["label"], np.int64),
        logits=np.asarray(scores["logits"], np.float32), glosses=[str(g) for g in scores["glosses"]],
        computed=computed,
    )  # fmt: skip


def _run_config(run_dir: Path) -> RunConfig:
    from models.restore import read_run_config

    return read_run_config(run_dir)


def _run_store(run_dir: Path) -> tuple[str, str]:
    """``(store root, model)`` a member run of an ensemble learned from."""
    cfg = _run_config(run_dir)
    return cfg.data.root, cfg.model.name


def _compute_train_scores(run_dir: Path, cfg: RunConfig) -> dict:
    """Score the teacher's whole train split (centre view) with its best weights, through its own engine; save it."""
    from models.build import engine_of, loaders_of
    from models.evaluation import write_split
    from models.restore import restore_run

    try:
        store = open_store(get_model(cfg.model.name), cfg.data.root)
    except StoreError:
        raise TeacherError(
            f"teacher {run_dir} has no scores_train.npz (a run from before every run wrote it) and its clip store "
            f"{cfg.data.root} is not there to compute it; make the store reachable at that path and rerun"
        ) from None
    restored = restore_run(run_dir)
    print(f"teacher {run_dir}: no scores_train.npz (an older run); scoring its train split once with its "
          f"{restored.spec.framework} engine", flush=True)  # fmt: skip
    # Every train clip (a dry run's teacher capped them), and never the teacher's own teachers.
    teacher_cfg = restored.cfg.replace(data={"max_clips": None}, train={"teachers": ()})
    loaders = loaders_of(restored.spec).make_loaders(store, teacher_cfg)
    logits, labels = engine_of(restored.spec).predict_logits(restored.model, loaders.train_eval)
    ids = loaders.ids["train"]
    try:
        write_split(run_dir, "train", ids, labels, logits, restored.glosses)
    except OSError as e:  # a read-only teacher still teaches; the next student scores it again
        print(f"warning: could not save {run_dir / 'scores_train.npz'} ({e}); using the scores computed now", flush=True)
    return {"video_id": np.asarray(ids), "label": labels, "logits": logits, "glosses": np.asarray(restored.glosses)}


def _check_class_list(teacher: Teacher, store) -> None:
    if teacher.glosses == store.labels:
        return
    i = next((k for k, (a, b) in enumerate(zip(teacher.glosses, store.labels)) if a != b), None)
    where = (f"; class {i} is {teacher.glosses[i]!r} there and {store.labels[i]!r} here" if i is not None else "")
    raise TeacherError(
        f"teacher {teacher.run_dir} was trained on another class list ({len(teacher.glosses)} classes) than the "
        f"student's store {store.root} ({store.num_classes} classes){where}; distil from a teacher of the same subset"
    )


def _check_same_clips(teacher: Teacher, store, train_ids: list[str]) -> None:
    """The teacher learned from this store, or from ones cut from the same videos, ranges, labels and splits."""
    for root, model in teacher.stores:
        _check_store(teacher, Path(root), model, store, train_ids)


def _check_store(teacher: Teacher, theirs: Path, model: str, store, train_ids: list[str]) -> None:
    if theirs.resolve() == store.root.resolve():
        return
    try:
        other = open_store(get_model(model), theirs)
    except (StoreError, KeyError):
        if theirs.name == store.root.name:  # moved with its runs: a store is named by its directory (models.policy)
            return
        raise TeacherError(
            f"scores from another clip store: teacher {teacher.run_dir} learned from {theirs} (not found here to "
            f"compare), the student trains on {store.root}; train the student on the teacher's store, or make {theirs} "
            f"reachable so their clips can be compared"
        ) from None
    rows = {r["video_id"]: r for r in other.rows}
    mine = {r["video_id"]: r for r in store.rows}
    for vid in train_ids:
        a, b = mine[vid], rows.get(vid)
        differs = ["video_id"] if b is None else [c for c in SOURCE_COLUMNS if c in a and c in b and a[c] != b[c]]
        if differs:
            col = differs[0]
            got = "no such clip" if b is None else f"{col} {b.get(col)!r}"
            raise TeacherError(
                f"scores from another clip store: teacher {teacher.run_dir} learned from {theirs}, which has {got} for "
                f"clip {vid} where the student's store {store.root} has {a.get(col)!r}; distil from a teacher trained "
                f"on clips of the same videos, ranges, labels and splits"
            )


def _rows_for(teacher: Teacher, store, train_ids: list[str]) -> np.ndarray:
    """The teacher's logits for ``train_ids``, in that order, after the id and label checks."""
    index = {v: i for i, v in enumerate(teacher.video_ids)}
    missing = [v for v in train_ids if v not in index]
    if missing:
        raise TeacherError(
            f"teacher {teacher.run_dir} has no train-split scores for {len(missing)} of the student's {len(train_ids)} "
            f"training clips (e.g. {', '.join(missing[:3])}); it saw fewer clips (--dry-run, max_clips) or another "
            f"split: retrain it on the whole store"
        )
    rows = np.array([index[v] for v in train_ids], np.int64)
    labels = {e.video_id: e.label for e in store.split("train")}
    for vid, row in zip(train_ids, rows):
        if int(teacher.labels[row]) != labels[vid]:
            raise TeacherError(
                f"scores from another clip store: teacher {teacher.run_dir} labels clip {vid} as class "
                f"{int(teacher.labels[row])}, the student's store {store.root} as {labels[vid]}; distil from a teacher "
                f"trained on this store"
            )
    return teacher.logits[rows]


def prepare(cfg: RunConfig, store, train_ids: list[str]) -> Distillation:
    """Load and check every teacher of ``cfg.train.teachers``; the soft-target table for ``train_ids``.

    Args:
        cfg: the student's resolved configuration.
        store: the student's store (clip or keypoint store: anything with
            ``root``, ``labels``, ``rows`` and ``split``).
        train_ids: the student's training clips, in ``Loaders.ids["train"]`` order.

    Raises:
        FileNotFoundError, TeacherError: see the module docstring (one line each).
    """
    student_dir = cfg.run_dir.resolve()
    logits, ids = [], []
    for run_dir in cfg.train.teachers:
        if Path(run_dir).resolve() == student_dir:
            raise TeacherError(f"run {cfg.run_id} names itself as its own teacher ({run_dir}); pick a finished run")
        teacher = load_teacher(run_dir)
        _check_class_list(teacher, store)
        _check_same_clips(teacher, store, train_ids)
        logits.append(_rows_for(teacher, store, train_ids))
        ids.append(teacher.run_id)
    return Distillation(
        alpha=cfg.train.kd_alpha, temperature=cfg.train.kd_temperature,
        targets=soft_targets(logits, cfg.train.kd_temperature), teachers=tuple(ids),
    )  # fmt: skip


def check_fit(cfg: RunConfig, distill: Distillation | None, *, train_size: int, num_classes: int) -> None:
    """What both engines check before training: a distillation run has its table, made for these loaders.

    Raises:
        ValueError: teachers without a table (the run did not go through
            ``models.train.run``), a table without teachers, or a table of
            another shape or other constants than the config.
    """
    if cfg.train.teachers and distill is None:
        raise ValueError(
            f"{cfg.run_id} names teachers ({', '.join(cfg.train.teachers)}) but the engine got no soft targets; "
            f"train through models.train.run, which prepares them"
        )
    if distill is None:
        return
    if not cfg.train.teachers:
        raise ValueError(f"{cfg.run_id}: soft targets given but the config names no teacher (train.teachers)")
    if distill.targets.shape != (train_size, num_classes):
        raise ValueError(
            f"{cfg.run_id}: soft targets of shape {distill.targets.shape} for {train_size} training clips and "
            f"{num_classes} classes; prepare them from these loaders' ids"
        )
    if (distill.alpha, distill.temperature) != (cfg.train.kd_alpha, cfg.train.kd_temperature):
        raise ValueError(
            f"{cfg.run_id}: soft targets made for A={distill.alpha}, T={distill.temperature} but the config says "
            f"A={cfg.train.kd_alpha}, T={cfg.train.kd_temperature}"
        )
