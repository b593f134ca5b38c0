"""Train and evaluate VideoMAE ViT-S / ViT-B (PyTorch, Hugging Face Transformers) on a clip store.

Examples:
    # check the setup on CPU in seconds (a few clips, 2 steps)
    python main/train_videomae.py --variant s --data data/wlasl100_224 --dry-run
    # WLASL100 at 20 frames, 224², from the released Kinetics-400 classifier, downloaded once on a machine
    # with internet: hf download MCG-NJU/videomae-base-finetuned-kinetics --local-dir checkpoints/videomae-base-finetuned-kinetics
    python main/train_videomae.py --variant b --data data/wlasl100_224 \\
        --pretrained checkpoints/videomae-base-finetuned-kinetics --epochs 30 --batch-size 4 --lr 1e-4 \\
        --weight-decay 0.05 --mixed-precision
    # ViT-S (MCG-NJU/videomae-small-finetuned-kinetics)
    python main/train_videomae.py --variant s --data data/wlasl100_224 --pretrained checkpoints/videomae-small-finetuned-kinetics
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("videomae", doc=__doc__))
