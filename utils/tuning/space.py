"""Search spaces: the one place that says what is tuned per family, and how.

A space is a dict ``{hp_name: spec}`` where a spec is one of::

    {"kind": "float", "min": 1e-4, "max": 1e-2, "sampling": "log", "step": None}
    {"kind": "int",   "min": 0, "max": 3, "step": 1, "sampling": "linear"}
    {"kind": "choice", "values": ["adam", "sgd"]}
    {"kind": "fixed", "value": 0.5}

``space.yaml`` (``--space``) replaces single entries of the family space::

    lr: {min: 1.0e-4, max: 3.0e-3, sampling: log}   # a range
    optimizer: [adam, sgd]                          # a list is a choice
    dropout: 0.3                                    # a scalar fixes it
    batch_size: {values: [4, 8]}

Hyperparameter names map onto RunConfig fields (:data:`TARGETS`); anything
else is an error naming it. This module is framework-free (no keras_tuner).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.registry import ModelSpec, family_models
from utils.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig, coerce, read_mapping

__all__ = ["COMMON_SPACE", "HP_TYPES", "tuned_model", "TARGETS", "SpaceError", "family_space", "load_space_file", "trial_config"]


class SpaceError(ValueError):
    """A search space (or space file) that cannot be used; names the entry."""


# What each tunable hyperparameter sets in the RunConfig: (section, field).
TARGETS = {
    "lr": ("train", "lr"),
    "optimizer": ("train", "optimizer"),
    "weight_decay": ("train", "weight_decay"),
    "schedule": ("train", "schedule"),
    "dropout": ("model", "dropout"),
    "freeze": ("model", "freeze"),
    "batch_size": ("data", "batch_size"),
    "variant": ("model", "name"),  # the value is the variant suffix: movinet_<a2>
}
HP_TYPES = {
    "lr": float,
    "optimizer": str,
    "weight_decay": float,
    "schedule": str,
    "dropout": float,
    "freeze": int,
    "batch_size": int,
    "variant": str,
}

# Shared defaults; each family's registry entry (ModelSpec.space) replaces
# entries of it. Weight decay is a choice, not a log range, so that 0 (no
# decay) stays a candidate; dropout steps by 0.1 so Hyperband's random
# brackets do not waste trials on near-identical values. adamw is left out:
# with the suite's decoupled weight decay it is adam (models/policy.py).
COMMON_SPACE = {
    "lr": {"kind": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
    "optimizer": {"kind": "choice", "values": ["adam", "sgd", "rmsprop"]},
    "weight_decay": {"kind": "choice", "values": [0.0, 1e-5, 1e-4, 1e-3]},
    "dropout": {"kind": "float", "min": 0.0, "max": 0.6, "step": 0.1},
    "freeze": {"kind": "int", "min": 0, "max": 3},
    "batch_size": {"kind": "choice", "values": [4, 8, 16]},
}


def tuned_model(family: str) -> ModelSpec:
    """The model a tuning job tunes unless told otherwise (``ModelSpec.tune_default``, else the family's first);
    its ``variant`` is None for one-model families."""
    specs = family_models(family)
    return next((s for s in specs if s.tune_default), specs[0])


def family_space(family: str, *, variants: list[str] | None = None, overrides: dict | None = None) -> dict:
    """The search space for ``family``, normalised and checked.

    Args:
        family: a registered family; its registry entry's ``space`` replaces
            entries of :data:`COMMON_SPACE`.
        variants: tune the variant over these suffixes (``["a0", "a1"]``);
            None keeps the variant fixed (``--variant``).
        overrides: entries that replace the family's (from a space file).

    Raises:
        SpaceError: an unknown hyperparameter or a malformed entry.
    """
    specs = family_models(family)
    family_entries = next((s for s in specs if s.tune_default), specs[0]).space
    space = copy.deepcopy({**COMMON_SPACE, **family_entries})
    if variants:
        space["variant"] = {"kind": "choice", "values": list(variants)}
    for name, raw in (overrides or {}).items():
        if name == "variant" and not variants:
            raise SpaceError("space entry 'variant': the variant is fixed by --variant; add --tune-variant to tune it")
        space[name] = _parse_entry(name, raw)
    for name, spec in space.items():
        space[name] = _check_entry(name, spec, variants)
    return space


def load_space_file(path: str | Path) -> dict:
    """Read a ``space.yaml`` into raw entries (checked by :func:`family_space`).

    Raises:
        FileNotFoundError: no such file.
        SpaceError: not YAML, not a mapping, or an unknown hyperparameter.
    """
    try:
        data = read_mapping(path, "space file", "hyperparameter: range/list/value")
    except ValueError as e:
        raise SpaceError(str(e)) from None
    for name in data:
        if name not in TARGETS:
            raise SpaceError(f"{path}: unknown hyperparameter '{name}'; tunable: {', '.join(TARGETS)}")
    return data


@dataclass(frozen=True)
class Range:
    """A range entry ``{min, max[, step, sampling]}``, read by the one coercion (its keys and types checked)."""

    min: float
    max: float
    step: float | None = None
    sampling: Literal["linear", "log", "reverse_log"] = "linear"

    def __post_init__(self):
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        if self.sampling != "linear" and self.min <= 0:
            raise ValueError(f"{self.sampling} sampling needs min > 0, received {self.min}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step expected a number > 0, received {self.step!r}")


def _parse_entry(name: str, raw) -> dict:
    """One space-file entry (scalar, list or mapping) -> a spec dict."""
    if name not in TARGETS:
        raise SpaceError(f"unknown hyperparameter '{name}'; tunable: {', '.join(TARGETS)}")
    if isinstance(raw, list):
        return {"kind": "choice", "values": raw}
    if isinstance(raw, dict) and set(raw) in ({"values"}, {"value"}):
        return {"kind": "choice", "values": raw["values"]} if "values" in raw else {"kind": "fixed", "value": raw["value"]}
    if isinstance(raw, dict):
        return {"kind": "int" if HP_TYPES[name] is int else "float", **raw}
    if raw is None:
        raise SpaceError(f"space entry '{name}': empty; give a range, a list or a value")
    return {"kind": "fixed", "value": raw}


def _check_entry(name: str, spec: dict, variants: list[str] | None) -> dict:
    """Types, bounds and choices of one spec, from the types (the hyperparameter's, :class:`Range`); returns it
    normalised."""
    want, where = HP_TYPES[name], f"space entry '{name}'"
    try:
        if spec["kind"] == "choice":
            values = coerce(list[want], spec["values"], where, path=("values",))
            if not values or len(set(values)) != len(values):
                raise ValueError(f"a choice needs a non-empty list without repeated values, received {values}")
            out, checks = {"kind": "choice", "values": values}, values
        elif spec["kind"] == "fixed":
            out = {"kind": "fixed", "value": coerce(want, spec["value"], where, path=("value",))}
            checks = [out["value"]]
        else:
            if want is str:
                raise ValueError("takes a list of choices or one value, not a range")
            r = coerce(Range, {k: v for k, v in spec.items() if k != "kind"}, where)
            if want is int and not all(float(v).is_integer() for v in (r.min, r.max, r.step or 1)):
                raise ValueError(f"expected whole numbers, received {r}")
            cast = int if want is int else float
            out = {"kind": spec["kind"], "min": cast(r.min), "max": cast(r.max), "sampling": r.sampling,
                   "step": None if r.step is None else cast(r.step)}  # fmt: skip
            checks = [out["min"], out["max"]]
    except (TypeError, KeyError, ValueError) as e:
        text = e.args[0] if isinstance(e, KeyError) else str(e)
        raise SpaceError(text if text.startswith(where) else f"{where}: {text}") from None
    for value in checks:
        _check_value(name, value, variants)
    return out


def _check_value(name: str, value, variants: list[str] | None) -> None:
    """A candidate value must make a valid RunConfig (ranges, choices)."""
    if name == "variant":
        if variants and value not in variants:
            raise SpaceError(f"space entry 'variant': expected one of {variants}, received {value!r}")
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise SpaceError(f"space entry '{name}': expected a finite number, received {value!r}")
    section, key = TARGETS[name]
    # The config dataclasses own the valid ranges and choices; probe them.
    try:
        if section == "train":
            TrainConfig(**{key: value})
        elif section == "model":
            ModelConfig(name="probe", **{key: value})
        else:
            DataConfig(root="probe", **{key: value})
    except (ValueError, TypeError) as e:
        raise SpaceError(f"space entry '{name}': value {value!r} is not usable: {e}") from None


def trial_config(base: RunConfig, values: dict, family: str) -> RunConfig:
    """``base`` with a trial's hyperparameter values applied.

    Keys starting with ``tuner/`` (Hyperband's bookkeeping) are skipped; any
    other key must be in :data:`TARGETS`.

    Raises:
        SpaceError: an unknown hyperparameter name.
    """
    sections: dict[str, dict] = {}
    for name, value in values.items():
        if name.startswith("tuner/"):
            continue
        if name not in TARGETS:
            raise SpaceError(f"unknown hyperparameter '{name}'; tunable: {', '.join(TARGETS)}")
        section, key = TARGETS[name]
        if name == "variant":
            value = f"{family}_{value}"
        sections.setdefault(section, {})[key] = HP_TYPES[name](value) if name != "variant" else value
    return base.replace(**sections)
