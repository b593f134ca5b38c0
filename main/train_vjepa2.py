"""Train and evaluate V-JEPA 2 ViT-L with its attentive-probe classifier (PyTorch, Hugging Face Transformers).

Examples:
    # check the setup on CPU (a few clips, 2 steps; ViT-L is large: a tiny encoder is quicker)
    python main/train_vjepa2.py --data data/wlasl100_224 --dry-run --hidden-size 64 --layers 2 --heads 2 --intermediate-size 128
    # WLASL100 at 20 frames, 224², from the released Something-Something v2 classifier, downloaded once on a
    # machine with internet: hf download facebook/vjepa2-vitl-fpc16-256-ssv2 --local-dir checkpoints/vjepa2-vitl-fpc16-256-ssv2
    python main/train_vjepa2.py --data data/wlasl100_224 --pretrained checkpoints/vjepa2-vitl-fpc16-256-ssv2 \\
        --epochs 30 --batch-size 4 --lr 1e-4 --weight-decay 0.05 --freeze 12 --mixed-precision
    # the encoder-only release (no pooler: it starts fresh) needs --pretrained-partial
    python main/train_vjepa2.py --data data/wlasl100_224 --pretrained checkpoints/vjepa2-vitl-fpc64-256 --pretrained-partial
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("vjepa2", doc=__doc__))
