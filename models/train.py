"""Train one configuration: ``run(cfg)`` wires the registry, the clip store, the loaders and the engine.

``run(cfg)`` opens the clip store, builds the registered model, makes the
framework's loaders and hands them to the framework's engine, whose
``fit(model, loaders, cfg, run_dir) -> RunRecord`` does the rest. The
command-line options live in ``utils/train_cli.py`` (the application layer).
"""

from __future__ import annotations

import contextlib
import importlib

from models.registry import ModelSpec, get_model
from utils.core.config import RunConfig
from utils.core.records import RunRecord, make_run_id
from wlasl.clip_store import ClipStore, StoreError

__all__ = ["DRY_RUN", "ENGINES", "LOADERS", "build_model", "engine_of", "resolve", "run"]

# Engines and loaders per framework, imported on demand so a PyTorch run
# never pays TensorFlow's import (and vice versa).
ENGINES = {"keras": "models.engine_keras", "torch": "models.engine_torch"}
LOADERS = {"keras": "wlasl.loader_tf", "torch": "wlasl.loader_torch"}

# What --dry-run means: enough to exercise every stage, on CPU, in seconds.
DRY_RUN = {"epochs": 1, "steps_per_epoch": 2, "max_clips": 8}


def resolve(cfg: RunConfig, spec: ModelSpec | None = None) -> RunConfig:
    """Fill registry defaults (frames, size), dry-run limits and the run id; check the model options.

    Raises:
        KeyError: unknown model, or an option the model does not declare.
        ValueError, TypeError: a bad option value, or ``stream`` for a model without a streaming variant.
    """
    spec = spec or get_model(cfg.model.name)
    if cfg.model.stream and not spec.streaming:
        raise ValueError(f"{spec.name} has no streaming variant; drop --stream")
    cfg = cfg.replace(
        model={
            "frames": cfg.model.frames or spec.frames,
            "size": cfg.model.size or spec.size,
            "options": spec.check_options(cfg.model.options),
        }
    )
    if cfg.dry_run:
        cfg = cfg.replace(
            train={"epochs": DRY_RUN["epochs"], "steps_per_epoch": DRY_RUN["steps_per_epoch"]},
            data={"max_clips": min(cfg.data.max_clips or DRY_RUN["max_clips"], DRY_RUN["max_clips"])},
        )
    if cfg.run_id is None:
        # The streaming MoViNet has other weights than the base one: its own run.
        name = cfg.model.name + ("_stream" if cfg.model.stream else "")
        run_id = make_run_id(name, cfg.data.root, cfg.train.seed)
        cfg = cfg.replace(run_id=run_id + ("-dryrun" if cfg.dry_run else ""))
    return cfg


def engine_of(spec: ModelSpec):
    """The framework's engine module (imported on demand)."""
    return importlib.import_module(ENGINES[spec.framework])


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


def run(cfg: RunConfig) -> RunRecord:
    """Train and evaluate one model; returns (and writes) its run record.

    Raises:
        StoreError: no clip store, or it stores fewer frames than the model takes.
        KeyError: unknown model name.
    """
    spec = get_model(cfg.model.name)
    cfg = resolve(cfg, spec)
    store = ClipStore(cfg.data.root)
    store.check_frames(cfg.model.frames)
    if not store.split("train"):
        raise StoreError(f"{store.root} holds no training clips; check prepare_report.json there")
    engine = engine_of(spec)
    # An engine may need to set the process up before the loaders touch its framework.
    prepare = getattr(engine, "prepare_process", None)
    if prepare:
        prepare(cfg)
    loaders = importlib.import_module(LOADERS[spec.framework]).make_loaders(store, cfg)
    model = build_model(cfg, store.num_classes, spec)
    return engine.fit(model, loaders, cfg, cfg.run_dir)
