"""Every RNG state a resumed PyTorch run needs, in a form ``torch.load(weights_only=True)`` reads.

Everything stored is a tensor or plain Python data, so ``torch.load(...,
weights_only=True)`` reads it (numpy's RNG state is kept as a tensor and the
Python one as its repr).
"""

from __future__ import annotations

import ast
import random

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state"]


def rng_state() -> dict:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": [pos, has_gauss, cached],
        "python": repr(random.getstate()),
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    pos, has_gauss, cached = s["numpy_pos"]
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(ast.literal_eval(s["python"]))
