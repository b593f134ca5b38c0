"""The PyTorch stage of ``make demo``: a brief X3D-XS run on the demo clip store (CPU, well under a minute unloaded)."""

from __future__ import annotations

from pathlib import Path

from models.train import run
from utils.core.config import config_from_dict
from utils.core.records import RunRecord

__all__ = ["demo_stage"]


def demo_stage(root: Path, store: Path, *, epochs: int = 2, steps_per_epoch: int = 4) -> RunRecord:
    """Train X3D-XS briefly on ``store`` (8 frames, 64 px) and evaluate it; returns the run record.

    The run lands in ``<root>/results/runs/demo-x3d_xs``; running the demo
    again resumes (and so finishes at once).
    """
    import models.x3d  # noqa: F401  (registers x3d_xs)

    root = Path(root)
    cfg = config_from_dict(
        {
            "model": {"name": "x3d_xs", "frames": 8, "size": 64, "dropout": 0.0},
            "data": {"root": str(store), "batch_size": 4, "workers": 0},
            "train": {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": 1e-2},
            "results": str(root / "results"),
            "run_id": "demo-x3d_xs",
        }
    )
    record = run(cfg)
    test = record.metrics["test"]
    print(
        f"x3d_xs demo: {record.status} in {record.wall_s:.0f} s, val top1 {record.metrics['val']['top1']:.3f}, "
        f"test top1 {test['top1']:.3f} (a few steps only: the pipeline, not the accuracy, is the point) "
        f"-> {root / 'results' / 'runs' / 'demo-x3d_xs'}"
    )
    return record
