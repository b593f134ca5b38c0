"""Frozen run configuration: ModelConfig, DataConfig, TrainConfig -> RunConfig.

Overrides come in three layers: these code defaults, then an optional YAML
preset (``--config preset.yaml``), then command-line options. Unknown keys
and wrong types are errors that list what is valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "config_from_dict",
    "load_preset",
]

Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["none", "cosine", "plateau"]


def _check_choice(obj, name: str) -> None:
    hint = typing.get_type_hints(type(obj))[name]
    choices = typing.get_args(hint)
    value = getattr(obj, name)
    if value not in choices:
        raise ValueError(f"{type(obj).__name__}.{name} expected one of {list(choices)}, received {value!r}")


def _check_range(obj, name: str, lo=None, hi=None) -> None:
    value = getattr(obj, name)
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{type(obj).__name__}.{name} expected {span}, received {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Which network, and how it is built.

    Attributes:
        name: registry name (``movinet_a3``, ``i3d``, ``s3d``, ``x3d_s``, ...).
        frames: clip length fed to the model; None = the registry default (20).
        size: input side in pixels; None = the registry default (172 / 224).
        dropout: dropout before the classifier.
        freeze: freeze the first K blocks of the backbone (0 = train all).
        pretrained: local checkpoint for the backbone; the head stays fresh.
        stream: MoViNet only: the causal (streaming) variant.
    """

    name: str
    frames: int | None = None
    size: int | None = None
    dropout: float = 0.5
    freeze: int = 0
    pretrained: str | None = None
    stream: bool = False

    def __post_init__(self):
        _check_range(self, "frames", 1)
        _check_range(self, "size", 8)
        _check_range(self, "dropout", 0.0, 0.99)
        _check_range(self, "freeze", 0)


@dataclass(frozen=True)
class DataConfig:
    """The clip store and how clips are fed.

    Attributes:
        root: clip store directory (from ``main/preprocess.py``).
        batch_size: clips per step (per GPU for data parallel runs).
        workers: loader processes (PyTorch) / parallel calls (tf.data).
        flip: random horizontal flip at train time. Off by default:
            handedness carries meaning in ASL.
        crop_scale: random resized crop keeps this share of the area (min, max).
        max_clips: use at most this many clips per split (dry runs).
    """

    root: str
    batch_size: int = 8
    workers: int = 2
    flip: bool = False
    crop_scale: tuple[float, float] = (0.7, 1.0)
    max_clips: int | None = None

    def __post_init__(self):
        _check_range(self, "batch_size", 1)
        _check_range(self, "workers", 0)
        _check_range(self, "max_clips", 1)
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"DataConfig.crop_scale expected 0 < min <= max <= 1, received {self.crop_scale}")


@dataclass(frozen=True)
class TrainConfig:
    """How the optimisation runs.

    Attributes:
        epochs: passes over the training split.
        lr: peak learning rate.
        optimizer: adam, adamw or sgd (momentum 0.9).
        weight_decay: L2 / decoupled decay, by optimizer.
        schedule: none, cosine (to 0 over ``epochs``) or plateau (halve on a
            val-accuracy plateau of 3 epochs).
        early_stop: stop after this many epochs without val improvement (0 = off).
        mixed_precision: fp16/bf16 compute on GPU.
        seed: seeds data order, augmentation and initialisation.
        steps_per_epoch: cap on train steps per epoch (None = the whole split).
        resume: continue from the run directory's checkpoint if there is one.
        compile: PyTorch only: torch.compile the model.
        channels_last: PyTorch only: channels_last_3d memory format.
    """

    epochs: int = 30
    lr: float = 1e-3
    optimizer: Optimizer = "adam"
    weight_decay: float = 0.0
    schedule: Schedule = "cosine"
    early_stop: int = 0
    mixed_precision: bool = False
    seed: int = 0
    steps_per_epoch: int | None = None
    resume: bool = True
    compile: bool = False
    channels_last: bool = False

    def __post_init__(self):
        _check_range(self, "epochs", 1)
        _check_range(self, "lr", 0.0)
        _check_range(self, "weight_decay", 0.0)
        _check_range(self, "early_stop", 0)
        _check_range(self, "steps_per_epoch", 1)
        _check_choice(self, "optimizer")
        _check_choice(self, "schedule")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; saved as ``config.json`` in its record.

    Attributes:
        model: the network.
        data: the clip store and loader.
        train: the optimisation.
        run_id: run directory name under ``results/runs/``; None = derived
            from model, store and seed (stable across requeues).
        results: results root.
        dry_run: a few clips, two steps, one epoch.
        tags: labels copied into the run record (tuning study and trial).
    """

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    run_id: str | None = None
    results: str = "results"
    dry_run: bool = False
    tags: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **sections) -> RunConfig:
        """A copy with sections or section fields replaced: ``replace(train={"lr": 0.1})``."""
        updates = {}
        for key, value in sections.items():
            current = getattr(self, key)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                value = dataclasses.replace(current, **value)
            updates[key] = value
        return dataclasses.replace(self, **updates)

    @property
    def run_dir(self) -> Path:
        if self.run_id is None:
            raise ValueError("run_id is not resolved yet; call models.train.resolve(cfg) first")
        return Path(self.results) / "runs" / self.run_id


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _coerce(cls, key: str, value, where: str):
    hints = typing.get_type_hints(cls)
    if key not in hints:
        valid = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING)
        raise KeyError(f"{where}: unknown key '{key}'. Valid keys with defaults: {valid}")
    hint = hints[key]
    # Unwrap Optional/Union only: tuple[float, float] must stay a tuple.
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = [t for t in typing.get_args(hint) if t is not type(None)] if is_union else [hint]
    target = base[0]
    if value is None or typing.get_origin(target) is Literal:
        return value
    if target is tuple or typing.get_origin(target) is tuple:
        return tuple(value)
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(target, type) and not isinstance(value, target):
        raise TypeError(f"{where}: '{key}' expected {target.__name__}, received {type(value).__name__} {value!r}")
    return value


def config_from_dict(data: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig from nested dicts (``{"model": {...}, "train": {...}}``)."""
    top = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(data) - top
    if unknown:
        raise KeyError(f"{where}: unknown section(s) {sorted(unknown)}; valid: {sorted(top)}")
    kwargs = {}
    for key, value in data.items():
        if key in _SECTIONS:
            cls = _SECTIONS[key]
            kwargs[key] = cls(**{k: _coerce(cls, k, v, f"{where}.{key}") for k, v in value.items()})
        else:
            kwargs[key] = value
    return RunConfig(**kwargs)


def load_preset(path: str | Path) -> dict:
    """A YAML preset as nested dicts (validated when merged into a RunConfig)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preset not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections (model, data, train), received {type(data).__name__}")
    return data
