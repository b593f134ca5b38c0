"""Open a model's store, build a registered model for a resolved config, find its engine and loaders.

Shared by training (:mod:`models.train`) and by everything that rebuilds or
feeds a finished run's model (:mod:`models.restore`: export, prediction,
scoring an older teacher for :mod:`models.distill`), so that neither side
imports the other. :mod:`models.train` re-exports these names.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from models.lifecycle import Engine
from models.registry import ModelSpec, get_model
from utils.core.config import RunConfig
from wlasl.clip_store import StoreError

__all__ = ["ENGINES", "INPUTS", "LOADERS", "build_model", "engine_of", "loaders_of", "open_store"]

# Engines and loaders per framework, imported on demand so a PyTorch run
# never pays TensorFlow's import (and vice versa).
ENGINES = {"keras": "models.engine_keras", "torch": "models.engine_torch"}
LOADERS = {"keras": "wlasl.loader_tf", "torch": "wlasl.loader_torch"}

# What each model input (ModelSpec.input) reads: the store class ("module:Class"),
# its loaders per framework, and whether the store fixes a clip length the model
# must not exceed (clip stores do; keypoint clips are resampled to any length).
INPUTS = {
    "clip": {"store": "wlasl.clip_store:ClipStore", "loaders": LOADERS, "fixed_frames": True},
    "keypoints": {"store": "wlasl.keypoint_store:KeypointStore", "loaders": {"torch": "wlasl.loader_pose"},
                  "fixed_frames": False},
}  # fmt: skip

def engine_of(spec: ModelSpec) -> Engine:
    """The framework's engine module (imported on demand), checked against the :class:`models.lifecycle.Engine` contract.

    Raises:
        TypeError: the module lacks part of the contract (names what is missing).
    """
    module = importlib.import_module(ENGINES[spec.framework])
    if not isinstance(module, Engine):
        missing = [name for name in ("prepare_process", "build_scope", "fit", "predict_logits", "load_weights")
                   if not callable(getattr(module, name, None))]  # fmt: skip
        raise TypeError(f"{module.__name__} does not implement models.lifecycle.Engine: it lacks {missing}")
    return module


def open_store(spec: ModelSpec, root, frames: int | None = None):
    """The store ``spec`` reads at ``root``, checked (labels vs classes; clip length when the store fixes one).

    Raises:
        StoreError: no such store, a store of the other kind, labels that disagree,
            or fewer stored frames than ``frames``; the message says how to make the right one.
    """
    found = _store_kind(root)
    if found is not None and found != spec.input:
        raise StoreError(
            f"{root} is a {found} store but {spec.name} reads {spec.input}; pass --data with a {spec.input} store "
            f"(the suite names it data/{spec.store_name('<N>')} for WLASL<N>)"
        )
    table = INPUTS[spec.input]
    module, _, name = table["store"].partition(":")
    store = getattr(importlib.import_module(module), name)(root)
    if table["fixed_frames"] and frames is not None:
        store.check_frames(frames)
    return store


def _store_kind(root) -> str | None:
    """``clip`` or ``keypoints`` as the store's store.json says (clip stores carry no kind); None when unreadable."""
    try:
        meta = json.loads((Path(root) / "store.json").read_text())
    except (OSError, ValueError):
        return None  # the store class names what is missing or broken
    return str(meta.get("kind", "clip")) if isinstance(meta, dict) else None


def loaders_of(spec: ModelSpec):
    """The loader module for ``spec``'s input and framework (imported on demand).

    Raises:
        ValueError: no loader feeds this input to this framework.
    """
    loaders = INPUTS[spec.input]["loaders"]
    if spec.framework not in loaders:
        raise ValueError(f"{spec.name}: no {spec.framework} loader for {spec.input} input; frameworks with one: {sorted(loaders)}")
    return importlib.import_module(loaders[spec.framework])


def build_model(cfg: RunConfig, num_classes: int, spec: ModelSpec | None = None):
    """The registered model of a resolved ``cfg``, built in its engine's scope (seed, precision, strategy)."""
    spec = spec or get_model(cfg.model.name)
    # The model is built in its engine's context: seed, dtype policy, a multi-GPU strategy scope.
    with engine_of(spec).build_scope(cfg):
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
