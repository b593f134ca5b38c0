"""A tuning study on disk: its stable name, its settings, its best trial.

Layout (``<results>/tuning/<study>/``)::

    study.json            the settings the study was started with
    oracle.json, trial_*/ keras-tuner's own state (so a rerun resumes)
    runs/<study>-trial<id>/  one normal run record per trial
    best.json, best.yaml  the best hyperparameters (best.yaml is a --config preset)

The name is derived from the model (or family), the tuner and the clip
store, never a timestamp, so a requeued job finds and resumes its study.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from utils.core.config import RunConfig
from utils.core.files import atomic_write_text
from utils.core.ids import slug
from utils.core.records import RecordError, RunRecord, best_trial, read_record, write_json
from utils.tuning.space import TARGETS, trial_config

__all__ = ["Study", "best_record", "check_settings", "final_config", "format_best", "save_best", "study_label", "study_name"]

# Settings that may change between reruns of one study (extending a search).
_MUTABLE_SETTINGS = ("max_trials",)


def study_name(base: RunConfig, tuner: str, *, family: str | None = None) -> str:
    """``<model|family>[_stream]-<tuner>-<store name>[-dryrun]``: stable across reruns and requeues.

    The one home of the rule: ``main/tune_<family>.py`` and the experiment runner both call it.

    Args:
        base: the study's base configuration (model, store, stream, dry run).
        tuner: ``hyperband`` or ``bayesian``.
        family: the family, when the variant is tuned too (``--tune-variant``).
    """
    return slug(f"{study_label(base, family)}-{tuner}-{Path(str(base.data.root)).name}" + ("-dryrun" if base.dry_run else ""))


def study_label(base: RunConfig, family: str | None = None) -> str:
    """What a study tunes: the model (or the family, when the variant is tuned too), ``_stream`` for the
    streaming MoViNet, which has other weights than the base one (as ``models.train.run_id``)."""
    return (family or base.model.name) + ("_stream" if base.model.stream else "")


@dataclass(frozen=True)
class Study:
    """Where a study lives and how its trials' runs are named."""

    name: str
    results: Path

    @property
    def root(self) -> Path:
        return Path(self.results) / "tuning" / self.name

    def run_id(self, trial_id: str) -> str:
        return f"{self.name}-trial{trial_id}"

    def run_dir(self, trial_id: str) -> Path:
        return self.root / "runs" / self.run_id(trial_id)


def check_settings(study: Study, settings: dict) -> None:
    """Record the settings on first use; on a rerun they must match.

    Raises:
        ValueError: the study exists with other settings (names the first one).
    """
    path = study.root / "study.json"
    if path.is_file():
        old = json.loads(path.read_text())
        for key in sorted(set(old) | set(settings)):
            if key in _MUTABLE_SETTINGS or old.get(key) == settings.get(key):
                continue
            raise ValueError(
                f"study '{study.name}' at {study.root} was started with {key}={old.get(key)!r}, this command has "
                f"{key}={settings.get(key)!r}; rerun with the original options to resume it, or pass --study NEW_NAME"
            )
    write_json(path, settings)


def best_record(study: Study, objective: str) -> tuple[str, RunRecord] | None:
    """The best completed trial of the study by its run record (not by the oracle's copy):
    :func:`utils.core.records.best_trial`, the report's rule too. Returns ``(trial_id, record)`` or None."""
    records = []
    for path in sorted((study.root / "runs").glob("*/metrics.json")):
        try:
            records.append(read_record(path))
        except RecordError:
            continue
    best = best_trial(records, objective)
    return None if best is None else (str(best.tags.get("trial")), best)


def format_best(study: Study, trial_id: str, objective: str, value: float, values: dict, run_dir: Path) -> str:
    """The best hyperparameters as a plain-text table."""
    rows = [(k, _fmt(v)) for k, v in values.items() if not k.startswith("tuner/")]
    epochs = values.get("tuner/epochs")
    if epochs is not None:
        rows.append(("epochs", str(epochs)))
    width = max([len("hyperparameter")] + [len(k) for k, _ in rows])
    lines = [
        f"Best trial {trial_id} of study {study.name}: {objective} = {value:.4f}",
        f"  run record: {run_dir}",
        f"  {'hyperparameter':<{width}}  value",
        f"  {'-' * width}  -----",
    ]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def save_best(study: Study, trial_id: str, objective: str, value: float, values: dict, family: str, epochs: int) -> Path:
    """Write ``best.json`` and ``best.yaml`` (a ``--config`` training preset).

    Returns:
        The path of ``best.yaml``.
    """
    import yaml

    # Stepped floats come back as 0.30000000000000004: 8 significant digits.
    hps = {k: float(f"{v:.8g}") if isinstance(v, float) else v for k, v in values.items() if not k.startswith("tuner/")}
    write_json(
        study.root / "best.json",
        {"study": study.name, "trial": trial_id, "objective": {"name": objective, "value": value}, "hyperparameters": hps,
         "epochs": epochs, "run_dir": str(study.run_dir(trial_id))},
    )
    preset: dict = {}
    for name, v in hps.items():
        if name == "variant":
            continue  # the model name comes from the script's --variant
        section, key = TARGETS[name]
        preset.setdefault(section, {})[key] = v
    preset.setdefault("train", {})["epochs"] = int(epochs)
    variant = f" --variant {hps['variant']}" if "variant" in hps else ""
    header = (
        f"# Best hyperparameters of tuning study {study.name} (trial {trial_id}): {objective} = {value:.4f}.\n"
        f"# Train with them: python main/train_{family}.py{variant} --data <store> --config {study.root / 'best.yaml'}\n"
    )
    path = study.root / "best.yaml"
    atomic_write_text(path, header + yaml.safe_dump(preset, sort_keys=True))
    return path


def final_config(base: RunConfig, study: Study, trial_id: str, values: dict, family: str, epochs: int) -> RunConfig:
    """The full training run with the best values: a normal run under ``results/runs``."""
    cfg = trial_config(base, values, family)
    return cfg.replace(
        train={"epochs": int(epochs), "resume": True},
        run_id=f"{study.name}-final",
        tags={**base.tags, "study": study.name, "role": "final", "from_trial": trial_id},
    )
