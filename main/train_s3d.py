"""Train and evaluate S3D (PyTorch) on a clip store.

Examples:
    # check the setup on CPU in seconds (a few clips, 2 steps)
    python main/train_s3d.py --data data/wlasl100_224 --dry-run
    # WLASL100, 20 frames at 224², from Kinetics-400 weights (torchvision's s3d-d76dad2f.pth)
    python main/train_s3d.py --data data/wlasl100_224 --pretrained checkpoints/s3d-d76dad2f.pth \\
        --epochs 30 --batch-size 8 --lr 1e-3 --mixed-precision
    # two GPUs on one node
    torchrun --nproc-per-node 2 main/train_s3d.py --data data/wlasl100_224 --mixed-precision
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("s3d", doc=__doc__))
