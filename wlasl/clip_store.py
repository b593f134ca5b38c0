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

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MANIFEST_COLUMNS",
    "SOURCE_COLUMNS",
    "ClipEntry",
    "ClipStore",
    "StoreError",
    "make_store_hint",
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
        self.meta = json.loads((self.root / "store.json").read_text())
        self.labels: list[str] = (self.root / "labels.txt").read_text(encoding="utf-8").splitlines()
        with (self.root / "manifest.csv").open(newline="", encoding="utf-8") as f:
            self.rows: list[dict] = list(csv.DictReader(f))
        self._check_labels()
        self.entries = [
            ClipEntry(
                video_id=r["video_id"],
                label=int(r["label"]),
                gloss=r["gloss"],
                split=r["split"],
                path=self.root / r["path"],
                signer_id=int(r["signer_id"]),
            )
            for r in self.rows
        ]

    def _check_labels(self) -> None:
        """labels.txt, store.json and the manifest must tell one story, or training learns a wrong head."""
        fix = "the store was edited or mixed with another one: make it again with main/preprocess.py"
        declared = self.meta.get("num_classes")
        if declared is not None and len(self.labels) != declared:
            raise StoreError(
                f"{self.root / 'labels.txt'}: expected {declared} lines (num_classes in store.json), "
                f"received {len(self.labels)}; {fix}"
            )
        for k, r in enumerate(self.rows, start=2):  # line 1 is the header
            where = f"{self.root / 'manifest.csv'}: line {k} (video_id {r.get('video_id')})"
            try:
                label = int(r["label"])
            except (KeyError, TypeError, ValueError):
                raise StoreError(f"{where}: label expected an integer, received {r.get('label')!r}; {fix}") from None
            if not 0 <= label < len(self.labels):
                raise StoreError(
                    f"{where}: label {label} expected 0..{len(self.labels) - 1} "
                    f"({len(self.labels)} classes in labels.txt); {fix}"
                )
            if r.get("gloss") != self.labels[label]:
                raise StoreError(
                    f"{where}: gloss {r.get('gloss')!r} expected {self.labels[label]!r} "
                    f"(line {label + 1} of labels.txt); {fix}"
                )

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
                f"{path}: cannot read the clip ({e}); delete it and rerun main/preprocess.py "
                "with the same arguments (finished clips are kept)"
            ) from None
        expected = (self.frames, self.size, self.size, 3)
        if clip.dtype != np.uint8 or clip.shape != expected:
            raise StoreError(
                f"{path}: expected a uint8 clip of shape {expected} ({self.root / 'store.json'}), "
                f"received {clip.dtype} {clip.shape}; the file is damaged or from another store: delete it "
                "and rerun main/preprocess.py with the same arguments"
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
