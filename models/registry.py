"""One flat registry: model name -> ModelSpec, the single home of what the suite knows about a model.

Family modules register their variants with :func:`register_model`. They
import TensorFlow / PyTorch inside their builders, so importing ``models``
(and listing models) stays cheap and framework-free. Every consumer (entry
scripts, tuning, SLURM job lists, sweeps, experiments, the report's names
and row order) reads the registry when it runs, never a copy made at import.

Builder contract (keyword-only)::

    builder(*, num_classes, frames, size, mean, std, dropout, freeze, unfreeze_last,
            pretrained, pretrained_partial, **spec.kwargs, **declared options) -> model

The model takes uint8 clips ``(batch, frames, size, size, 3)`` RGB and does
its own float conversion and normalisation, ``(x / 255 - spec.mean) / spec.std``
(the builder receives the spec's statistics), so loaders ship uint8 and
engines never normalise. A keypoint model (``input="keypoints"``,
:mod:`models.pose`) takes float32 keypoints ``(batch, frames, K, 4)`` and
normalises them itself (relative to the shoulders); it has no pixel size
(``size`` None) and ignores ``mean``/``std``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "ModelSpec",
    "Option",
    "families",
    "family_models",
    "get_model",
    "list_models",
    "register_model",
    "unregister_model",
]

# torchvision's Kinetics-400 statistics (its video models' transforms, S3D's weights).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

Framework = Literal["keras", "torch"]
Input = Literal["clip", "keypoints"]


@dataclass(frozen=True)
class Option:
    """A builder option a config may set (``model.options`` in a preset, a flag of the training script).

    Attributes:
        name: the builder's keyword (``stochastic_depth``).
        type: ``int``, ``float``, ``str`` or ``bool``.
        default: the builder's default (paper value), shown in ``--help``.
        help: one line for ``--help``.
        choices: allowed values, when the option is a choice.
    """

    name: str
    type: type
    default: object
    help: str
    choices: tuple | None = None

    def check(self, value, model: str):
        """``value`` cast to the option's type, or ValueError/TypeError naming model, option and expectation."""
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise TypeError(f"{model} option {self.name} expected {self.type.__name__}, received {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{model} option {self.name} expected one of {list(self.choices)}, received {value!r}")
        return value


@dataclass(frozen=True)
class ModelSpec:
    """Everything the suite knows about one registered model.

    Attributes:
        name: registry name (``movinet_a3``).
        family: family (``movinet``); also the entry scripts' name
            (``main/train_<family>.py``).
        framework: ``keras`` or ``torch``: which engine trains it.
        builder: keyword-only function returning the model.
        display: name in tables and plots (``MoViNet-A3``).
        order: row order in tables (smaller first).
        frames: default clip length.
        size: default input side in pixels, also the store it trains on
            (``data/wlasl<N>_<size>``); None for keypoint models (see
            :meth:`store_name`).
        mean: per-channel mean on [0, 1] RGB that the builder normalises with.
        std: per-channel std on [0, 1] RGB.
        input: ``clip`` (RGB clip store) or ``keypoints`` (keypoint store).
        space: tuning search-space entries that replace the shared ones
            (see ``utils/tuning/space.py``).
        tune_default: the family's default variant for tuning jobs.
        streaming: has a causal (streaming) variant, ``--stream``.
        options: builder options a config may set.
        kwargs: fixed extra builder arguments of this variant.
        description: one line for ``--help`` and listings.
        warmup_epochs: the learning-rate warm-up a run gets unless it sets
            its own (``TrainConfig.warmup_epochs``).
        channels_last_cpu: PyTorch models that train measurably faster on a
            CPU in ``channels_last_3d`` (``benchmarks/channels_last.py``); the
            engine uses that layout there unless a run sets
            ``TrainConfig.channels_last``.
    """

    name: str
    family: str
    framework: Framework
    builder: Callable
    display: str = ""
    order: int = 1000
    frames: int = 20
    size: int | None = 224
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input: Input = "clip"
    space: dict = field(default_factory=dict)
    tune_default: bool = False
    streaming: bool = False
    options: tuple[Option, ...] = ()
    kwargs: dict = field(default_factory=dict)
    description: str = ""
    warmup_epochs: int = 0
    channels_last_cpu: bool = False

    @property
    def variant(self) -> str | None:
        """``a3`` for ``movinet_a3``; None for single-variant families."""
        prefix = f"{self.family}_"
        return self.name[len(prefix) :] if self.name.startswith(prefix) else None

    def store_name(self, subset: int | str) -> str:
        """The store this model trains on for a WLASL subset, e.g. ``wlasl100_224`` or ``wlasl100_pose``.

        Clip models name the store by its side (``wlasl<subset>_<size>``, made by
        ``main/preprocess.py``); keypoint models share one keypoint store per
        subset (``wlasl<subset>_pose``, made by ``main/extract_keypoints.py``).
        ``subset`` may be a shell word such as ``${subset}`` (the job files).
        """
        return f"wlasl{subset}_pose" if self.input == "keypoints" else f"wlasl{subset}_{self.size}"

    def train_words(self) -> list[str]:
        """``python main/train_<family>.py [--variant v]``: the start of this model's training command."""
        return ["python", f"main/train_{self.family}.py"] + (["--variant", self.variant] if self.variant else [])

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        valid = ", ".join(o.name for o in self.options) or "none"
        raise KeyError(f"{self.name} has no builder option {name!r}; its options: {valid}")

    def check_options(self, options: dict) -> dict:
        """The config's ``model.options`` checked against the declared ones (typed copies)."""
        return {k: self.option(k).check(v, self.name) for k, v in options.items()}

    def build(self, **kwargs):
        """Call the builder with this variant's fixed arguments and its normalisation."""
        return self.builder(**{**self.kwargs, "mean": self.mean, "std": self.std, **kwargs})


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, family: str, framework: Framework, **fields):
    """Decorator: register ``builder`` under ``name``; ``fields`` are ModelSpec fields.

    Raises:
        ValueError: the name is taken, the framework is unknown, or a field is not a ModelSpec field.
    """
    if framework not in ("keras", "torch"):
        raise ValueError(f"framework expected 'keras' or 'torch', received {framework!r}")
    known = set(ModelSpec.__dataclass_fields__) - {"name", "family", "framework", "builder"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"register_model({name!r}): unknown field(s) {unknown}; ModelSpec fields: {sorted(known)}")

    def decorator(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice (by {_REGISTRY[name].builder.__module__} and {builder.__module__})")
        spec = dict(fields)
        spec.setdefault("display", name)
        for key in ("mean", "std", "options"):
            if key in spec:
                spec[key] = tuple(spec[key])
        _REGISTRY[name] = ModelSpec(name=name, family=family, framework=framework, builder=builder, **spec)
        return builder

    return decorator


def unregister_model(name: str) -> None:
    """Remove a registration (tests that register a throwaway family clean up with it)."""
    _REGISTRY.pop(name, None)


def list_models(pattern: str = "*", framework: str | None = None) -> list[str]:
    """Registered names matching the fnmatch ``pattern``, in table order."""
    specs = [s for n, s in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (framework is None or s.framework == framework)]
    return [s.name for s in sorted(specs, key=lambda s: (s.order, s.name))]


def families() -> list[str]:
    """Family names, in table order of their first model."""
    out: list[str] = []
    for name in list_models():
        family = _REGISTRY[name].family
        if family not in out:
            out.append(family)
    return out


def family_models(family: str) -> list[ModelSpec]:
    """The specs of one family, in table order.

    Raises:
        KeyError: no model of that family is registered (lists the families).
    """
    specs = [_REGISTRY[n] for n in list_models() if _REGISTRY[n].family == family]
    if not specs:
        raise KeyError(f"unknown model family '{family}'; registered families: {', '.join(families())}")
    return specs


def get_model(name: str) -> ModelSpec:
    """The spec of ``name``.

    Raises:
        KeyError: unknown name; the message lists close matches and every name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model '{name}'.{hint} Registered: {', '.join(list_models())}") from None
