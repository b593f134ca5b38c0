"""Train and evaluate I3D (Inception-v1 inflated, tf_keras) on a clip store.

Examples:
    # check everything on CPU first: a few clips, two steps, one epoch
    python main/train_i3d.py --data data/wlasl100_224 --dry-run
    # WLASL100 from the ImageNet+Kinetics RGB weights (Keras I3D release, .h5)
    python main/train_i3d.py --data data/wlasl100_224 \\
        --pretrained checkpoints/rgb_inception_i3d_imagenet_and_kinetics_no_top.h5 \\
        --epochs 30 --batch-size 8 --lr 1e-3 --mixed-precision
    # again with the same --run-id (or seed) resumes from its last checkpoint
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("i3d", doc=__doc__))
