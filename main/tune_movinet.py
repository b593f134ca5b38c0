"""Tune MoViNet a0-a5 (Keras) hyperparameters on a clip store with keras-tuner.

Every trial is a normal training run under results/tuning/<study>/runs/; rerunning
the same command (or a requeued SLURM job) resumes the study. ``--help`` lists the
options, and examples made from the registry (this family's variant, store and
search space): ``utils.tuning.cli.tune_examples``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.tuning.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main("movinet"))
