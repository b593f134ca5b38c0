"""Late fusion of finished runs (e.g. RGB + pose): ``fuse_runs(run_dirs, out, weights="auto") -> RunRecord``.

Every completed run keeps every class's score of every clip
(``scores_<split>.npz``, :mod:`models.evaluation`). An ensemble combines
those files, never the models, so any runs of any engine fuse, by video id:

- **What is averaged: softmax probabilities**, weighted, per clip. Logits of
  different models live on different scales (an LSTM trained 100 epochs and
  a fine-tuned X3D are not equally confident per unit of logit), so a logit
  average lets the most over-confident member dominate whatever its
  weight; probabilities are on one scale. The fused scores are written as
  their logarithm, so ``softmax(scores) == fused probabilities`` and the
  recorded loss is the ensemble's cross-entropy.
- **Weights.** Given (``w1,w2,...``, normalised to sum 1), or ``auto``:
  every point of a grid over the simplex in steps of ``1/grid_steps``
  (0, 0.1, ..., 1 for two runs at the default 10) is scored on **val**
  (never test), and the best val top-1 wins; ties go to the more uniform
  weights (smaller sum of squares: with no evidence for a member, trust
  them equally), then to the earlier grid point.
- **Splits.** val and test always; train too when every member has its
  scores (runs of this suite all do), so an ensemble can be a distillation
  teacher. Members must hold the same video ids per split, with the same
  labels, and the same class list: anything else is refused, naming the run
  and the ids or classes that differ.

The output is a run directory like any run's (``metrics.json`` with
framework ``ensemble``, ``config.json``, the scores, predictions, per-class
and confusion files), which the report lists with its members named.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.evaluation import SCORE_SPLITS, read_scores, write_split
from utils.core.files import make_dirs
from utils.core.ids import id_problem, is_safe_id
from utils.core.metrics import softmax
from utils.core.records import RecordError, RunRecord, environment, read_record, write_json, write_record

__all__ = ["FUSION", "GRID_STEPS", "MAX_GRID_POINTS", "Member", "check_grid", "choose_weights", "fuse", "fuse_runs", "load_member", "parse_weights", "weight_grid"]

FUSION = "probabilities"
GRID_STEPS = 10
# Each grid point fuses and scores the whole val split: a bound keeps --grid-steps from taking forever (or all memory).
MAX_GRID_POINTS = 100_000
# Floor of a fused probability before its log (a member may give a class exactly 0 in float32).
_FLOOR = 1e-30
_SHOWN = 5  # ids or classes quoted in a refusal


@dataclass
class Member:
    """One run of the ensemble: where it is, its record, and its scores per split."""

    run_dir: Path
    record: RunRecord
    scores: dict[str, dict]

    @property
    def name(self) -> str:
        return f"{self.record.run_id} ({self.run_dir})"


def load_member(run_dir: str | Path) -> Member:
    """A completed run's record and scores (val and test required; train when present).

    Raises:
        FileNotFoundError: no metrics.json, or no scores for val or test.
        ValueError: the run did not complete.
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a run directory (results/runs/<run_id>)")
    record = read_record(path)
    if record.status != "completed":
        raise ValueError(f"{run_dir}: run {record.run_id} is {record.status}, expected completed; finish it first")
    scores = {split: read_scores(run_dir, split) for split in ("val", "test")}
    if (run_dir / "scores_train.npz").is_file():
        scores["train"] = read_scores(run_dir, "train")
    return Member(run_dir, record, scores)


def _quote(values) -> str:
    values = sorted(values)
    more = f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else ""
    return ", ".join(map(str, values[:_SHOWN])) + more


def _check_compatible(members: list[Member], splits: list[str]) -> None:
    """Refuse members whose classes, split ids or labels differ from the first's, naming them."""
    first = members[0]
    glosses = [str(g) for g in first.scores["test"]["glosses"]]
    for m in members[1:]:
        theirs = [str(g) for g in m.scores["test"]["glosses"]]
        if theirs != glosses:
            diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(glosses, theirs)) if a != b][:_SHOWN]
            raise ValueError(
                f"run {m.name} has other classes than run {first.name}: {len(theirs)} vs {len(glosses)} classes"
                + (f"; first differences (index: first run vs this run) {'; '.join(diff)}" if diff else "")
                + "; fuse runs trained on the same subset (the same labels.txt)"
            )
    for split in splits:
        ref = first.scores[split]
        ref_labels = dict(zip(map(str, ref["video_id"]), map(int, ref["label"])))
        for m in members[1:]:
            got = m.scores[split]
            labels = dict(zip(map(str, got["video_id"]), map(int, got["label"])))
            if len(labels) != len(got["video_id"]) or len(ref_labels) != len(ref["video_id"]):
                raise ValueError(f"{split} scores of run {m.name} or {first.name} list a video id twice; rerun it")
            only_ref, only_m = set(ref_labels) - set(labels), set(labels) - set(ref_labels)
            if only_ref or only_m:
                raise ValueError(
                    f"the {split} split of run {m.name} differs from run {first.name}'s: {len(only_ref)} video "
                    f"id(s) only in the first ({_quote(only_ref)}), {len(only_m)} only in this one ({_quote(only_m)}); "
                    "fuse runs evaluated on the same clips (same store subset, no --max-clips)"
                )
            wrong = [v for v in ref_labels if ref_labels[v] != labels[v]]
            if wrong:
                raise ValueError(
                    f"the {split} labels of run {m.name} differ from run {first.name}'s for video id(s) {_quote(wrong)}; "
                    "the stores disagree on those clips' classes"
                )


def _aligned(members: list[Member], split: str) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """The first member's video ids and labels, and every member's probabilities in that order."""
    ids = [str(v) for v in members[0].scores[split]["video_id"]]
    labels = np.asarray(members[0].scores[split]["label"], np.int64)
    probs = []
    for m in members:
        s = m.scores[split]
        row = {str(v): i for i, v in enumerate(s["video_id"])}
        logits = np.asarray(s["logits"], np.float64)[[row[v] for v in ids]]
        probs.append(softmax(logits) if len(ids) else logits)
    return ids, labels, probs


def fuse(probs: list[np.ndarray], weights) -> np.ndarray:
    """The weighted mean of the members' probabilities, ``sum_i w_i * p_i`` (weights sum to 1)."""
    return np.tensordot(np.asarray(weights, np.float64), np.stack(probs), axes=1)


def check_grid(n: int, steps: int) -> int:
    """The number of points of :func:`weight_grid`, C(steps + n - 1, n - 1), checked before anything is built.

    Raises:
        ValueError: ``n`` or ``steps`` below 1, or more than :data:`MAX_GRID_POINTS` points (each is scored on val).
    """
    if n < 1 or steps < 1:
        raise ValueError(f"weight_grid expected n >= 1 and steps >= 1, received n={n}, steps={steps}")
    points = math.comb(steps + n - 1, n - 1)
    if points > MAX_GRID_POINTS:
        fits = max((k for k in range(1, min(steps, 10_000)) if math.comb(k + n - 1, n - 1) <= MAX_GRID_POINTS), default=1)
        raise ValueError(f"--grid-steps {steps} with {n} runs gives {points:,} weight points, expected at most "
                         f"{MAX_GRID_POINTS:,}; use --grid-steps {fits} or less, or fixed --weights")  # fmt: skip
    return points


def weight_grid(n: int, steps: int = GRID_STEPS) -> np.ndarray:
    """Every weight vector of ``n`` non-negative multiples of ``1/steps`` that sums to 1, shape (points, n).

    Raises:
        ValueError: as :func:`check_grid`.
    """
    check_grid(n, steps)
    # Stars and bars: n - 1 bar positions among steps + n - 1 slots.
    points = []
    for bars in itertools.combinations(range(steps + n - 1), n - 1):
        edges = (-1, *bars, steps + n - 1)
        points.append([edges[i + 1] - edges[i] - 1 for i in range(n)])
    return np.asarray(points, np.float64) / steps


def choose_weights(probs: list[np.ndarray], labels: np.ndarray, steps: int = GRID_STEPS) -> tuple[np.ndarray, int]:
    """The grid weights with the most correct top-1 on these (val) clips; ties -> more uniform, then grid order.

    Returns:
        (weights, number of clips right at top-1).
    """
    best, best_key = None, None
    for w in weight_grid(len(probs), steps):
        correct = int((fuse(probs, w).argmax(1) == labels).sum())
        # Largest correct count, then smallest sum of squares (most uniform); the first such point stays.
        key = (correct, -round(float((w**2).sum()), 12))
        if best_key is None or key > best_key:
            best, best_key = w, key
    return best, best_key[0]


def parse_weights(text: str, n: int):
    """``"auto"`` or ``"w1,w2,..."`` (n non-negative numbers, not all 0) -> "auto" or weights summing to 1.

    Raises:
        ValueError: the wrong count, a negative or non-numeric value, or all zero.
    """
    if text == "auto":
        return "auto"
    try:
        values = np.array([float(v) for v in text.split(",")], np.float64)
    except ValueError:
        raise ValueError(f"--weights expected 'auto' or {n} comma-separated numbers, received {text!r}") from None
    if len(values) != n or not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ValueError(
            f"--weights expected {n} non-negative numbers (one per run, in the order given) not all 0, received {text!r}"
        )
    return values / values.sum()


def _check_out(out: Path, members: list[Member]) -> None:
    if not is_safe_id(out.name):
        raise ValueError(f"--out {out}: {id_problem(out.name, 'the directory name (the run id)')}")
    if any(out.resolve() == m.run_dir.resolve() for m in members):
        raise ValueError(f"--out {out} is one of the runs to fuse; give the ensemble its own directory")
    existing = out / "metrics.json"
    if existing.is_file():
        try:
            framework = read_record(existing).framework
        except RecordError:
            framework = "unreadable"
        if framework != "ensemble":
            raise ValueError(f"--out {out} holds a {framework} run, not an ensemble; choose another directory")


def fuse_runs(run_dirs, out: str | Path, *, weights: str = "auto", grid_steps: int = GRID_STEPS) -> RunRecord:
    """Fuse completed runs into the run directory ``out``; returns (and writes) its record.

    Args:
        run_dirs: two or more run directories (``results/runs/<run_id>``).
        out: the ensemble's run directory; its name is the run id. An earlier
            ensemble there is replaced; any other run there is refused.
        weights: ``"auto"`` (chosen on val over the grid), or ``"w1,w2,..."``, one weight per run.
        grid_steps: the grid's resolution for ``auto`` (weights in multiples of 1/grid_steps).

    Raises:
        FileNotFoundError: a run directory or its val/test scores are missing.
        ValueError: fewer than two runs, a run twice, an unfinished run, runs
            whose classes, split ids or labels differ, bad weights, or a bad ``out``.
    """
    start = time.time()
    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise ValueError(f"an ensemble needs at least 2 runs, received {len(run_dirs)}")
    seen = {}
    for d in run_dirs:
        if d.resolve() in seen:
            raise ValueError(f"run {d} is given twice (also as {seen[d.resolve()]}); give each run once")
        seen[d.resolve()] = d
    chosen = parse_weights(weights, len(run_dirs))
    if isinstance(chosen, str):
        check_grid(len(run_dirs), grid_steps)  # before any file is read
    members = [load_member(d) for d in run_dirs]
    out = Path(out)
    _check_out(out, members)
    splits = [s for s in SCORE_SPLITS if all(s in m.scores for m in members)]
    _check_compatible(members, splits)

    glosses = [str(g) for g in members[0].scores["test"]["glosses"]]
    aligned = {split: _aligned(members, split) for split in splits}
    if isinstance(chosen, str):  # auto: on val, never test
        _ids, labels, probs = aligned["val"]
        chosen, _correct = choose_weights(probs, labels, grid_steps)
    make_dirs(out, "--out")
    metrics = {}
    for split, (ids, labels, probs) in aligned.items():
        scores = np.log(np.maximum(fuse(probs, chosen), _FLOOR))
        metrics[split] = write_split(out, split, ids, labels, scores, glosses)
    params = [m.record.env.get("params") for m in members]
    # The runs of one experiment or sweep fuse into that plan's ensemble (its table row sits beside them).
    plans = {m.record.tags.get("plan") for m in members}
    plan = {"plan": plans.pop()} if len(plans) == 1 and None not in plans else {}
    record = RunRecord(
        run_id=out.name,
        model="+".join(m.record.model for m in members),
        framework="ensemble",
        # Settings that shape the result (the same for every seed of a fused pair); which runs
        # and the weights they got are in the tags, so the report's seed rows do not call them different settings.
        config={
            "members": [m.record.model for m in members],
            "fusion": FUSION,
            "weights": weights,
            "grid_steps": grid_steps,
            "selected_on": "val",
            "splits": splits,
            "dry_run": any(m.record.config.get("dry_run") is True for m in members),
            "results": str(out.parent.parent),
        },
        epochs=0,
        best={"val_top1": metrics["val"]["top1"], "val_loss": metrics["val"]["loss"]},
        metrics={s: metrics[s] for s in ("val", "test")},
        status="completed",
        wall_s=time.time() - start,
        env=environment(num_classes=len(glosses),
                        params=sum(params) if all(isinstance(p, (int, float)) for p in params) else None),  # fmt: skip
        tags={
            "members": [m.record.run_id for m in members],
            "member_dirs": [str(m.run_dir) for m in members],
            "weights": [float(w) for w in chosen],
            **plan,
        },
    )
    write_json(out / "config.json", record.config)
    write_record(out, record)
    return record
