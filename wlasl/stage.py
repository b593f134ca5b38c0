"""The runner both data stages share: instances in; per-item files, a manifest and a report out.

Preprocessing (``wlasl.prepare``, clips) and keypoint extraction
(``wlasl.keypoints``, keypoint arrays) differ only in what they do with one
instance. Everything around it lives here, once:

* this shard's instances (``--shard i/n``, or the SLURM job array);
* instances the metadata already marks unusable (an unsafe ``video_id``, a
  non-finite bbox) become recorded skips without touching a file;
* the work in ``--workers`` processes that survive a killed worker
  (:mod:`wlasl.workers`): its item is reported ``lost``, the run ends with
  the report written, and a rerun retries it;
* per-item row files (``rows/<video_id>.json``, written after the item's
  data), from which ``manifest.csv`` and the stage report are assembled by
  any shard, idempotently;
* the store folder: a one-line error when it cannot be written, and the
  temporary files of killed writers cleaned at once.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from utils.core.files import atomic_write_text, remove_stale_temps
from utils.core.ids import check_under, id_problem
from utils.core.readers import delete_advice, read_json
from wlasl.clip_store import StoreError
from wlasl.metadata import Instance, MetadataError, load_nslt, load_wlasl, select_nslt, select_subset
from wlasl.workers import Lost, run_pool

__all__ = [
    "SCRIPT_ERRORS",
    "Outcome",
    "Stage",
    "StageConfig",
    "add_stage_args",
    "check_videos",
    "assemble",
    "item_path",
    "lost_error",
    "open_out",
    "open_store",
    "parse_shard",
    "pending_instance",
    "pending_item",
    "run_configured",
    "run_stage",
    "select_instances",
    "source_fields",
    "stage_options",
    "stage_parser",
    "summary",
]


@dataclass(frozen=True)
class Outcome:
    """What happened to one instance: ``written``, ``cached``, ``skipped`` or ``lost``."""

    video_id: str
    state: str
    reason: str = ""  # skips: one of the stage's skip reasons; lost: worker_lost
    detail: str = ""
    notes: tuple[str, ...] = ()  # written items: the stage's notes (padded, clamped, ...)
    cpu_s: dict = field(default_factory=dict)  # written items: CPU seconds per step


@dataclass(frozen=True)
class Stage:
    """What a stage tells the runner.

    Attributes:
        name: the stage's word in messages and the progress bar (``clips``).
        report: file name of the assembled report (``prepare_report.json``).
        columns: manifest columns, in order.
        skip_reasons: reasons a ``skipped`` outcome can carry.
        notes: status notes listed by name in the report (``padded``, ...).
        data_dirs: folders of per-item data (cleaned of stale temp files).
        script: for a stage with the shared command line (:func:`stage_parser`): its entry script
            (``main/preprocess.py``), the program name in ``--help``.
        store: what it writes, as ``--help`` names it (``clip store``).
        description: the ``--help`` description.
        extra: more report fields computed from the rows, or None.
    """

    name: str
    report: str
    columns: tuple[str, ...]
    skip_reasons: tuple[str, ...]
    notes: tuple[str, ...]
    data_dirs: tuple[str, ...]
    script: str = ""
    store: str = ""
    description: str = ""
    extra: Callable[[list[dict]], dict] | None = None


# Reasons the runner itself gives, whatever the stage: an unsafe id, a bbox the metadata
# already marks unusable, an unexpected exception (``error``), and a val/test video
# whose bytes another kept instance already has (``duplicate``, with --drop-duplicates).
RUNNER_REASONS = ("video_id", "bbox", "error", "duplicate")
# Splits in the order a duplicate is kept: train first (what a model learns from stays), then val.
SPLIT_ORDER = ("train", "val", "test")


def guarded(work: Callable[[Instance], Outcome], inst: Instance) -> Outcome:
    """``work(inst)``, with any exception it raises turned into a recorded ``error`` skip.

    One instance's surprise (a file no reader expected, a bug) must not end a
    stage over thousands of videos: the skip names the exception's type,
    message and where it was raised, the item stays unwritten (a rerun
    retries it), and the exit status says so (:func:`exit_status`).
    """
    try:
        return work(inst)
    except Exception as e:  # every other instance goes on; the report and the exit status carry this one
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        at = f" (at {Path(where.filename).name}:{where.lineno} in {where.name})" if where else ""
        return Outcome(inst.video_id, "skipped", "error", f"{type(e).__name__}: {e}{at}")


def parse_shard(text: str | None, env: dict | None = None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``; without text, from the SLURM job array, else ``(0, 1)``."""
    env = os.environ if env is None else env
    if text:
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard expected i/n such as 0/4, received {text!r}") from None
        return i, n
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        # Arrays need not start at 0 (--array=1-4): index from the minimum.
        base = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return int(env["SLURM_ARRAY_TASK_ID"]) - base, int(env["SLURM_ARRAY_TASK_COUNT"])
    return 0, 1


# Bounds: a process per worker, and a report file looked for per shard.
MAX_WORKERS = 256
MAX_SHARDS = 10_000


def check_workers_and_shard(workers: int, shard: tuple[int, int]) -> None:
    """The checks every stage's config makes on ``--workers`` and ``--shard``."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers expected 1..{MAX_WORKERS}, received {workers}")
    i, n = shard
    if not (1 <= n <= MAX_SHARDS and 0 <= i < n):
        raise ValueError(f"--shard expected i/n with 0 <= i < n <= {MAX_SHARDS}, received {i}/{n}")


@dataclass(frozen=True)
class StageConfig:
    """What both data stages' command lines ask for (:func:`add_stage_args`, :func:`stage_options`).

    Each stage's config adds its own fields after these (all with defaults).

    Attributes:
        metadata: WLASL v0.3 JSON.
        videos: directory of ``<video_id>.mp4`` files.
        out: the store directory.
        subset: WLASL-N (first N glosses); None = all, or what ``nslt`` lists.
        nslt: optional ``nslt_N.json``: its videos, splits and classes.
        workers: processes.
        shard: ``(i, n)``: this job handles instances i, i+n, i+2n, ...
        strict: any skip makes the run fail (non-zero exit).
        drop_duplicates: leave val/test videos byte-identical to a kept one out of the manifest.
        ext: video file extension.
    """

    metadata: Path
    videos: Path
    out: Path
    subset: int | None = None
    nslt: Path | None = None
    workers: int = 1
    shard: tuple[int, int] = (0, 1)
    strict: bool = False
    drop_duplicates: bool = False
    ext: str = ".mp4"

    def __post_init__(self):
        check_workers_and_shard(self.workers, self.shard)


# What a stage's script reports as one ``error:`` line and exit status 2: each message says what to fix.
SCRIPT_ERRORS = (FileNotFoundError, MetadataError, StoreError, ValueError)


def check_videos(cfg: StageConfig) -> None:
    """What a stage's script checks before it runs: ``--videos`` must be a folder.

    Raises:
        FileNotFoundError: it is not, naming the fix.
    """
    if not cfg.videos.is_dir():
        raise FileNotFoundError(f"--videos {cfg.videos} is not a directory; point it at the folder of <video_id>.mp4 files")


def select_instances(metadata: Path, subset: int | None, nslt: Path | None) -> tuple[list[str], list[Instance]]:
    """The class list and the instances a stage works on: WLASL-N, or what an nslt file lists.

    Raises:
        FileNotFoundError, MetadataError: unreadable or malformed files.
        ValueError: ``subset`` disagrees with the nslt file's classes.
    """
    glosses, instances = load_wlasl(metadata)
    if nslt is not None:
        chosen = select_nslt(instances, load_nslt(nslt), nslt)
        n_classes = max((i.label for i in chosen), default=-1) + 1
        if subset is not None and subset != n_classes:
            raise ValueError(f"--subset {subset} disagrees with {nslt}, which holds {n_classes} classes; drop one of them")
        glosses = glosses[:n_classes]
    else:
        chosen = select_subset(glosses, instances, subset)
        glosses = glosses[: subset or len(glosses)]
    if not chosen:  # an empty store that "succeeds" would only fail later, in training
        raise ValueError(f"{metadata}{f' with {nslt}' if nslt else ''} selects no instances ({len(glosses)} glosses); "
                         "expected a WLASL v0.3 file whose glosses list instances: check the file and --subset / --nslt")  # fmt: skip
    return glosses, chosen


def item_path(out: Path, folder: str, video_id: str, suffix: str) -> Path:
    """``out/folder/<video_id><suffix>``, refused unless the id is a safe name that stays under ``out``."""
    problem = id_problem(video_id, "video_id")
    if problem:
        raise ValueError(problem)
    return check_under(out, Path(out) / folder / f"{video_id}{suffix}")


def pending_item(out: Path, folder: str, video_id: str, suffix: str) -> tuple[Path, Path] | Outcome:
    """An item's data file (:func:`item_path`) and row file, or the outcome that already settles it.

    Returns:
        ``(data path, row path)`` for an item still to make; else a ``video_id``
        skip (an unsafe id) or ``cached`` (both files are there from an earlier run).
    """
    try:
        data_path = item_path(out, folder, video_id, suffix)
        row_path = item_path(out, "rows", video_id, ".json")
    except ValueError as e:  # ids are checked where they are read first (the metadata); this is the last line of defence
        return Outcome(video_id, "skipped", "video_id", str(e))
    if data_path.is_file() and row_path.is_file():
        return Outcome(video_id, "cached")
    return data_path, row_path


def pending_instance(inst: Instance, cfg: StageConfig, folder: str, suffix: str) -> tuple[Path, Path, Path] | Outcome:
    """:func:`pending_item`'s paths and the instance's source video, or the outcome that already settles it.

    Returns:
        ``(data path, row path, video path)``; else :func:`pending_item`'s
        outcome, or a ``missing`` skip (no ``<video_id><ext>`` under ``cfg.videos``).
    """
    paths = pending_item(cfg.out, folder, inst.video_id, suffix)
    if isinstance(paths, Outcome):
        return paths
    video = cfg.videos / f"{inst.video_id}{cfg.ext}"
    if not video.is_file():
        return Outcome(inst.video_id, "skipped", "missing", f"{video} does not exist")
    return (*paths, video)


def source_fields(inst: Instance) -> dict:
    """The row's first source columns (``SOURCE_COLUMNS`` up to ``source``), as the metadata gives them."""
    return {"video_id": inst.video_id, "gloss": inst.gloss, "label": inst.label, "split": inst.split,
            "signer_id": inst.signer_id, "source": inst.source}  # fmt: skip


def open_out(out: Path, stage: Stage) -> None:
    """Make the store folder (or say in one line why it cannot be), and clean killed writers' temps."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"{out} is a file")
        for sub in ("rows", "reports", *stage.data_dirs):
            (out / sub).mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        why = e.strerror or str(e)
        if isinstance(e, (NotADirectoryError, FileExistsError)):
            why = "it or a folder above it is a regular file"
        raise StoreError(
            f"--out {out}: cannot write the store there ({why}); "
            "pass a directory you can write to (it is created if missing)"
        ) from None
    for sub in ("rows", *stage.data_dirs):
        remove_stale_temps(out / sub)


def open_store(
    out: Path, stage: Stage, meta: dict, keys: tuple[str, ...], glosses: list[str], *, assumed: dict | None = None
) -> None:
    """Create the store (``store.json``, ``labels.txt``), or check that an existing one was made the same way.

    Args:
        meta: what ``store.json`` holds.
        keys: the entries that must agree with an existing store (its geometry, class count).
        assumed: values of keys that stores made by older versions lack.

    Raises:
        StoreError: the folder cannot be written, or holds a store made with other ``keys``.
    """
    open_out(out, stage)
    path = Path(out) / "store.json"
    if path.is_file():
        fix = f"it is not a store this suite made; use another --out, or {delete_advice(out, Path(out).parent, 'rerun')}"
        old = {**(assumed or {}), **read_json(path, expected="the store's settings (a JSON object)", todo=fix)}
        if any(old.get(k) != meta[k] for k in keys):
            have = ", ".join(f"{k}={old.get(k)}" for k in keys)
            want = ", ".join(f"{k}={meta[k]}" for k in keys)
            raise StoreError(
                f"{out} holds a store made with {have}; this run asks for {want}. "
                "Use another --out (one store per geometry) or delete the old store."
            )
    else:
        atomic_write_text(path, json.dumps(meta, indent=2))
    atomic_write_text(Path(out) / "labels.txt", "".join(f"{g}\n" for g in glosses))


def stage_parser(stage: Stage, epilog: str) -> argparse.ArgumentParser:
    """A data stage's command line: its description and the options both stages share (:func:`add_stage_args`)."""
    p = argparse.ArgumentParser(prog=stage.script, description=stage.description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_stage_args(p, store=stage.store)
    return p


def add_stage_args(p, *, store: str) -> None:
    """The command-line options both data stages share (selection, output, sharding, workers, reporting)."""
    p.add_argument("--metadata", required=True, type=Path, help="raw/WLASL_v0.3.json")
    p.add_argument("--videos", required=True, type=Path, help="directory of <video_id>.mp4 files (raw/videos)")
    p.add_argument("--out", required=True, type=Path, help=f"{store} directory to write")
    p.add_argument("--subset", type=int, help="WLASL-N: first N glosses (100, 300, 1000, 2000); default all")
    p.add_argument("--nslt", type=Path, help="nslt_N.json: take videos, splits and classes from it")
    p.add_argument(
        "--shard",
        help="i/n: process every n-th instance from i (0-based); default from "
        "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, else 0/1",
    )
    p.add_argument("--strict", action="store_true", help="exit non-zero if any instance is skipped")
    p.add_argument(
        "--drop-duplicates",
        action="store_true",
        help="leave val/test videos whose bytes equal another instance's (kept in train first) out of the store; "
        "either way the report lists them as split_leakage",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def stage_options(args) -> dict:
    """The config fields of the options :func:`add_stage_args` adds (and ``--workers``), from parsed ``args``.

    Raises:
        ValueError: a bad ``--shard``.
    """
    return {"metadata": args.metadata, "videos": args.videos, "out": args.out, "subset": args.subset, "nslt": args.nslt,
            "workers": args.workers, "shard": parse_shard(args.shard), "strict": args.strict,
            "drop_duplicates": args.drop_duplicates}  # fmt: skip


class _ProgressLines:
    """Progress in a log (a batch job, not a terminal): one line every tenth of the work or 30 s, and at the end."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.t0 = 0, time.monotonic()
        self.said = (0, self.t0)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.said[0] + max(1, self.total // 10) or now - self.said[1] >= 30 or self.done == self.total:
            self.said = (self.done, now)
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s ({100 * self.done // max(self.total, 1)}%) "
                  f"after {now - self.t0:.0f} s", file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool, unit: str):
    from tqdm import tqdm

    # On a SLURM log (not a TTY) a bar's redraws are one endless line: print plain lines instead.
    if enabled and not sys.stderr.isatty():
        return _ProgressLines(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, mininterval=0.5)


def run_stage(
    stage: Stage,
    *,
    out: Path,
    chosen: Sequence[Instance],
    work: Callable[[Instance], Outcome],
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    progress: bool = True,
    drop_duplicates: bool = False,
) -> dict:
    """Run ``work`` on this shard's instances, write the shard report, assemble manifest and report.

    Args:
        stage: what the stage declares (report name, columns, ...).
        out: the store folder (already opened with :func:`open_out`).
        chosen: every selected instance, all shards (the manifest lists them in this order).
        work: makes one item; must pickle when workers > 1 (a module-level
            function or a ``functools.partial`` of one).
        shard: ``(i, n)``: this run handles instances i, i+n, ...
        workers: processes; 1 runs in this process.
        progress: show a progress bar.
        drop_duplicates: leave val/test videos that duplicate a kept one out of the manifest.

    Returns:
        The assembled report (as written to ``stage.report``), plus ``"run"``:
        this shard's lost instances and their descriptions (not written).
    """
    i, n = shard
    mine = list(chosen[i::n])
    start = time.perf_counter()
    outcomes = [Outcome(x.video_id, "skipped", *x.problem) for x in mine if x.problem]
    todo = [x for x in mine if not x.problem]
    bar = _progress(len(mine), f"shard {i}/{n}" if n > 1 else stage.name, progress, stage.name.rstrip("s"))
    bar.update(len(outcomes))
    work = functools.partial(guarded, work)
    if workers > 1 and len(todo) > 1:
        for k, result in run_pool(work, todo, workers=workers):
            if isinstance(result, Lost):
                result = Outcome(todo[k].video_id, "lost", "worker_lost", f"{result.describe()} while processing it")
            outcomes.append(result)
            bar.update(1)
    else:
        for inst in todo:
            outcomes.append(work(inst))
            bar.update(1)
    bar.close()
    shard_report = {
        "shard": [i, n],
        "instances": len(mine),
        "wall_s": round(time.perf_counter() - start, 3),
        "host": platform.node(),
        "outcomes": [asdict(o) for o in sorted(outcomes, key=lambda o: o.video_id)],
    }
    shard_path = Path(out) / "reports" / f"shard-{i}-of-{n}.json"
    atomic_write_text(shard_path, json.dumps(shard_report, indent=1))
    report = assemble(stage, out, [x.video_id for x in chosen], n, drop_duplicates=drop_duplicates)
    lost = [o for o in outcomes if o.state == "lost"]
    report["run"] = {
        "shard": [i, n], "shard_report": str(shard_path), "report": str(Path(out) / stage.report),
        "lost": [asdict(o) for o in lost],
    }  # fmt: skip
    return report


def run_configured(
    stage: Stage,
    cfg: StageConfig,
    *,
    make_store: Callable[[StageConfig, list[str]], None],
    work: Callable[..., Outcome],
    progress: bool = True,
) -> dict:
    """Select ``cfg``'s instances, open its store, and :func:`run_stage` ``work(inst, cfg=cfg)`` on this shard's.

    Args:
        make_store: creates the store, or checks that an existing one was made the same way.
        work: a module-level function of ``(inst, cfg=...)`` (it must pickle for workers > 1).
    """
    glosses, chosen = select_instances(cfg.metadata, cfg.subset, cfg.nslt)
    make_store(cfg, glosses)
    return run_stage(stage, out=cfg.out, chosen=chosen, work=functools.partial(work, cfg=cfg), shard=cfg.shard,
                     workers=cfg.workers, progress=progress, drop_duplicates=cfg.drop_duplicates)  # fmt: skip


def duplicate_groups(rows: list[dict]) -> list[dict]:
    """Instances whose source videos are byte-identical (same ``sha256``), as report entries.

    WLASL lists some URLs twice, so one file can stand under two video ids,
    sometimes in two splits: a test clip the model trained on. Each group:
    ``sha256``, its ``videos`` (``video_id``, ``split``, ``gloss``, in keep
    order: train first), and whether it spans splits (``leak``) or glosses.
    """
    by_hash: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("sha256"):
            by_hash.setdefault(r["sha256"], []).append(r)
    groups = []
    for digest, members in sorted(by_hash.items()):
        if len(members) < 2:
            continue
        members = sorted(members, key=_keep_order)
        groups.append({
            "sha256": digest,
            "videos": [{"video_id": r["video_id"], "split": r["split"], "gloss": r["gloss"]} for r in members],
            "leak": len({r["split"] for r in members}) > 1,
            "glosses": sorted({r["gloss"] for r in members}),
        })  # fmt: skip
    return groups


def _keep_order(row: dict) -> tuple:
    split = row.get("split")
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), row["video_id"])


def _dropped_duplicates(groups: list[dict]) -> dict[str, dict]:
    """``--drop-duplicates``: the val and test members of each group after the first member kept, as skips."""
    dropped = {}
    for g in groups:
        kept = g["videos"][0]
        for v in g["videos"][1:]:
            if v["split"] in ("val", "test"):
                detail = f"same video bytes as {kept['video_id']} ({kept['split']}, sha256 {g['sha256'][:12]}...)"
                dropped[v["video_id"]] = {"video_id": v["video_id"], "reason": "duplicate", "detail": detail}
    return dropped


def _read_part(path: Path, out: Path, expected: str) -> dict:
    """A row file or shard report of the store ``out``; a damaged one is named, with the rerun that remakes it."""
    return read_json(path, expected=expected, todo=delete_advice(path, out, "rerun the same command (it is made again)"))


def assemble(stage: Stage, out: Path, video_ids: list[str], shards: int, *, drop_duplicates: bool = False) -> dict:
    """Build ``manifest.csv`` and the stage report from what is on disk.

    A pure function of the row files and shard reports, so any shard (or a
    rerun) can call it; the last shard to finish writes the complete result.
    With ``drop_duplicates``, val and test instances whose video bytes a kept
    instance already has leave the manifest (recorded skips, reason
    ``duplicate``); either way every such group is listed in the report.
    """
    out = Path(out)
    rows = []
    for vid in video_ids:
        if id_problem(vid):
            continue  # never a row: it was a recorded skip
        row_path = out / "rows" / f"{vid}.json"
        if row_path.is_file():
            rows.append(_read_part(row_path, out, "a manifest row (a JSON object)"))
    groups = duplicate_groups(rows)
    dropped = _dropped_duplicates(groups) if drop_duplicates else {}
    rows = [r for r in rows if r["video_id"] not in dropped]
    buf = io.StringIO()
    # extrasaction: rows may carry more than the manifest shows (the keypoint stage's frame lists).
    writer = csv.DictWriter(buf, fieldnames=stage.columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "manifest.csv", buf.getvalue())

    written = {r["video_id"] for r in rows}
    skipped, lost, done_shards, wall_s = dict(dropped), {}, [], 0.0
    for k in range(shards):
        path = out / "reports" / f"shard-{k}-of-{shards}.json"
        if not path.is_file():
            continue
        rep = _read_part(path, out, "a shard report (a JSON object)")
        done_shards.append(k)
        wall_s += rep["wall_s"]
        for o in rep["outcomes"]:
            if o["video_id"] in written or o["video_id"] in dropped:
                continue
            entry = {"video_id": o["video_id"], "reason": o["reason"], "detail": o["detail"]}
            if o["state"] == "skipped":
                skipped[o["video_id"]] = entry
            elif o["state"] == "lost":
                lost[o["video_id"]] = entry
    reasons = tuple(dict.fromkeys(stage.skip_reasons + RUNNER_REASONS))
    errors = sorted(v for v, s in skipped.items() if s["reason"] == "error")
    report = {
        "requested": len(video_ids),
        "written": len(rows),
        "skipped": len(skipped),
        "skipped_by_reason": {r: sum(1 for s in skipped.values() if s["reason"] == r) for r in reasons},
        **{note: sorted(r["video_id"] for r in rows if note in r["status"].split("+")) for note in stage.notes},
        "lost": sorted(lost),
        "errors": errors,
        "shards_done": done_shards,
        "shards": shards,
        # Complete: every shard ran and no instance is owed a retry (lost to a dead worker, or an
        # unexpected error). A store that is not complete is not ready to train on.
        "complete": len(done_shards) == shards and not lost and not errors,
        "wall_s_total": round(wall_s, 3),
        "duplicates_dropped": drop_duplicates,
        "split_leakage": [g for g in groups if g["leak"]],
        "duplicates": groups,
        "skips": sorted(skipped.values(), key=lambda s: s["video_id"]),
        "lost_detail": sorted(lost.values(), key=lambda s: s["video_id"]),
    }
    if stage.extra is not None:
        report.update(stage.extra(rows))
    atomic_write_text(out / stage.report, json.dumps(report, indent=1))
    return report


def summary(report: dict, unit: str = "clips") -> str:
    """A few lines for the end of a run."""
    notes = ", ".join(f"{len(report[k])} {k}" for k in ("padded", "clamped") if k in report)
    lines = [
        f"written {report['written']} / {report['requested']} {unit} ({report['skipped']} skipped"
        + (f", {notes})" if notes else ")"),
    ]
    if report.get("step_fallback"):
        lines.append(
            f"  {len(report['step_fallback'])} ranges too short for --frame-step: sampled uniformly "
            f"(step_fallback, e.g. {report['step_fallback'][0]})"
        )
    for reason, count in report["skipped_by_reason"].items():
        if count:
            example = next(s for s in report["skips"] if s["reason"] == reason)
            lines.append(f"  skipped {count:>5} {reason:<12} e.g. {example['video_id']}: {example['detail']}")
    for note in ("bbox_rescaled", "bbox_clamped"):
        if report.get(note):
            lines.append(f"  {len(report[note])} bboxes did not fit their video ({note}, e.g. {report[note][0]}; see its manifest row)")
    leaks = report.get("split_leakage", [])
    if leaks:
        example = ", ".join(f"{v['video_id']} ({v['split']})" for v in leaks[0]["videos"])
        action = "dropped from val/test" if report.get("duplicates_dropped") else "kept: --drop-duplicates drops them from val/test"
        lines.append(f"  split leakage: {len(leaks)} videos appear byte-identical in two splits, e.g. {example}; {action}")
    missing = sorted(set(range(report["shards"])) - set(report["shards_done"]))
    if missing:
        lines.append(f"  shards still to run: {missing} (manifest holds what is done so far)")
    return "\n".join(lines)


def lost_error(report: dict) -> str:
    """One line for stderr when this run lost instances to a killed worker ("" when none)."""
    lost = report.get("run", {}).get("lost", [])
    if not lost:
        return ""
    named = "; ".join(f"{o['video_id']}: {o['detail']}" for o in lost[:5])
    more = f" (and {len(lost) - 5} more)" if len(lost) > 5 else ""
    return (
        f"error: {len(lost)} instance(s) lost to a dead worker: {named}{more}. Finished items are kept: "
        f"rerun the same command to retry (listed in {report['run']['shard_report']})"
    )


def exit_status(report: dict, *, strict: bool) -> int:
    """A stage's exit code, saying why on stderr.

    3: instances lost to a dead worker; 4: instances that raised an
    unexpected error (every other instance was processed); 1: skips under
    ``--strict``; else 0. 3 and 4 leave the store incomplete: a rerun
    retries exactly those instances.
    """
    if lost_error(report):
        print(lost_error(report), file=sys.stderr)
        return 3
    errors = [s for s in report["skips"] if s["reason"] == "error"]
    if errors:
        first = errors[0]
        print(
            f"error: {len(errors)} instance(s) raised an unexpected error, e.g. {first['video_id']}: {first['detail']}. "
            f"Every other instance was processed; these are listed in {report.get('run', {}).get('report', 'the stage report')} "
            "(reason 'error'). Rerun the same command to retry them; if one fails again, please report its message.",
            file=sys.stderr,
        )
        return 4
    if strict and report["skipped"]:
        print(f"error: --strict and {report['skipped']} instances were skipped", file=sys.stderr)
        return 1
    return 0
