"""The demo pipeline behind ``make demo``: synthetic mini-WLASL -> clip store -> training -> report.

Each stage is a plain function in the module that owns it, so tests can run
the same steps; this module only strings them together.
"""

from __future__ import annotations

import json
from pathlib import Path

from wlasl.prepare import summary
from wlasl.synthetic import synthetic_store

__all__ = ["DEMO_FRAMES", "DEMO_SIZE", "prepare_stage", "run_demo"]

# Small enough to train on 2 CPU cores in a minute or two.
DEMO_FRAMES = 8
DEMO_SIZE = 64


def prepare_stage(root: Path, glosses: int = 3, per_gloss: int = 12, workers: int = 2) -> Path:
    """Write the synthetic set and preprocess it; returns the clip store path."""
    store = synthetic_store(
        root, frames=DEMO_FRAMES, size=DEMO_SIZE, store=f"data/mini{glosses}_{DEMO_SIZE}", workers=workers,
        progress=True, glosses=glosses, per_gloss=per_gloss,
    )  # fmt: skip
    print(summary(json.loads((store / "prepare_report.json").read_text())))
    print(f"clip store: {store}")
    return store


def run_demo(root: str | Path = "demo") -> Path:
    """Every stage on the synthetic set; reruns resume (finished clips and runs are kept)."""
    from models.demo_keras import demo_stage as keras_stage
    from models.demo_torch import demo_stage as torch_stage
    from utils.report import demo_stage as report_stage
    from utils.tuning.cli import demo_stage as tune_stage

    root = Path(root)
    print(f"== 1. synthetic mini-WLASL and preprocessing under {root}/")
    store = prepare_stage(root)
    print("== 2. a tiny MoViNet-a0 (Keras engine), briefly")
    keras_stage(root, store)
    print("== 3. a tiny X3D-XS (PyTorch engine), briefly")
    torch_stage(root, store)
    print("== 4. a tiny Hyperband study (keras-tuner over the PyTorch engine)")
    tune_stage(root, store)
    print("== 5. the result table of the demo's runs")
    report_stage(root)
    return root / "results"
