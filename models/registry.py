"""One flat registry: model name -> ModelSpec (builder, framework, defaults).

Family modules register their variants with :func:`register_model`. They
import TensorFlow / PyTorch inside their builders, so importing ``models``
(and listing models) stays cheap and framework-free.

Builder contract (keyword-only)::

    builder(*, num_classes, frames, size, dropout, freeze, pretrained, **spec.kwargs) -> model

The model takes uint8 clips ``(batch, frames, size, size, 3)`` RGB and does
its own float conversion and normalisation (``spec.mean``/``spec.std`` on
[0, 1] pixels), so loaders ship uint8 and engines never normalise.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ModelSpec", "get_model", "list_models", "register_model", "KINETICS_MEAN", "KINETICS_STD"]

# Kinetics-400 statistics used by torchvision / pytorchvideo video models.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

Framework = Literal["keras", "torch"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: registry name (``movinet_a3``).
        family: module family (``movinet``), also the entry script's name.
        framework: ``keras`` or ``torch``: which engine trains it.
        builder: keyword-only function returning the model.
        frames: default clip length.
        size: default input side in pixels.
        mean: per-channel mean on [0, 1] RGB (normalisation inside the model).
        std: per-channel std on [0, 1] RGB.
        kwargs: fixed extra builder arguments of this variant.
        description: one line for ``--help`` and listings.
    """

    name: str
    family: str
    framework: Framework
    builder: Callable
    frames: int = 20
    size: int = 224
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    kwargs: dict = field(default_factory=dict)
    description: str = ""

    @property
    def variant(self) -> str | None:
        """``a3`` for ``movinet_a3``; None for single-variant families."""
        prefix = f"{self.family}_"
        return self.name[len(prefix):] if self.name.startswith(prefix) else None

    def build(self, **kwargs):
        """Call the builder with this variant's fixed arguments."""
        return self.builder(**{**self.kwargs, **kwargs})


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    family: str,
    framework: Framework,
    frames: int = 20,
    size: int = 224,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    description: str = "",
    **kwargs,
):
    """Decorator: register ``builder`` under ``name`` (with fixed ``kwargs``).

    Raises:
        ValueError: the name is taken, or the framework is unknown.
    """
    if framework not in ("keras", "torch"):
        raise ValueError(f"framework expected 'keras' or 'torch', received {framework!r}")

    def decorator(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice (by {_REGISTRY[name].builder.__module__} and {builder.__module__})")
        _REGISTRY[name] = ModelSpec(
            name=name,
            family=family,
            framework=framework,
            builder=builder,
            frames=frames,
            size=size,
            mean=tuple(mean),
            std=tuple(std),
            kwargs=dict(kwargs),
            description=description,
        )
        return builder

    return decorator


def list_models(pattern: str = "*", framework: str | None = None) -> list[str]:
    """Registered names matching the fnmatch ``pattern``, sorted."""
    return sorted(
        n for n, s in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (framework is None or s.framework == framework)
    )


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
