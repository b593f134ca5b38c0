"""Checkpoint files of the PyTorch engine: atomic writes and every RNG a resume needs.

Everything stored is a tensor or plain Python data, so ``torch.load(...,
weights_only=True)`` reads it (numpy's RNG state is kept as a tensor and the
Python one as its repr).
"""

from __future__ import annotations

import ast
import io
import random
from pathlib import Path

import numpy as np
import torch

from utils.core.files import atomic_write_bytes

__all__ = ["load_checkpoint", "rng_state", "save_atomic", "set_rng_state"]


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


def save_atomic(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, model, opt, sched, scaler, num_classes: int) -> dict:
    """Restore a ``last.pt`` into the (unwrapped) model, optimizer, scheduler, scaler and RNGs; returns it."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt["num_classes"] != num_classes:
        raise ValueError(
            f"{path} was trained for {ckpt['num_classes']} classes but the store has {num_classes}; "
            f"use another --run-id (or --results) for this store"
        )
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None and ckpt["scheduler"] is not None:
        sched.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return ckpt
