"""Train and evaluate MoViNet a0-a5 (tf-models-official, tf_keras) on a clip store.

Examples:
    # check everything on CPU first: a few clips, two steps, one epoch
    python main/train_movinet.py --variant a0 --data data/wlasl100_172 --dry-run
    # the seed thesis setting: MoViNet-A3, 20 frames x 172², from the Kinetics-600 release
    python main/train_movinet.py --variant a3 --data data/wlasl100_172 \\
        --pretrained checkpoints/movinet_a3_base --epochs 30 --batch-size 8 --mixed-precision
    # the causal (streaming) variant from its release
    python main/train_movinet.py --variant a0 --stream --data data/wlasl100_172 \\
        --pretrained checkpoints/movinet_a0_stream
    # again with the same --run-id (or seed) resumes from its last checkpoint
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("movinet", doc=__doc__))
