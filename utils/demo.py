"""The demo pipeline behind ``make demo``: synthetic mini-WLASL -> clip store -> ...

Each stage is a plain function so tests can run the same steps, and later
stages (training, the report) append themselves to ``STAGES``.
"""

from __future__ import annotations

from pathlib import Path

from wlasl.prepare import PrepareConfig, run_prepare, summary
from wlasl.synthetic import make_synthetic

__all__ = ["DEMO_FRAMES", "DEMO_SIZE", "prepare_stage", "run_demo"]

# Small enough to train on 2 CPU cores in a minute or two.
DEMO_FRAMES = 8
DEMO_SIZE = 64


def prepare_stage(root: Path, glosses: int = 3, per_gloss: int = 12, workers: int = 2) -> Path:
    """Write the synthetic set and preprocess it; returns the clip store path."""
    raw = root / "raw"
    if not (raw / "WLASL_v0.3.json").is_file():
        make_synthetic(raw, glosses=glosses, per_gloss=per_gloss)
    store = root / "data" / f"mini{glosses}_{DEMO_SIZE}"
    cfg = PrepareConfig(
        metadata=raw / "WLASL_v0.3.json",
        videos=raw / "videos",
        out=store,
        frames=DEMO_FRAMES,
        size=DEMO_SIZE,
        workers=workers,
    )
    report = run_prepare(cfg)
    print(summary(report))
    print(f"clip store: {store}")
    return store


def run_demo(root: str | Path = "demo") -> Path:
    root = Path(root)
    print(f"== 1. synthetic mini-WLASL and preprocessing under {root}/")
    store = prepare_stage(root)
    return store
