"""Tune VideoMAE ViT-S / ViT-B (PyTorch, Hugging Face Transformers) hyperparameters on a clip store with keras-tuner.

Every trial is a normal training run (run record, checkpoints) under
results/tuning/<study>/runs/; the study name is stable, so rerunning the same
command (or a requeued SLURM job) resumes the search where it stopped.

Examples:
    # Bayesian optimisation, 20 trials of 30 epochs (learning rate 1e-5..1e-3, Adam or SGD, weight decay,
    # dropout, frozen layers 0/4/8, batch size); --pretrained applies to every trial
    python main/tune_videomae.py --tuner bayesian --variant s --data data/wlasl100_224 --max-trials 20 --max-epochs 30 \\
        --pretrained checkpoints/<released checkpoint folder>
    # check everything in a minute before queueing (tiny trials)
    python main/tune_videomae.py --tuner hyperband --variant s --data data/wlasl100_224 --dry-run
    # afterwards: the best values as a training preset
    python main/train_videomae.py --variant s --data data/wlasl100_224 --config results/tuning/<study>/best.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.tuning.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main("videomae", doc=__doc__.split("Examples:")[1]))
