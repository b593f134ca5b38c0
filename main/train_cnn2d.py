"""Train and evaluate the 2D-CNN frame baseline (MobileNetV2 on every frame, tf_keras) on a clip store.

Examples:
    # check everything on CPU first: a few clips, two steps, one epoch
    python main/train_cnn2d.py --data data/wlasl100_224 --dry-run
    # WLASL100 from the ImageNet weights (keras-applications release, .h5), a 1D conv over time
    python main/train_cnn2d.py --data data/wlasl100_224 --temporal conv \\
        --pretrained weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \\
        --epochs 30 --batch-size 16 --lr 1e-3 --mixed-precision
    # distilled from a finished X3D-S run (PyTorch) through its train-split scores (docs/distillation.md)
    python main/train_cnn2d.py --data data/wlasl100_224 --temporal conv \\
        --teacher results/runs/x3d_s-wlasl100_224-s0 --kd-alpha 0.5 --kd-temperature 4
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("cnn2d", doc=__doc__))
