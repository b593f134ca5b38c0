"""The preprocessing stage: WLASL metadata + raw videos -> clip store.

Per instance: decode only the sampled frames of its range, crop to the
signer's bbox (square, with margin, clamped to the frame), resize to
``size``², and write a uint8 (T, H, W, 3) RGB clip plus its manifest row.
Bad input (missing or undecodable file, bbox outside the frame, range past
the end) is a recorded skip, never a crash; see ``prepare_report.json``.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.core.files import atomic_save_npy, atomic_write_text
from wlasl.clip_store import MANIFEST_COLUMNS, StoreError
from wlasl.geometry import resolve_range, sample_indices, square_crop
from wlasl.metadata import Instance, load_nslt, load_wlasl, select_nslt, select_subset
from wlasl.video import DecodeError, decode_frames

__all__ = ["ClipSkip", "MadeClip", "PrepareConfig", "Outcome", "make_clip", "parse_shard", "process_instance", "run_prepare", "assemble"]

SKIP_REASONS = ("missing", "corrupt", "bbox", "frame_range")


@dataclass(frozen=True)
class PrepareConfig:
    """What ``main/preprocess.py`` is asked to do.

    Attributes:
        metadata: WLASL v0.3 JSON.
        videos: directory of ``<video_id>.mp4`` files.
        out: clip store directory.
        subset: WLASL-N (first N glosses); None = all, or what ``nslt`` lists.
        nslt: optional ``nslt_N.json``: its videos, splits and classes.
        frames: T, frames per clip.
        size: output side in pixels (172 MoViNet, 224 the others).
        margin: crop context around the bbox, fraction of its side.
        workers: processes.
        shard: ``(i, n)``: this job handles instances i, i+n, i+2n, ...
        strict: any skip makes the run fail (non-zero exit).
        ext: video file extension.
    """

    metadata: Path
    videos: Path
    out: Path
    subset: int | None = None
    nslt: Path | None = None
    frames: int = 20
    size: int = 224
    margin: float = 0.1
    workers: int = 1
    shard: tuple[int, int] = (0, 1)
    strict: bool = False
    ext: str = ".mp4"

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"--frames expected >= 1, received {self.frames}")
        if self.size < 8:
            raise ValueError(f"--size expected >= 8 pixels, received {self.size}")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"--margin expected 0..1 (fraction of the bbox side), received {self.margin}")
        if self.workers < 1:
            raise ValueError(f"--workers expected >= 1, received {self.workers}")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"--shard expected i/n with 0 <= i < n, received {i}/{n}")


@dataclass(frozen=True)
class Outcome:
    """What happened to one instance: ``written``, ``cached`` or ``skipped``."""

    video_id: str
    state: str
    reason: str = ""  # for skips: one of SKIP_REASONS
    detail: str = ""
    notes: tuple[str, ...] = ()  # for written clips: padded, clamped, short_file


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


def _clip_paths(out: Path, video_id: str) -> tuple[Path, Path]:
    return out / "clips" / f"{video_id}.npy", out / "rows" / f"{video_id}.json"


class ClipSkip(ValueError):
    """Why an instance gives no clip: ``reason`` is one of SKIP_REASONS, ``detail`` the message."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class MadeClip:
    """One clip made from a video, and the facts its manifest row records.

    Attributes:
        clip: uint8 ``(frames, size, size, 3)`` RGB, exactly what the store holds.
        first: resolved first frame (0-based) of the range.
        last: resolved last frame (0-based, inclusive).
        frame_count: frames the file really holds (as far as it decodes).
        fps: the file's real frame rate.
        crop: the square ``(x0, y0, x1, y1)`` cut from each frame.
        decoder: ``opencv`` or ``pyav``.
        notes: ``short_file``, ``clamped``, ``padded``.
    """

    clip: np.ndarray
    first: int
    last: int
    frame_count: int
    fps: float
    crop: tuple[int, int, int, int]
    decoder: str
    notes: tuple[str, ...]


def make_clip(video: Path, inst: Instance, cfg: PrepareConfig) -> MadeClip:
    """Decode, crop, sample and resize one instance's clip (no file written).

    Preprocessing (:func:`process_instance`) and ``main/predict.py`` both call
    this, so a video given to a trained model is cut exactly like its
    training clips. Only ``inst.bbox``, ``inst.frame_start``/``frame_end`` and
    ``cfg.frames``/``size``/``margin`` are read.

    Raises:
        ClipSkip: the video is missing or undecodable, the bbox lies outside
            the frame, or the range starts past the end (``reason`` says which).
    """
    xmin, ymin, xmax, ymax = inst.bbox
    if xmax <= xmin or ymax <= ymin:
        raise ClipSkip("bbox", f"zero-area bbox {list(inst.bbox)}")

    def plan(count: int) -> np.ndarray:
        r = resolve_range(inst.frame_start, inst.frame_end, count)
        return sample_indices(r.first, r.last, cfg.frames)

    notes: list[str] = []
    try:
        decoded = decode_frames(video, plan)
        rng = resolve_range(inst.frame_start, inst.frame_end, decoded.frame_count)
        idx = sample_indices(rng.first, rng.last, cfg.frames)
        if decoded.decoded_until < idx.max():
            # The container declared more frames than it holds (truncated file
            # or a wrong header): resample over what really decodes.
            real = decoded.decoded_until + 1
            notes.append("short_file")
            rng = resolve_range(inst.frame_start, inst.frame_end, real)
            idx = sample_indices(rng.first, rng.last, cfg.frames)
            decoded = decode_frames(video, idx)
            if decoded.decoded_until < idx.max():
                raise DecodeError(f"{video}: frames {idx.min()}..{idx.max()} do not decode twice alike")
    except FileNotFoundError as e:
        raise ClipSkip("missing", str(e)) from None
    except DecodeError as e:
        raise ClipSkip("corrupt", str(e)) from None
    except ValueError as e:  # from resolve_range: the range starts past the end
        raise ClipSkip("frame_range", str(e)) from None
    try:
        x0, y0, x1, y1 = square_crop(inst.bbox, decoded.width, decoded.height, cfg.margin)
    except ValueError as e:
        raise ClipSkip("bbox", str(e)) from None

    if rng.clamped:
        notes.append("clamped")
    if rng.length < cfg.frames:
        notes.append("padded")
    # Crop, then resize, then convert colours: every step on the smallest
    # image it can be done on, and only for the sampled frames.
    interp = cv2.INTER_AREA if (x1 - x0) >= cfg.size else cv2.INTER_LINEAR
    clip = np.empty((cfg.frames, cfg.size, cfg.size, 3), np.uint8)
    for t, i in enumerate(idx):
        small = cv2.resize(decoded.frames[int(i)][y0:y1, x0:x1], (cfg.size, cfg.size), interpolation=interp)
        cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=clip[t])
    count = decoded.frame_count if "short_file" not in notes else rng.last + 1
    return MadeClip(clip, rng.first, rng.last, count, decoded.fps, (x0, y0, x1, y1), decoded.decoder, tuple(notes))


def process_instance(inst: Instance, cfg: PrepareConfig) -> Outcome:
    """Make one clip (or say why not). Safe to call again: finished clips are kept."""
    clip_path, row_path = _clip_paths(cfg.out, inst.video_id)
    if row_path.is_file() and clip_path.is_file():
        return Outcome(inst.video_id, "cached")
    video = cfg.videos / f"{inst.video_id}{cfg.ext}"
    if not video.is_file():
        return Outcome(inst.video_id, "skipped", "missing", f"{video} does not exist")
    try:
        made = make_clip(video, inst, cfg)
    except ClipSkip as e:
        return Outcome(inst.video_id, "skipped", e.reason, e.detail)
    atomic_save_npy(clip_path, made.clip)
    row = {
        "video_id": inst.video_id,
        "gloss": inst.gloss,
        "label": inst.label,
        "split": inst.split,
        "signer_id": inst.signer_id,
        "source": inst.source,
        "frame_start": made.first + 1,
        "frame_end": made.last + 1,
        "frame_count": made.frame_count,
        "fps_nominal": inst.fps_nominal,
        "fps_real": round(made.fps, 3),
        "bbox": " ".join(map(str, inst.bbox)),
        "crop": " ".join(map(str, made.crop)),
        "frames": cfg.frames,
        "size": cfg.size,
        "decoder": made.decoder,
        "status": "+".join(made.notes) or "ok",
        "path": f"clips/{inst.video_id}.npy",
    }
    # The row lands after the clip: a row on disk means a whole clip on disk.
    atomic_write_text(row_path, json.dumps(row))
    return Outcome(inst.video_id, "written", notes=made.notes)


def _select(cfg: PrepareConfig) -> tuple[list[str], list[Instance]]:
    glosses, instances = load_wlasl(cfg.metadata)
    if cfg.nslt is not None:
        chosen = select_nslt(instances, load_nslt(cfg.nslt), cfg.nslt)
        n_classes = max((i.label for i in chosen), default=-1) + 1
        if cfg.subset is not None and cfg.subset != n_classes:
            raise ValueError(
                f"--subset {cfg.subset} disagrees with {cfg.nslt}, which holds {n_classes} classes; drop one of them"
            )
        return glosses[:n_classes], chosen
    chosen = select_subset(glosses, instances, cfg.subset)
    return glosses[: cfg.subset or len(glosses)], chosen


def _store_meta(cfg: PrepareConfig, glosses: list[str]) -> dict:
    return {
        "schema_version": 1,
        "frames": cfg.frames,
        "size": cfg.size,
        "margin": cfg.margin,
        "num_classes": len(glosses),
        "subset": cfg.subset,
        "metadata": str(cfg.metadata),
        "nslt": str(cfg.nslt) if cfg.nslt else None,
    }


def _remove_stale_temps(out: Path, older_than_s: float = 600.0) -> None:
    """Delete temp files a killed job left behind.

    Only old ones: another shard may be writing a fresh temp right now, and a
    clip takes milliseconds to write, so ten minutes is safely stale.
    """
    now = time.time()
    for sub in ("clips", "rows"):
        folder = out / sub
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                try:
                    if now - tmp.stat().st_mtime > older_than_s:
                        tmp.unlink()
                except FileNotFoundError:
                    pass  # another shard cleaned it first


def _open_store(cfg: PrepareConfig, glosses: list[str]) -> None:
    """Create the store, or check that an existing one was made the same way."""
    meta_path = cfg.out / "store.json"
    meta = _store_meta(cfg, glosses)
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        keys = ("frames", "size", "margin", "num_classes")
        if any(old.get(k) != meta[k] for k in keys):
            have = ", ".join(f"{k}={old.get(k)}" for k in keys)
            want = ", ".join(f"{k}={meta[k]}" for k in keys)
            raise StoreError(
                f"{cfg.out} holds clips made with {have}; this run asks for {want}. "
                "Use another --out (one store per clip geometry) or delete the old store."
            )
    else:
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
    atomic_write_text(cfg.out / "labels.txt", "".join(f"{g}\n" for g in glosses))
    _remove_stale_temps(cfg.out)


def _pool_context():
    """fork when it is safe (fast start), spawn when a framework is loaded.

    TensorFlow and torch start threads at import; forking a process that
    holds them can deadlock, so a caller that imported them (tests,
    notebooks, the demo after training) gets spawn.
    """
    if any(m in sys.modules for m in ("tensorflow", "torch")):
        return mp.get_context("spawn")
    return mp.get_context("fork")


def _worker(args):
    inst, cfg = args
    return process_instance(inst, cfg)


def run_prepare(cfg: PrepareConfig, progress: bool = True) -> dict:
    """Preprocess this shard's instances, then assemble the store's manifest and report.

    Returns:
        The assembled report (also written to ``prepare_report.json``).
    """
    glosses, chosen = _select(cfg)
    i, n = cfg.shard
    mine = chosen[i::n]
    _open_store(cfg, glosses)
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    jobs = [(inst, cfg) for inst in mine]
    bar = _progress(len(jobs), f"shard {i}/{n}" if n > 1 else "clips", progress)
    if cfg.workers > 1 and len(jobs) > 1:
        with _pool_context().Pool(cfg.workers) as pool:
            for out in pool.imap_unordered(_worker, jobs, chunksize=1):
                outcomes.append(out)
                bar.update(1)
    else:
        for job in jobs:
            outcomes.append(_worker(job))
            bar.update(1)
    bar.close()
    shard_report = {
        "shard": [i, n],
        "instances": len(mine),
        "wall_s": round(time.perf_counter() - start, 3),
        "host": platform.node(),
        "outcomes": [asdict(o) for o in sorted(outcomes, key=lambda o: o.video_id)],
    }
    atomic_write_text(cfg.out / "reports" / f"shard-{i}-of-{n}.json", json.dumps(shard_report, indent=1))
    return assemble(cfg.out, [inst.video_id for inst in chosen], n)


def assemble(out: Path, video_ids: list[str], shards: int) -> dict:
    """Build ``manifest.csv`` and ``prepare_report.json`` from what is on disk.

    A pure function of the row files and shard reports, so any shard (or a
    rerun) can call it; the last shard to finish writes the complete result.
    """
    out = Path(out)
    rows = []
    for vid in video_ids:
        row_path = out / "rows" / f"{vid}.json"
        if row_path.is_file():
            rows.append(json.loads(row_path.read_text()))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "manifest.csv", buf.getvalue())

    written = {r["video_id"] for r in rows}
    skipped, done_shards, wall_s = {}, [], 0.0
    for k in range(shards):
        path = out / "reports" / f"shard-{k}-of-{shards}.json"
        if not path.is_file():
            continue
        rep = json.loads(path.read_text())
        done_shards.append(k)
        wall_s += rep["wall_s"]
        for o in rep["outcomes"]:
            if o["state"] == "skipped" and o["video_id"] not in written:
                skipped[o["video_id"]] = {"video_id": o["video_id"], "reason": o["reason"], "detail": o["detail"]}
    by_reason = {r: sum(1 for s in skipped.values() if s["reason"] == r) for r in SKIP_REASONS}
    report = {
        "requested": len(video_ids),
        "written": len(rows),
        "skipped": len(skipped),
        "skipped_by_reason": by_reason,
        "padded": sorted(r["video_id"] for r in rows if "padded" in r["status"]),
        "clamped": sorted(r["video_id"] for r in rows if "clamped" in r["status"]),
        "short_file": sorted(r["video_id"] for r in rows if "short_file" in r["status"]),
        "shards_done": done_shards,
        "shards": shards,
        "complete": len(done_shards) == shards,
        "wall_s_total": round(wall_s, 3),
        "skips": sorted(skipped.values(), key=lambda s: s["video_id"]),
    }
    atomic_write_text(out / "prepare_report.json", json.dumps(report, indent=1))
    return report


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    # On a SLURM log (not a TTY) redraws become thousands of lines: update less often.
    return tqdm(total=total, desc=desc, unit="clip", disable=not enabled, mininterval=0.5 if sys.stderr.isatty() else 30)


def summary(report: dict) -> str:
    """A few lines for the end of a run."""
    lines = [
        f"written {report['written']} / {report['requested']} clips"
        f" ({report['skipped']} skipped, {len(report['padded'])} padded, {len(report['clamped'])} clamped)",
    ]
    for reason, count in report["skipped_by_reason"].items():
        if count:
            example = next(s for s in report["skips"] if s["reason"] == reason)
            lines.append(f"  skipped {count:>5} {reason:<12} e.g. {example['video_id']}: {example['detail']}")
    if not report["complete"]:
        missing = sorted(set(range(report["shards"])) - set(report["shards_done"]))
        lines.append(f"  shards still to run: {missing} (manifest holds what is done so far)")
    return "\n".join(lines)
