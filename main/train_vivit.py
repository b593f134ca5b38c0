"""Train and evaluate ViViT-B 16x2 (PyTorch, Hugging Face Transformers) on a clip store.

Examples:
    # check the setup on CPU in seconds (a few clips, 2 steps)
    python main/train_vivit.py --data data/wlasl100_224 --dry-run
    # WLASL100 at 20 frames, 224², from the released Kinetics-400 checkpoint, downloaded once on a machine
    # with internet: hf download google/vivit-b-16x2-kinetics400 --local-dir checkpoints/vivit-b-16x2-kinetics400
    python main/train_vivit.py --data data/wlasl100_224 --pretrained checkpoints/vivit-b-16x2-kinetics400 \\
        --epochs 30 --batch-size 4 --lr 1e-4 --weight-decay 0.05 --mixed-precision
    # on skeleton videos (main/render_keypoints.py), the seed project's other ViViT input
    python main/train_vivit.py --data data/wlasl100_skeleton_224 --pretrained checkpoints/vivit-b-16x2-kinetics400
    # a tiny encoder on the demo store, on CPU
    python main/train_vivit.py --data demo/data/mini3_64 --frames 8 --size 64 --hidden-size 64 --layers 2 --heads 2 \\
        --intermediate-size 128 --patch-size 16 --epochs 3
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("vivit", doc=__doc__))
