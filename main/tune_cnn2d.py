"""Tune the 2D-CNN frame baseline (MobileNetV2 per frame, Keras) hyperparameters on a clip store with keras-tuner.

Every trial is a normal training run (run record, checkpoints) under
results/tuning/<study>/runs/; the study name is stable, so rerunning the same
command (or a requeued SLURM job) resumes the search where it stopped.

Examples:
    # Bayesian optimisation, 20 trials of 30 epochs (learning rate, optimizer,
    # weight decay, dropout, frozen blocks, batch size)
    python main/tune_cnn2d.py --tuner bayesian --data data/wlasl100_224 --max-trials 20 --max-epochs 30
    # Hyperband: budgets of 1..27 epochs, promoted trials resume from their parent's checkpoint
    python main/tune_cnn2d.py --tuner hyperband --data data/wlasl100_224 --max-epochs 27
    # check everything in a minute before queueing (tiny trials)
    python main/tune_cnn2d.py --tuner hyperband --data data/wlasl100_224 --dry-run
    # narrow the space (space.yaml: "lr: {min: 1.0e-4, max: 1.0e-3, sampling: log}" / "optimizer: [adam, sgd]"
    # / "dropout: 0.3"), then train and test a full run with the best values
    python main/tune_cnn2d.py --tuner bayesian --data data/wlasl100_224 --space space.yaml --final
    # distributed: one chief (oracle, CPU) and N workers sharing results/ (SLURM array: task 0 is the chief)
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=0.0.0.0 KERASTUNER_ORACLE_PORT=8470 \\
        python main/tune_cnn2d.py --tuner bayesian --data data/wlasl100_224 --distributed &
    KERASTUNER_TUNER_ID=tuner1 KERASTUNER_ORACLE_IP=$(hostname) KERASTUNER_ORACLE_PORT=8470 \\
        python main/tune_cnn2d.py --tuner bayesian --data data/wlasl100_224 --distributed
    # afterwards: the best values as a training preset
    python main/train_cnn2d.py --data data/wlasl100_224 --config results/tuning/<study>/best.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.tuning.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main("cnn2d", doc=__doc__.split("Examples:")[1]))
