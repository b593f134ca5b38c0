"""A finished run's model, rebuilt from its run directory: what export, prediction and distillation start from.

The run directory says everything needed: ``config.json`` (the model and its
options), ``scores_test.npz`` / the store's labels (the classes) and
``checkpoints/state.json`` (which files hold the best-on-val weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from models.build import build_model, engine_of
from models.evaluation import read_scores
from models.lifecycle import STATE_FILE
from models.registry import ModelSpec, get_model
from utils.core.config import RunConfig
from utils.core.readers import DamagedFile, check_typed, read_json, read_text

__all__ = ["RestoredRun", "read_run_config", "restore_run"]


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


def read_run_config(run_dir: str | Path) -> RunConfig:
    """A run directory's ``config.json``, checked as a RunConfig (the file is named when it is damaged).

    Raises:
        FileNotFoundError: not a run directory.
        DamagedFile: not JSON, not a mapping, or not a configuration this suite reads.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json); pass results/runs/<run_id>")
    todo = "the run folder was edited or damaged: restore config.json from a backup, or train the run again"
    expected = "the run's resolved configuration (a JSON object with model, data and train)"
    return check_typed(path, RunConfig, read_json(path, expected=expected, todo=todo), expected=expected, todo=todo)


def restore_run(run_dir: str | Path, which: str = "best") -> RestoredRun:
    """Rebuild the model of ``run_dir`` and load its ``best`` (or ``last``) weights.

    Raises:
        FileNotFoundError: not a run directory, or it holds no checkpoint
            (names the file and what to do).
        ValueError: the configuration, the checkpoint state or the weights are damaged (names the file), or
            there are no such weights.
    """
    import models  # noqa: F401  (registers every family)

    run_dir = Path(run_dir)
    config_path, state_path = run_dir / "config.json", run_dir / "checkpoints" / STATE_FILE
    for path, what in ((config_path, "config.json"), (state_path, "checkpoints/state.json")):
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run directory (no {what}); train it first, e.g. main/train_<family>.py")
    cfg = read_run_config(run_dir)
    todo = f"restore the run folder from a backup, or train it again (delete {run_dir} first)"
    state = check_typed(state_path, _State, read_json(state_path, expected="the run's checkpoint list", todo=todo),
                        expected="the run's checkpoint list (schema, num_classes, checkpoints)", todo=todo)  # fmt: skip
    if not state["checkpoints"]:
        raise DamagedFile(state_path, "at least one checkpoint entry", "an empty list", todo)
    entry = state["checkpoints"][0]
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
    try:
        engine_of(spec).load_weights(model, run_dir / "checkpoints", files)
    except Exception as e:  # noqa: BLE001 - any damage (cut, empty, foreign file) is the same to the user: named
        names = ", ".join(str(run_dir / "checkpoints" / f) for f in files)
        raise DamagedFile(names, f"the run's {which} weights ({spec.framework} checkpoint)",
                          f"a file its engine cannot load ({type(e).__name__}: {' '.join(str(e).split())[:200]})", todo) from None
    return RestoredRun(model=model, cfg=cfg, spec=spec, glosses=glosses, run_dir=run_dir)


class _Entry(TypedDict, total=False):
    files: list[str]
    best: dict | None


class _State(TypedDict):
    num_classes: int
    checkpoints: list[_Entry]


def _glosses(run_dir: Path, cfg: RunConfig) -> list[str]:
    """The class names: from the run's own scores file, else the clip store's labels.txt."""
    if (run_dir / "scores_test.npz").is_file():
        return [str(g) for g in read_scores(run_dir, "test")["glosses"]]
    labels = Path(cfg.data.root) / "labels.txt"
    if labels.is_file():
        return read_text(labels, expected="one gloss per line", todo="make the run's store again with main/preprocess.py").splitlines()
    raise FileNotFoundError(f"{run_dir} has no scores_test.npz and its store {cfg.data.root} has no labels.txt")
