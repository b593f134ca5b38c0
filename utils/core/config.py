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
    "MAX_FRAMES",
    "MAX_SEED",
    "MAX_SIZE",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "YamlSyntaxError",
    "check_range",
    "config_from_dict",
    "load_preset",
    "load_yaml",
    "read_mapping",
]

# Bounds of the sizes a clip is made of, for every stage (preprocessing, training, prediction): a
# value past them is a typo or an attack, and would exhaust memory (a clip is frames x size² x 3
# bytes: 512 x 1024² x 3 = 1.5 GiB) or fail deep inside a library instead of naming the option.
MAX_FRAMES = 512
MAX_SIZE = 1024
# numpy's and torch's seeds are 32-bit.
MAX_SEED = 2**32 - 1

Optimizer = Literal["adam", "adamw", "sgd", "rmsprop"]
Schedule = Literal["none", "cosine", "plateau"]


def _check_choice(obj, name: str) -> None:
    hint = typing.get_type_hints(type(obj))[name]
    choices = typing.get_args(hint)
    value = getattr(obj, name)
    if value not in choices:
        raise ValueError(f"{type(obj).__name__}.{name} expected one of {list(choices)}, received {value!r}")


def check_range(obj, name: str, lo=None, hi=None) -> None:
    """The one range rule of the suite's frozen configs: ``obj.name`` unset (None) or within ``[lo, hi]``."""
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
        check_range(self, "frames", 1, MAX_FRAMES)
        check_range(self, "size", 8, MAX_SIZE)
        check_range(self, "dropout", 0.0, 0.99)
        check_range(self, "freeze", 0)
        check_range(self, "unfreeze_last", 1)
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
        check_range(self, "batch_size", 1)
        check_range(self, "workers", 0)
        check_range(self, "max_clips", 1)
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
        warmup_epochs: the first epochs' learning rate rises linearly to the
            schedule's (epoch e of W runs at (e + 1) / (W + 1) of it); 0 = none;
            None = the model's own (``ModelSpec.warmup_epochs``, filled in by
            ``models.train.resolve``).
        early_stop: stop after this many epochs without val improvement (0 = off).
        mixed_precision: fp16/bf16 compute on GPU.
        seed: seeds data order, augmentation and initialisation.
        steps_per_epoch: cap on train steps per epoch (None = the whole split).
        resume: continue from the run directory's checkpoint if there is one.
        compile: PyTorch only: torch.compile the model.
        channels_last: PyTorch only: channels_last_3d memory format; None =
            the model's choice on a CPU (``ModelSpec.channels_last_cpu``: on
            for X3D, whose training step it halves there, and S3D), off
            elsewhere.
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
    warmup_epochs: int | None = None
    early_stop: int = 0
    mixed_precision: bool = False
    seed: int = 0
    steps_per_epoch: int | None = None
    resume: bool = True
    compile: bool = False
    channels_last: bool | None = None
    teachers: tuple[str, ...] = ()
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0

    def __post_init__(self):
        check_range(self, "epochs", 1)
        check_range(self, "lr", 0.0)
        check_range(self, "momentum", 0.0, 0.999)
        check_range(self, "weight_decay", 0.0)
        if self.clipnorm is not None and not self.clipnorm > 0:
            raise ValueError(f"TrainConfig.clipnorm expected > 0 (or unset), received {self.clipnorm!r}")
        check_range(self, "warmup_epochs", 0)
        check_range(self, "early_stop", 0)
        check_range(self, "seed", 0, MAX_SEED)
        check_range(self, "steps_per_epoch", 1)
        _check_choice(self, "optimizer")
        _check_choice(self, "schedule")
        check_range(self, "kd_alpha", 0.0, 1.0)
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


def _type_name(t) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is tuple and args and args[-1] is Ellipsis:
        return f"a list of {_type_name(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    if origin is list:
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is dict or t is dict or typing.is_typeddict(t) or dataclasses.is_dataclass(t):
        return "a mapping"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(t, getattr(t, "__name__", str(t)))


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


def _shown(path: tuple) -> str:
    """``('runs', 0, 'models')`` -> ``runs[0]['models']``; one key alone is quoted: ``'epochs'``."""
    if not path:
        return "the value"
    if len(path) == 1:
        return f"'{path[0]}'"
    return str(path[0]) + "".join(f"[{p!r}]" for p in path[1:])


def _mapping(cls, value: dict, where: str, path: tuple, kw: dict) -> dict:
    """The typed fields of a dataclass or TypedDict, each coerced; unknown keys refused or (``keep_unknown``) kept."""
    hints = typing.get_type_hints(cls)
    unknown = [k for k in value if k not in hints]
    at = f"{where}: {_shown(path)[1:-1] if len(path) == 1 else _shown(path)}" if path else where
    if unknown and not kw["keep_unknown"]:
        valid = ", ".join(f"{f.name}={_field_default(f)!r}" for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) \
            else ", ".join(hints)  # fmt: skip
        raise KeyError(f"{at}: unknown key(s) {sorted(map(str, unknown))}. Valid keys with defaults: {valid}")
    if dataclasses.is_dataclass(cls):
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in value and f.init
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # fmt: skip
        if missing:
            raise KeyError(f"{at}: missing {', '.join(map(repr, missing))} ({cls.__name__} needs it)")
    # Unknown keys (kept only when asked, e.g. a record from a newer version) stay in a TypedDict;
    # a dataclass cannot hold them.
    out = {} if dataclasses.is_dataclass(cls) else {k: v for k, v in value.items() if k not in hints}
    for key, item in value.items():
        if key in hints:
            out[key] = coerce(hints[key], item, where, path=(*path, key), **kw)
    return out


def coerce(hint, value, where: str, *, path: tuple = (), allow_nan: bool = False, keep_unknown: bool = False):
    """``value`` as the type hint ``hint`` demands: the one validation of configs, run records, experiment
    files, search spaces and cluster profiles, all read from their dataclass (or TypedDict) type hints.

    Understands bool, int, float, str, ``Literal``, ``X | None`` and other unions (first match wins),
    ``tuple[X, ...]``, ``tuple[A, B]``, ``list[X]``, ``dict`` / ``dict[K, V]``, TypedDicts (a mapping whose
    keys are typed; other keys kept) and dataclasses (a mapping of their fields, built: their own checks
    run; unknown keys refused listing the valid ones, unless ``keep_unknown``).

    Args:
        hint: the type.
        value: as read from YAML, JSON or TOML.
        where: names the file (or option source) in messages.
        path: where the value sits in it, e.g. ``("runs", 0, "models")`` (shown as ``runs[0]['models']``).
        allow_nan: NaN and infinities are numbers (run records), not errors (configs).
        keep_unknown: ignore unknown keys instead of refusing them (records from newer versions).

    Raises:
        TypeError: a value of another type, naming where it is, what was expected and what was received.
        KeyError: an unknown or a missing key of a dataclass.
        ValueError: what a dataclass's own checks refuse (ranges, choices).
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    kw = {"allow_nan": allow_nan, "keep_unknown": keep_unknown}
    if hint is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return coerce(option, value, where, path=path, **kw)
            except TypeError:
                if len(options) == 1:
                    raise
    elif dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, dict):
            return hint(**_mapping(hint, value, where, path, kw))
    elif typing.is_typeddict(hint):
        if isinstance(value, dict):
            return _mapping(hint, value, where, path, {**kw, "keep_unknown": True})
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            if not args:
                return value
            return {coerce(args[0], k, where, path=path, **kw): coerce(args[1], v, where, path=(*path, k), **kw)
                    for k, v in value.items()}  # fmt: skip
    elif origin in (list, tuple) and (origin is list or args[-1] is Ellipsis):
        if isinstance(value, (list, tuple)):
            items = [coerce(args[0], v, where, path=(*path, i), **kw) for i, v in enumerate(value)] if args else list(value)
            return tuple(items) if origin is tuple else items
    elif origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(coerce(a, v, where, path=(*path, i), **kw) for i, (a, v) in enumerate(zip(args, value)))
    elif origin is Literal:
        if isinstance(value, str | int) and not isinstance(value, bool) and value in args:
            return value
    elif hint is bool:  # bool is an int subclass: `epochs: true` must not become 1 epoch
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (allow_nan or math.isfinite(value)):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise TypeError(f"{where}: {_shown(path)} expected {_type_name(hint)}, received {type(value).__name__} {value!r:.80}")


def config_from_dict(data: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig from nested dicts (``{"model": {...}, "train": {...}}``).

    Raises:
        KeyError: an unknown section or key (lists the valid ones), or a missing section.
        TypeError: a value of the wrong type (``train: 5``, ``crop_scale: 0.5``, ``epochs: true``).
        ValueError: a value out of range or an unsafe run id.
    """
    return coerce(RunConfig, data, where)


class YamlSyntaxError(ValueError):
    """Text that is not YAML (a ``--set`` value falls back to plain text on this one only)."""


# A YAML file may use anchors and aliases (``<<: *defaults``), but every alias is a copy of its node
# when the data is used: nested aliases ("a billion laughs") expand to billions of values from a few
# lines. The expanded size is counted on the node graph, which shares the aliased nodes, before
# anything is built.
MAX_YAML_NODES = 100_000


def _expanded(node, memo: dict, where: str) -> int:
    """How many values ``node`` holds once every alias in it is a copy (capped just past the limit)."""
    if id(node) in memo:
        if memo[id(node)] is None:
            raise ValueError(f"{where}: an alias (*name) inside the node it names: a value that holds itself")
        return memo[id(node)]
    memo[id(node)] = None  # in progress
    children = node.value if isinstance(node.value, list) else []
    flat = [x for c in children for x in (c if isinstance(c, tuple) else (c,))]
    memo[id(node)] = min(1 + sum(_expanded(c, memo, where) for c in flat), MAX_YAML_NODES + 1)
    return memo[id(node)]


def load_yaml(text: str, where: str):
    """YAML text as Python data (safe types only), refusing an alias bomb before it is expanded.

    Raises:
        ValueError: not YAML, or more than :data:`MAX_YAML_NODES` values once its aliases are expanded.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        def get_single_node(self):
            node = super().get_single_node()
            if node is not None and _expanded(node, {}, where) > MAX_YAML_NODES:
                raise ValueError(f"{where}: more than {MAX_YAML_NODES:,} values once its aliases (*name) are expanded; "
                                 "an experiment file is a few dozen: write the values out, or use fewer nested aliases")  # fmt: skip
            return node

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise YamlSyntaxError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise ValueError(f"{where}: values nested too deeply to be an experiment, preset or search space") from None


def read_mapping(path: str | Path, what: str, expected: str) -> dict:
    """A YAML file holding a mapping (presets, experiment files, search spaces); an empty file is ``{}``.

    Raises:
        FileNotFoundError: no such file (``what`` names it: ``preset not found: x.yaml``).
        ValueError: not UTF-8 YAML (an alias bomb too), or not a mapping (``expected`` says of what).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: expected a {what} (UTF-8 YAML text), received bytes that are not UTF-8 text "
                         f"(at byte {e.start}); is it the right file?") from None  # fmt: skip
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {expected}, received {type(data).__name__}")
    return data


def load_preset(path: str | Path) -> dict:
    """A YAML preset as nested dicts (validated when merged into a RunConfig)."""
    return read_mapping(path, "preset", "sections (model, data, train)")
