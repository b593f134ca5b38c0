"""A finished run's model, rebuilt from its run directory: what export, prediction and distillation start from.

The run directory says everything needed: ``config.json`` (the model and its
options), ``scores_test.npz`` / the store's labels (the classes) and
``checkpoints/state.json`` (which files hold the best-on-val weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.build import build_model, engine_of
from models.lifecycle import STATE_FILE
from models.registry import ModelSpec, get_model
from utils.core.config import RunConfig, config_from_dict

__all__ = ["RestoredRun", "restore_run"]


@dataclass
class RestoredRun:
    """A run's model with its best weights, and what it was trained on.

    Attributes:
        model: the framework model (uint8 clips in, logits out).
        cfg: the run's resolved configuration (``config.json``).
        spec: the model's registry entry.
        glosses: class names, index = label.
        run_dir: where it came from.
    """

    model: object
    cfg: RunConfig
    spec: ModelSpec
    glosses: list[str]
    run_dir: Path


def restore_run(run_dir: str | Path, which: str = "best") -> RestoredRun:
    """Rebuild the model of ``run_dir`` and load its ``best`` (or ``last``) weights.

    Raises:
        FileNotFoundError: not a run directory, or it holds no checkpoint
            (names the file and what to do).
        ValueError: the checkpoint state is damaged or has no such weights.
    """
    import models  # noqa: F401  (registers every family)

    run_dir = Path(run_dir)
    config_path, state_path = run_dir / "config.json", run_dir / "checkpoints" / STATE_FILE
    for path, what in ((config_path, "config.json"), (state_path, "checkpoints/state.json")):
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run directory (no {what}); train it first, e.g. main/train_<family>.py")
    try:
        cfg = config_from_dict(json.loads(config_path.read_text()), where=str(config_path))
        state = json.loads(state_path.read_text())
        entry = state["checkpoints"][0]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{run_dir}: unreadable run files ({type(e).__name__}: {e})") from None
    files = (entry.get("best") or {}).get("files") if which == "best" else entry.get("files")
    if not files:
        raise ValueError(f"{state_path} names no {which} weights (the run never finished an epoch); train it further")
    spec = get_model(cfg.model.name)
    glosses = _glosses(run_dir, cfg)
    if len(glosses) != state["num_classes"]:
        raise ValueError(f"{run_dir}: {len(glosses)} class names but the checkpoint has {state['num_classes']} classes")
    # The weights are about to be replaced: never load the --pretrained file again (it may be elsewhere now).
    cfg_build = cfg.replace(model={"pretrained": None})
    model = build_model(cfg_build, len(glosses), spec)
    engine_of(spec).load_weights(model, run_dir / "checkpoints", files)
    return RestoredRun(model=model, cfg=cfg, spec=spec, glosses=glosses, run_dir=run_dir)


def _glosses(run_dir: Path, cfg: RunConfig) -> list[str]:
    """The class names: from the run's own scores file, else the clip store's labels.txt."""
    import numpy as np

    scores = run_dir / "scores_test.npz"
    if scores.is_file():
        with np.load(scores, allow_pickle=False) as z:
            return [str(g) for g in z["glosses"]]
    labels = Path(cfg.data.root) / "labels.txt"
    if labels.is_file():
        return labels.read_text(encoding="utf-8").splitlines()
    raise FileNotFoundError(f"{run_dir} has no scores_test.npz and its store {cfg.data.root} has no labels.txt")
