"""Train and evaluate X3D XS/S/M/L (PyTorch, pytorchvideo) on a clip store.

Examples:
    # check the setup on CPU in seconds (a few clips, 2 steps)
    python main/train_x3d.py --variant xs --data data/wlasl100_224 --dry-run
    # WLASL100, X3D-S at 20 frames, 224², from pytorchvideo's Kinetics weights (X3D_S.pyth)
    python main/train_x3d.py --variant s --data data/wlasl100_224 --pretrained checkpoints/X3D_S.pyth \\
        --epochs 30 --batch-size 16 --lr 1e-3 --mixed-precision
    # the tiny demo store on CPU
    python main/train_x3d.py --variant xs --data demo/data/mini3_64 --frames 8 --size 64 --epochs 3
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("x3d", doc=__doc__))
