"""``make demo``: ``experiments/demo.yaml`` run in order on this machine, ending with the table.

The demo is an ordinary experiment (a synthetic mini-WLASL, two tiny models,
the report); this module only lets it live under another folder.
"""

from __future__ import annotations

from pathlib import Path

from utils.cluster.experiment import load_experiment, make_plan
from utils.cluster.experiment_run import ROOT, run_local

__all__ = ["DEMO_FILE", "run_demo"]

DEMO_FILE = ROOT / "experiments" / "demo.yaml"


def run_demo(root: str | Path = "demo", *, workers: int = 2) -> int:
    """Run the demo experiment with everything under ``root``; returns the exit code (0: all runs completed).

    Paths are relative to the repo root, as in experiment files; reruns skip what is done.
    """
    root = Path(root)
    sets = [f"results={root}/results", f"data_root={root}/data", f"stores.*.metadata={root}/raw/WLASL_v0.3.json",
            f"stores.*.videos={root}/raw/videos"]  # fmt: skip
    return run_local(make_plan(load_experiment(DEMO_FILE, sets)), workers=workers)
