"""The clip store: ``data/<name>/`` written by preprocessing, read by training.

Layout::

    store.json             frames, size, margin, classes (what every clip shares)
    labels.txt             one gloss per line; line number = class index
    manifest.csv           one row per written clip (assembled from rows/)
    prepare_report.json    skipped / padded / clamped instances with reasons
    clips/<video_id>.npy   uint8 (T, H, W, 3) RGB
    rows/<video_id>.json   the clip's manifest row, written after its .npy

Every file is written to a temporary name and renamed, so a killed job never
leaves a half clip or a truncated manifest, and the per-clip row files let
any number of shards write concurrently: the manifest is a pure function of
the rows present, so assembling it again is idempotent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.core.config import MAX_FRAMES, MAX_SIZE
from utils.core.readers import DamagedFile, check_typed, delete_advice, inside, read_csv, read_json, read_text

__all__ = [
    "MANIFEST_COLUMNS",
    "SOURCE_COLUMNS",
    "STORE_SPLITS",
    "ClipEntry",
    "ClipStore",
    "ClipStoreMeta",
    "StoreError",
    "make_store_hint",
    "read_store_files",
    "store_digest",
]

# What every store's manifest says first about an instance and its source video
# (the keypoint store's manifest starts the same way).
SOURCE_COLUMNS = (
    "video_id",
    "gloss",
    "label",
    "split",
    "signer_id",
    "source",
    "frame_start",  # resolved source range, 1-based inclusive
    "frame_end",
    "frame_count",  # frames the file really holds (as far as it decoded)
    "fps_nominal",
    "fps_real",
    "sha256",  # of the source video's bytes: the same file under two ids shows (WLASL lists some URLs twice)
)
MANIFEST_COLUMNS = SOURCE_COLUMNS + (
    "bbox",  # metadata bbox "xmin ymin xmax ymax"
    "crop",  # square box actually cut "x0 y0 x1 y1"
    "frames",
    "frame_step",  # 1 = uniform over the range; S = every S-th frame, centred
    "size",
    "decoder",
    "status",  # ok, or '+'-joined notes: padded, clamped, short_file, step_fallback
    "path",  # relative to the store root
)


class StoreError(ValueError):
    """A clip store that is missing, incomplete, or does not fit the request."""


STORE_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClipStoreMeta:
    """What ``store.json`` of a clip store must hold (other keys are kept in ``ClipStore.meta``)."""

    frames: int
    size: int
    num_classes: int
    margin: float | None = 0.1  # None: a rendered skeleton store (wlasl/render_skeleton.py) has no crop margin
    frame_step: int = 1

    def __post_init__(self):
        for key, lo, hi in (("frames", 1, MAX_FRAMES), ("size", 8, MAX_SIZE), ("num_classes", 1, None)):
            value = getattr(self, key)
            if value < lo or (hi is not None and value > hi):
                raise ValueError(f"'{key}' expected {lo}..{hi or 'any'}, received {value}")


def read_store_files(root: Path, meta_type, columns: tuple[str, ...], fix: str) -> tuple[dict, list[str], list[dict]]:
    """``store.json`` (checked against ``meta_type``), ``labels.txt`` and ``manifest.csv`` of a store, told apart
    and checked together: one story (labels vs num_classes and every row's label and gloss), every row's split
    known and its ``path`` inside the store. The clip and keypoint stores share this.

    Raises:
        StoreError: the file, the line and the field that is wrong, what was expected, and ``fix``.
    """
    try:
        expected = "the store's settings, a JSON object with " + ", ".join(map(repr, meta_type.__dataclass_fields__))
        meta = read_json(root / "store.json", expected=expected, todo=fix)
        check_typed(root / "store.json", meta_type, meta, expected=expected, todo=fix)
        labels = read_text(root / "labels.txt", expected="one gloss per line", todo=fix).splitlines()
        rows = read_csv(root / "manifest.csv", columns=columns, expected="the store's manifest", todo=fix)
    except DamagedFile as e:
        raise StoreError(str(e)) from None
    if len(labels) != meta["num_classes"]:
        raise StoreError(f"{root / 'labels.txt'}: expected {meta['num_classes']} lines (num_classes in store.json), "
                         f"received {len(labels)}; {fix}")  # fmt: skip
    for k, r in enumerate(rows, start=2):  # line 1 is the header
        where = f"{root / 'manifest.csv'}: line {k} (video_id {r.get('video_id')})"
        try:
            label = int(r["label"])
        except (TypeError, ValueError):
            raise StoreError(f"{where}: label expected an integer, received {r.get('label')!r}; {fix}") from None
        if not 0 <= label < len(labels):
            raise StoreError(f"{where}: label {label} expected 0..{len(labels) - 1} ({len(labels)} classes in "
                             f"labels.txt); {fix}")  # fmt: skip
        if r.get("gloss") != labels[label]:
            raise StoreError(f"{where}: gloss {r.get('gloss')!r} expected {labels[label]!r} (line {label + 1} of "
                             f"labels.txt); {fix}")  # fmt: skip
        if r.get("split") not in STORE_SPLITS:
            raise StoreError(f"{where}: split expected one of {list(STORE_SPLITS)}, received {r.get('split')!r}; {fix}")
        path = r.get("path") or ""
        if not path or Path(path).is_absolute() or not inside(root, root / path):
            # Never advice to delete what it names: it is not the store's (../../etc/passwd).
            raise StoreError(f"{where}: path {path!r} expected a file inside the store (e.g. clips/<video_id>.npy, "
                             f"relative to {root}); {fix}")  # fmt: skip
    return meta, labels, rows


def store_digest(root: str | Path) -> str:
    """What a store holds, as a short hash of its ``store.json`` and ``manifest.csv`` (not of its folder's name or
    place: a moved store is the same store, another store in a folder of the same name is not)."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("store.json", "manifest.csv"):
        path = Path(root) / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"(missing)") + b"\0")
    return digest.hexdigest()[:16]


def make_store_hint(root: str | Path) -> str:
    """The command that makes the store ``root`` names.

    A name ``wlasl<N>_<size>`` (the suite's convention, e.g. data/wlasl100_172)
    gives the subset and the size; any other name gets a generic command.
    """
    root = Path(root)
    m = re.fullmatch(r"wlasl(\d+)_(\d+)", root.name)
    if m:
        subset, size = m.groups()
        return (
            f"Make it with: python main/preprocess.py --metadata raw/WLASL_v0.3.json --videos raw/videos "
            f"--subset {subset} --frames 20 --size {size} --out {root}"
        )
    return (
        f"Make it with: python main/preprocess.py --metadata raw/WLASL_v0.3.json --videos raw/videos --subset N "
        f"--frames 20 --size SIZE --out {root} (N: 100, 300, 1000 or 2000; SIZE: the model's input side, "
        "172 for MoViNet, 224 for I3D, S3D and X3D)"
    )


@dataclass(frozen=True)
class ClipEntry:
    """One clip of the store, as the manifest lists it."""

    video_id: str
    label: int
    gloss: str
    split: str
    path: Path
    signer_id: int = -1


class ClipStore:
    """Read side of the clip store (both training engines use it).

    Args:
        root: the store directory (``--out`` of ``main/preprocess.py``).

    Raises:
        StoreError: the directory is not a finished clip store; the message
            gives the command that makes one.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        missing = [n for n in ("store.json", "labels.txt", "manifest.csv") if not (self.root / n).is_file()]
        if missing:
            raise StoreError(f"no clip store at {self.root} (missing {', '.join(missing)}). {make_store_hint(self.root)}")
        # labels.txt, store.json and the manifest must tell one story, or training learns a wrong head.
        fix = "the store was edited, damaged or mixed with another one: make it again with main/preprocess.py"
        self.meta, self.labels, self.rows = read_store_files(
            self.root, ClipStoreMeta, ("video_id", "gloss", "label", "split", "signer_id", "path"), fix)
        self.entries = []
        for k, r in enumerate(self.rows, start=2):
            try:
                signer = int(r["signer_id"])
            except (TypeError, ValueError):
                raise StoreError(f"{self.root / 'manifest.csv'}: line {k} (video_id {r['video_id']}): signer_id expected "
                                 f"an integer, received {r['signer_id']!r}; {fix}") from None  # fmt: skip
            self.entries.append(ClipEntry(video_id=r["video_id"], label=int(r["label"]), gloss=r["gloss"],
                                          split=r["split"], path=self.root / r["path"], signer_id=signer))  # fmt: skip

    @property
    def frames(self) -> int:
        return int(self.meta["frames"])

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> list[ClipEntry]:
        """The clips of one split (``train``, ``val`` or ``test``), in manifest order."""
        return [e for e in self.entries if e.split == name]

    def load(self, entry: ClipEntry | str | Path, mmap: bool = True) -> np.ndarray:
        """One clip as uint8 ``(T, H, W, 3)``; memory-mapped unless ``mmap=False``.

        A memory map costs no RAM until pages are touched, so datasets of any
        size stay flat in resident memory. The dtype and shape are checked
        against store.json (reading the header only): a wrong clip would
        otherwise reach the model as garbage (a resize into a buffer of
        another shape leaves the buffer uninitialised).

        Raises:
            StoreError: the file is not a clip of this store; names the file.
        """
        path = entry.path if isinstance(entry, ClipEntry) else Path(entry)
        try:
            clip = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise StoreError(
                f"{path}: cannot read the clip ({e}); "
                + delete_advice(path, self.root, "rerun main/preprocess.py with the same arguments (finished clips are kept)")
            ) from None
        expected = (self.frames, self.size, self.size, 3)
        if clip.dtype != np.uint8 or clip.shape != expected:
            raise StoreError(
                f"{path}: expected a uint8 clip of shape {expected} ({self.root / 'store.json'}), "
                f"received {clip.dtype} {clip.shape}; the file is damaged or from another store: "
                + delete_advice(path, self.root, "rerun main/preprocess.py with the same arguments")
            )
        return clip

    def check_frames(self, frames: int) -> None:
        """Raise unless the store holds at least ``frames`` frames per clip."""
        if frames > self.frames:
            raise StoreError(
                f"the model takes {frames} frames but {self.root} stores {self.frames} per clip; "
                f"lower --frames to <= {self.frames} or preprocess again with --frames {frames}"
            )

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        counts = {s: len(self.split(s)) for s in ("train", "val", "test")}
        return f"ClipStore({str(self.root)!r}, classes={self.num_classes}, frames={self.frames}, size={self.size}, {counts})"
