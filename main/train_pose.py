"""Train and evaluate a pose model (stacked LSTM or SPOTER-style transformer, PyTorch) on a keypoint store.

The keypoint store comes from main/extract_keypoints.py (see docs/pose.md).

Examples:
    # check the setup on CPU in seconds (a few clips, 2 steps)
    python main/train_pose.py --variant lstm --data data/wlasl100_pose --dry-run
    # WLASL100, the SPOTER-style transformer at 50 frames
    python main/train_pose.py --variant transformer --data data/wlasl100_pose --epochs 100 --batch-size 32 --lr 1e-4
    # a smaller LSTM; --flip turns hand swap on (off by default: handedness carries meaning)
    python main/train_pose.py --variant lstm --data data/wlasl100_pose --hidden 128 --layers 3 --epochs 100
    # a synthetic keypoint store to try it without MediaPipe
    python -m wlasl.synthetic_pose --out demo/data/pose3 && python main/train_pose.py --variant lstm \\
        --data demo/data/pose3 --frames 16 --hidden 32 --layers 1 --batch-size 4 --epochs 20
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("pose", doc=__doc__))
