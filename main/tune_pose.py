"""Tune a pose model's (LSTM or SPOTER-style transformer, PyTorch) hyperparameters on a keypoint store.

Every trial is a normal training run (run record, checkpoints) under
results/tuning/<study>/runs/; the study name is stable, so rerunning the same
command (or a requeued SLURM job) resumes the search where it stopped.

Examples:
    # Bayesian optimisation, 20 trials of 100 epochs (learning rate, optimizer, weight decay, dropout, batch size)
    python main/tune_pose.py --tuner bayesian --variant transformer --data data/wlasl100_pose --max-trials 20 --max-epochs 100
    # Hyperband over both variants
    python main/tune_pose.py --tuner hyperband --tune-variant --data data/wlasl100_pose --max-epochs 81
    # check everything in a minute before queueing (tiny trials)
    python main/tune_pose.py --tuner hyperband --variant lstm --data data/wlasl100_pose --dry-run
    # afterwards: the best values as a training preset
    python main/train_pose.py --variant transformer --data data/wlasl100_pose --config results/tuning/<study>/best.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.tuning.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main("pose", doc=__doc__.split("Examples:")[1]))
