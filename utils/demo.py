"""``make demo``: ``experiments/demo.yaml`` run in order on this machine, ending with the table.

The demo is an ordinary experiment (a synthetic mini-WLASL, two tiny models,
the report); this module only lets it live under another folder.
"""

from __future__ import annotations

from pathlib import Path

from utils.cluster.runner import ROOT, run_local
from utils.cluster.status import experiment_report
from utils.experiment import load_experiment, make_plan

__all__ = ["DEMO_FILE", "demo_plan", "run_demo"]

DEMO_FILE = ROOT / "experiments" / "demo.yaml"


def demo_plan(root: str | Path = "demo"):
    """The demo experiment with everything (raw set, store, runs, tables) under ``root``."""
    root = Path(root)
    sets = [f"results={root}/results", f"data_root={root}/data", f"stores.*.metadata={root}/raw/WLASL_v0.3.json",
            f"stores.*.videos={root}/raw/videos"]  # fmt: skip
    return make_plan(load_experiment(DEMO_FILE, sets))


def run_demo(root: str | Path = "demo", *, workers: int = 2) -> int:
    """Run the demo here, in order; returns the exit code (0: every run completed). Reruns skip what is done."""
    return run_local(demo_plan(root), report=experiment_report, workers=workers)
