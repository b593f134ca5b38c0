"""What every export shares: the error type, the input contract and the clips it is checked on.

An export lives in ``RUN_DIR/exports/<name>/``::

    model.tflite | model.onnx | saved_model/   the exported model (uint8 clips in, float32 logits out)
    stream.tflite                              MoViNet stream runs: one frame + states in, logits + states out
    contract.json                              input/output contract, classes, preprocessing geometry
    metrics.json                               accuracy through the exported file's runtime, beside the run's

The contract is what a phone app needs to feed the file: the clip shape,
dtype and pixel range (normalisation happens inside the model), the class
list in label order, and the preprocessing geometry (frames sampled, crop
margin, side) that ``main/predict.py`` repeats on a raw video.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from utils.core.config import MAX_FRAMES, MAX_SIZE
from utils.core.files import atomic_write_text
from utils.core.ids import is_safe_id
from utils.core.readers import DamagedFile, check_typed, read_json
from wlasl.clip_store import ClipStore, StoreError
from wlasl.transforms import clip_transform

__all__ = [
    "CONTRACT_FILE",
    "FORMATS",
    "METRICS_FILE",
    "StoreClips",
    "ExportError",
    "build_contract",
    "model_input",
    "read_contract",
    "store_clips",
    "store_geometry",
    "write_json",
]

# Which formats each framework can produce (and, for a refusal, what works instead).
FORMATS = {"keras": ("tflite", "savedmodel"), "torch": ("onnx",)}
CONTRACT_FILE = "contract.json"
METRICS_FILE = "metrics.json"


class ExportError(ValueError):
    """An export that cannot be made or read: names the op, format or file, and what works instead."""


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def model_input(clip: np.ndarray, frames: int, size: int) -> np.ndarray:
    """A stored clip cut as evaluation cuts it (centre window, full frame), with a batch axis: ``(1, T, S, S, 3)`` uint8."""
    return clip_transform(np.asarray(clip), frames, size, rng=None)[None]


class StoreClips:
    """Model inputs of a list of store entries, read when indexed (a WLASL100 test split at 20x224² is ~0.8 GB)."""

    def __init__(self, store: ClipStore, entries, frames: int, size: int):
        self.store, self.entries, self.frames, self.size = store, list(entries), frames, size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> np.ndarray:
        return model_input(self.store.load(self.entries[i]), self.frames, self.size)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def store_clips(root: str | Path, split: str, *, frames: int, size: int, limit: int | None = None):
    """``(video_ids, labels, clips)`` of one split of a clip store; ``clips[i]`` is a model input ``(1, T, S, S, 3)``.

    Raises:
        ExportError: no store at ``root`` (the run's ``data.root``), or the split is empty.
    """
    try:
        store = ClipStore(root)
    except StoreError as e:
        raise ExportError(f"the run's clip store is needed for calibration and evaluation: {e}") from None
    entries = store.split(split)[:limit]
    if not entries:
        raise ExportError(f"{store.root} holds no {split} clips; preprocess the run's store again (see its prepare_report.json)")
    return [e.video_id for e in entries], np.asarray([e.label for e in entries], np.int64), StoreClips(store, entries, frames, size)


def store_geometry(root: str | Path) -> dict | None:
    """The clip geometry of the run's store (``store.json``: frames, size, margin, ...), or None when absent."""
    path = Path(root) / "store.json"
    if not path.is_file():
        return None
    meta = read_json(path, expected="the store's settings (a JSON object)",
                     todo="the run's store was edited or damaged: make it again with main/preprocess.py")  # fmt: skip
    return {k: v for k, v in meta.items() if k not in ("schema_version", "num_classes", "subset", "metadata", "nslt")}


def build_contract(restored, *, fmt: str, precision: str, files: dict, batch: str, runtime: str, stream: dict | None = None) -> dict:
    """The contract.json of an export of ``restored`` (a models.restore.RestoredRun)."""
    cfg, spec = restored.cfg, restored.spec
    frames, size = cfg.model.frames, cfg.model.size
    return {
        "schema_version": 1,
        "run_id": cfg.run_id,
        "model": spec.name,
        "framework": spec.framework,
        "format": fmt,
        "precision": precision,
        "files": files,
        "runtime": runtime,
        "input": {
            "name": "clips",
            "shape": [1 if batch == "fixed" else None, frames, size, size, 3],
            "batch": batch,
            "dtype": "uint8",
            "layout": "batch, frames, height, width, RGB",
            "pixel_range": [0, 255],
            # The model normalises inside: feed raw RGB pixels.
            "normalisation": "inside the model: (x / 255 - mean) / std",
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
        "output": {"name": "logits", "shape": [1 if batch == "fixed" else None, len(restored.glosses)], "dtype": "float32",
                   "meaning": "unnormalised class scores; softmax gives probabilities"},
        "classes": list(restored.glosses),
        # How a raw video becomes the stored clip (main/predict.py repeats it), then the
        # centre window of `frames` frames at `size` px that evaluation takes from it.
        "preprocessing": {"store": store_geometry(cfg.data.root), "frames": frames, "size": size},
        "stream": stream,
    }  # fmt: skip


@dataclass(frozen=True)
class _Preprocessing:
    store: dict | None
    frames: int
    size: int

    def __post_init__(self):
        if not (1 <= self.frames <= MAX_FRAMES and 8 <= self.size <= MAX_SIZE):
            raise ValueError(f"preprocessing frames and size expected 1..{MAX_FRAMES} and 8..{MAX_SIZE}, received "
                             f"{self.frames} and {self.size}")  # fmt: skip


@dataclass(frozen=True)
class _Contract:
    """What readers of contract.json index into (the rest is for people and phone apps)."""

    format: Literal["tflite", "onnx", "savedmodel"]
    files: dict[str, str]
    classes: list[str]
    preprocessing: _Preprocessing
    stream: dict | None = None

    def __post_init__(self):
        names = [self.files.get("model")] + ([self.stream.get("file")] if self.stream else [])
        if not all(isinstance(n, str) and is_safe_id(n) for n in names):  # a file of the export folder, nowhere else
            raise ValueError(f"files expected plain file names of the export folder, received {names}")


def read_contract(export_dir: str | Path) -> dict:
    """An export's contract.json, checked (what ``predict`` and the runtimes read from it is there, typed).

    Raises:
        ExportError: no such export (lists the run's exports), or a damaged contract (names the file and field).
    """
    export_dir = Path(export_dir)
    path = export_dir / CONTRACT_FILE
    if not path.is_file():
        known = sorted(p.parent.name for p in export_dir.parent.glob(f"*/{CONTRACT_FILE}"))
        raise ExportError(
            f"no export at {export_dir} (no {CONTRACT_FILE}); exports of this run: {', '.join(known) or 'none'}; "
            "make one with main/export.py RUN_DIR --format tflite|onnx|savedmodel"
        )
    todo = f"export the run again: python main/export.py {export_dir.parent.parent} --format FORMAT --name {export_dir.name}"
    expected = "an export contract (a JSON object with format, files, classes, preprocessing)"
    try:
        data = read_json(path, expected=expected, todo=todo)
        check_typed(path, _Contract, data, expected=expected, todo=todo)
    except DamagedFile as e:
        raise ExportError(str(e)) from None
    return data
