"""Shared helpers of the PyTorch tests (a tiny synthetic clip store and a training call).

Imported by tests/test_torch_*.py.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path

from utils.core.config import config_from_dict
from wlasl.synthetic import synthetic_store

FRAMES, SIZE = 8, 32


def make_store(root: Path, per_gloss: int = 8, size: int = SIZE) -> Path:
    """3 motion classes, 8 frames, ``size`` px; returns the clip store path."""
    return synthetic_store(root, frames=FRAMES, size=size, glosses=3, per_gloss=per_gloss, width=96, height=72, seed=0)


def make_cfg(store: Path, results: Path, run_id: str, *, model: str = "x3d_xs", size: int = SIZE, **sections):
    """A resolved RunConfig for ``store`` with tiny defaults; ``sections`` override model/data/train keys."""
    from models.train import resolve

    data = {"model": {"name": model, "frames": FRAMES, "size": size, "dropout": 0.0},
            "data": {"root": str(store), "batch_size": 2, "workers": 0},
            "train": {"epochs": 2, "steps_per_epoch": 2, "lr": 1e-3},
            "results": str(results), "run_id": run_id}  # fmt: skip
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return resolve(config_from_dict(data))


def train(cfg, *, flag=None, num_classes=None, loaders=None):
    """What models.train.run does, with an injectable preemption flag."""
    from models.engine_torch import fit, seed_everything
    from models.registry import get_model
    from wlasl.clip_store import ClipStore
    from wlasl.loader_torch import make_loaders

    store = ClipStore(cfg.data.root)
    loaders = loaders or make_loaders(store, cfg)
    seed_everything(cfg.train.seed)
    model = get_model(cfg.model.name).build(
        num_classes=num_classes or store.num_classes, frames=cfg.model.frames, size=cfg.model.size,
        dropout=cfg.model.dropout, freeze=cfg.model.freeze, pretrained=cfg.model.pretrained,
    )  # fmt: skip
    return fit(model, loaders, cfg, cfg.run_dir, flag=flag)


class StopAfter:
    """A preemption flag that is raised after ``polls`` step-boundary checks (the engine polls once per step)."""

    def __init__(self, polls: int):
        self.polls = polls

    @property
    def requested(self):
        self.polls -= 1
        return signal.SIGUSR1 if self.polls < 0 else None


def build_toy(*, num_classes, frames=8, size=32, mean=(0.5,) * 3, std=(0.25,) * 3, dropout=0.0, freeze=0,
              unfreeze_last=None, pretrained=None, pretrained_partial=False, width=4):  # fmt: skip
    """A tiny conv net in the suite's ClipClassifier: the builder of the tests' throwaway family."""
    import torch

    from models._torch_video import ClipClassifier

    net = torch.nn.Sequential(
        torch.nn.Conv3d(3, width, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(),
        torch.nn.Dropout(dropout), torch.nn.Linear(width, num_classes),
    )  # fmt: skip
    return ClipClassifier(net, mean=mean, std=std, num_classes=num_classes)


@contextmanager
def toy_family():
    """Register ``toy_small`` and ``toy_big`` (family ``toy``, PyTorch) for the duration; yields their names.

    The engine and policy rules do not depend on the network, and this one
    trains in milliseconds where X3D takes seconds per step on CPU.
    """
    from models.registry import Option, register_model, unregister_model

    option = (Option("width", int, 4, "channels of the one conv"),)
    names = []
    try:
        for order, variant in ((5, "small"), (6, "big")):
            name = f"toy_{variant}"
            register_model(name, family="toy", framework="torch", display=f"Toy-{variant.title()}", order=order,
                           frames=8, size=48, mean=(0.5,) * 3, std=(0.25,) * 3, tune_default=variant == "big",
                           space={"batch_size": {"kind": "choice", "values": [2]}}, options=option)(build_toy)  # fmt: skip
            names.append(name)
        yield names
    finally:
        for name in names:
            unregister_model(name)
