"""Frozen run configuration: ModelConfig, DataConfig, TrainConfig -> RunConfig.

Overrides come in three layers: these code defaults, then an optional YAML
preset (``--config preset.yaml``), then command-line options. Unknown keys
and wrong types are errors that list what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from utils.core.ids import check_id

__all__ = [
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "config_from_dict",
    "load_preset",
]

Optimizer = Literal["adam", "adamw", "sgd", "rmsprop"]
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
        unfreeze_last: train only the last K parameterised layers, freeze
            the rest (the seed thesis unfroze the last 45 of MoViNet-a4);
            None = train all (after ``freeze``).
        pretrained: local checkpoint for the backbone; the head stays fresh.
        pretrained_partial: accept a checkpoint that leaves backbone layers
            unloaded (recorded in the run record); off = such a file is refused.
        stream: MoViNet only: the causal (streaming) variant.
        options: builder options the model's registry entry declares
            (``ModelSpec.options``, e.g. MoViNet ``stochastic_depth``); checked
            against the spec when the run starts.
    """

    name: str
    frames: int | None = None
    size: int | None = None
    dropout: float = 0.5
    freeze: int = 0
    unfreeze_last: int | None = None
    pretrained: str | None = None
    pretrained_partial: bool = False
    stream: bool = False
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_range(self, "frames", 1)
        _check_range(self, "size", 8)
        _check_range(self, "dropout", 0.0, 0.99)
        _check_range(self, "freeze", 0)
        _check_range(self, "unfreeze_last", 1)
        for key, value in self.options.items():
            if not isinstance(key, str) or isinstance(value, (dict, list, tuple)):
                raise TypeError(f"ModelConfig.options expected name: scalar pairs, received {key!r}: {value!r}")


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
        optimizer: adam, adamw, sgd or rmsprop; their constants and the
            exact update rules are in ``models/policy.py`` (one rule for both
            engines). ``adamw`` is ``adam``: the suite's weight decay is
            always decoupled.
        momentum: momentum of sgd and rmsprop.
        weight_decay: decoupled weight decay (w -= lr * wd * w) on kernels
            only (tensors of >= 2 dims), for every optimizer.
        clipnorm: clip each gradient tensor's L2 norm to this (Keras'
            ``clipnorm``); None = no clipping.
        schedule: none, cosine (to 0 over ``epochs``) or plateau (halve after
            3 epochs without a new best on val).
        early_stop: stop after this many epochs without val improvement (0 = off).
        mixed_precision: fp16/bf16 compute on GPU.
        seed: seeds data order, augmentation and initialisation.
        steps_per_epoch: cap on train steps per epoch (None = the whole split).
        resume: continue from the run directory's checkpoint if there is one.
        compile: PyTorch only: torch.compile the model.
        channels_last: PyTorch only: channels_last_3d memory format.
        teachers: knowledge distillation: finished run directories whose
            train-split scores (``scores_train.npz``) are the soft targets
            (``models/distill.py``); empty = plain training on the labels.
        kd_alpha: weight A of the label loss in
            ``A * CE(labels) + (1 - A) * T^2 * KL(teacher_T || student_T)``;
            0 = soft targets only, 1 = labels only.
        kd_temperature: softmax temperature T of teacher and student (> 0).
    """

    epochs: int = 30
    lr: float = 1e-3
    optimizer: Optimizer = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    clipnorm: float | None = None
    schedule: Schedule = "cosine"
    early_stop: int = 0
    mixed_precision: bool = False
    seed: int = 0
    steps_per_epoch: int | None = None
    resume: bool = True
    compile: bool = False
    channels_last: bool = False
    teachers: tuple[str, ...] = ()
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0

    def __post_init__(self):
        _check_range(self, "epochs", 1)
        _check_range(self, "lr", 0.0)
        _check_range(self, "momentum", 0.0, 0.999)
        _check_range(self, "weight_decay", 0.0)
        if self.clipnorm is not None and not self.clipnorm > 0:
            raise ValueError(f"TrainConfig.clipnorm expected > 0 (or unset), received {self.clipnorm!r}")
        _check_range(self, "early_stop", 0)
        _check_range(self, "steps_per_epoch", 1)
        _check_choice(self, "optimizer")
        _check_choice(self, "schedule")
        _check_range(self, "kd_alpha", 0.0, 1.0)
        if not self.kd_temperature > 0:
            raise ValueError(f"TrainConfig.kd_temperature expected > 0, received {self.kd_temperature!r}")
        teachers = self.teachers
        if isinstance(teachers, str) or not all(isinstance(t, str) and t.strip() for t in teachers):
            raise TypeError(f"TrainConfig.teachers expected a list of run directories, received {teachers!r}")
        if len(set(teachers)) != len(teachers):
            raise ValueError(f"TrainConfig.teachers names a run twice: {list(teachers)}; list each teacher once")
        object.__setattr__(self, "teachers", tuple(teachers))  # a list from YAML/JSON: frozen and hashable


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
        tensorboard: write TensorBoard event files under ``<run_dir>/tb/``;
            None = yes, except for a dry run (see :attr:`writes_tensorboard`).
            Never part of what a run computes: switching it leaves the
            result and the resume rules alone.
    """

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    run_id: str | None = None
    results: str = "results"
    dry_run: bool = False
    tags: dict = field(default_factory=dict)
    tensorboard: bool | None = None

    def __post_init__(self):
        if self.run_id is not None:
            check_id(self.run_id, "run_id")
        if not isinstance(self.tags, dict) or not all(isinstance(k, str) for k in self.tags):
            raise TypeError(f"RunConfig.tags expected a mapping of names to values, received {self.tags!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def writes_tensorboard(self) -> bool:
        """Whether the run writes TensorBoard event files: as ``tensorboard`` says, else all but dry runs."""
        return self.tensorboard if self.tensorboard is not None else not self.dry_run

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


def _type_name(t) -> str:
    if typing.get_origin(t) is tuple and typing.get_args(t)[-1] is Ellipsis:
        return f"a list of {_type_name(typing.get_args(t)[0])}"
    if typing.get_origin(t) is tuple:
        return f"a list of {len(typing.get_args(t))} numbers"
    if typing.get_origin(t) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(t)))
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text", dict: "a mapping"}.get(
        t, getattr(t, "__name__", str(t))
    )


def _coerce_value(hint, value, where: str, key: str):
    """``value`` as ``hint`` demands, or TypeError naming the key, what was expected and what was received."""
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [t for t in typing.get_args(hint) if t is not type(None)] if is_union else [hint]
    if value is None and (not is_union or len(args) < len(typing.get_args(hint))):
        return None
    target = args[0]
    ok, out = True, value
    # bool is an int subclass: `epochs: true` must not become 1 epoch.
    if target is bool:
        ok = isinstance(value, bool)
    elif target is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif target is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        out = float(value) if ok else value
    elif target is str or typing.get_origin(target) is Literal:
        ok = isinstance(value, str)
    elif typing.get_origin(target) is tuple and typing.get_args(target)[-1] is Ellipsis:
        # A list of any length (``teachers``): every item of the one item type.
        item = typing.get_args(target)[0]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)
        out = tuple(value) if ok else value
    elif typing.get_origin(target) is tuple:
        n = len(typing.get_args(target))
        ok = isinstance(value, (list, tuple)) and len(value) == n
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        out = tuple(float(v) for v in value) if ok else value
    elif target is dict:
        ok = isinstance(value, dict)
    if not ok:
        raise TypeError(f"{where}: '{key}' expected {_type_name(target)}, received {type(value).__name__} {value!r}")
    return out


def _coerce(cls, key: str, value, where: str):
    hints = typing.get_type_hints(cls)
    if key not in hints:
        valid = ", ".join(f"{f.name}={_default(f)!r}" for f in dataclasses.fields(cls))
        raise KeyError(f"{where}: unknown key '{key}'. Valid keys with defaults: {valid}")
    return _coerce_value(hints[key], value, where, key)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


def config_from_dict(data: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig from nested dicts (``{"model": {...}, "train": {...}}``).

    Raises:
        KeyError: an unknown section or key (lists the valid ones).
        TypeError: a value of the wrong type (``train: 5``, ``crop_scale: 0.5``, ``epochs: true``).
        ValueError: a value out of range or an unsafe run id.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping of sections (model, data, train), received {type(data).__name__}")
    top = {f.name: f for f in dataclasses.fields(RunConfig)}
    unknown = set(data) - set(top)
    if unknown:
        raise KeyError(f"{where}: unknown section(s) {sorted(unknown)}; valid: {sorted(top)}")
    hints = typing.get_type_hints(RunConfig)
    kwargs = {}
    for key, value in data.items():
        if key in _SECTIONS:
            cls = _SECTIONS[key]
            if not isinstance(value, dict):
                raise TypeError(
                    f"{where}: section '{key}' expected a mapping of {cls.__name__} keys, received "
                    f"{type(value).__name__} {value!r}"
                )
            kwargs[key] = cls(**{k: _coerce(cls, k, v, f"{where}.{key}") for k, v in value.items()})
        else:
            kwargs[key] = _coerce_value(hints[key], value, where, key)
    missing = [k for k in ("model", "data") if k not in kwargs]
    if missing:
        raise KeyError(f"{where}: missing section(s) {missing}")
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
