"""Shared helpers of the export and predict tests: a tiny synthetic store and a finished run on it.

A "finished run" is a real one (models.train.run: config.json, checkpoints,
metrics.json, scores): two training steps are enough, because the export
tests compare the exported file with the run's own model on the same clips,
which does not need a model that has learnt anything.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from utils.core.config import config_from_dict
from wlasl.synthetic import synthetic_store

FRAMES, SIZE = 8, 32


def make_store(root: Path, *, size: int = SIZE, per_gloss: int = 8) -> Path:
    """3 motion classes, 8 frames at ``size`` px (about 60/20/20 train/val/test)."""
    return synthetic_store(root, frames=FRAMES, size=size, glosses=3, per_gloss=per_gloss, width=96, height=72, seed=0)


def train_run(store: Path, results: Path, run_id: str, *, model: str, size: int = SIZE, stream: bool = False,
              options: dict | None = None, epochs: int = 1, steps: int | None = 2, lr: float = 1e-3,
              dry_run: bool = False) -> Path:  # fmt: skip
    """Train ``model`` on ``store`` briefly through the real training entry; returns the run directory.

    ``dry_run`` takes the engines' dry-run path (eager Keras steps: faster than tracing a big graph).
    """
    from models.train import run

    cfg = config_from_dict({
        "model": {"name": model, "frames": FRAMES, "size": size, "dropout": 0.0, "stream": stream, "options": options or {}},
        "data": {"root": str(store), "batch_size": 4, "workers": 0},
        "train": {"epochs": epochs, "steps_per_epoch": steps, "lr": lr, "seed": 0},
        "results": str(results), "run_id": run_id, "dry_run": dry_run,
    })  # fmt: skip
    record = run(cfg)
    assert record.status == "completed", record.error
    return Path(results) / "runs" / run_id


def read_export(run_dir: Path, name: str) -> tuple[dict, dict]:
    """(contract.json, metrics.json) of an export."""
    folder = run_dir / "exports" / name
    return json.loads((folder / "contract.json").read_text()), json.loads((folder / "metrics.json").read_text())


@contextmanager
def toy_run_with_onnx(root: Path):
    """A finished run of the tests' tiny PyTorch family (``toy_small``) on :func:`make_store`, with its ONNX export
    (``exports/onnx_float32``); yields ``{"root", "run", "store", "videos"}``. The family stays registered inside."""
    from torch_helpers import toy_family

    from models.export import export_run

    store = make_store(root)
    with toy_family():
        run_dir = train_run(store, root / "results", "toy", model="toy_small")
        export_run(run_dir, "onnx", log=lambda _: None)
        yield {"root": root, "run": run_dir, "store": store, "videos": root / "raw" / "videos"}
