"""A registered model built for a resolved config, and which engine and loaders its framework uses.

Shared by training (:mod:`models.train`) and by everything that rebuilds a
finished run's model (:mod:`models.restore`: export, prediction, scoring an
older teacher for :mod:`models.distill`), so neither depends on the other.
"""

from __future__ import annotations

import contextlib
import importlib

from models.registry import ModelSpec, get_model
from utils.core.config import RunConfig

__all__ = ["ENGINES", "LOADERS", "build_model", "engine_of", "loaders_of"]

# Engines and loaders per framework, imported on demand so a PyTorch run
# never pays TensorFlow's import (and vice versa).
ENGINES = {"keras": "models.engine_keras", "torch": "models.engine_torch"}
LOADERS = {"keras": "wlasl.loader_tf", "torch": "wlasl.loader_torch"}


def engine_of(spec: ModelSpec):
    """The framework's engine module (imported on demand)."""
    return importlib.import_module(ENGINES[spec.framework])


def loaders_of(spec: ModelSpec):
    """The framework's loader module (``make_loaders(store, cfg)``), imported on demand."""
    return importlib.import_module(LOADERS[spec.framework])


def build_model(cfg: RunConfig, num_classes: int, spec: ModelSpec | None = None):
    """The registered model of a resolved ``cfg``, built in its engine's scope (seed, precision, strategy)."""
    spec = spec or get_model(cfg.model.name)
    engine = engine_of(spec)
    # An engine may need the model built in its context (seed, dtype policy,
    # a multi-GPU strategy scope): it offers that as ``build_scope(cfg)``.
    scope = getattr(engine, "build_scope", None)
    with scope(cfg) if scope else contextlib.nullcontext():
        return spec.build(
            num_classes=num_classes,
            frames=cfg.model.frames,
            size=cfg.model.size,
            dropout=cfg.model.dropout,
            freeze=cfg.model.freeze,
            unfreeze_last=cfg.model.unfreeze_last,
            pretrained=cfg.model.pretrained,
            pretrained_partial=cfg.model.pretrained_partial,
            **({"stream": True} if cfg.model.stream else {}),
            **cfg.model.options,
        )
