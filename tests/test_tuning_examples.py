"""The examples of every ``main/tune_<family>.py --help`` are made from the registry, and each one parses."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import models  # noqa: F401  (registers every family)
from models.registry import families, family_models
from utils.core.argv import parse_strictly
from utils.train_cli import train_parser
from utils.tuning.cli import tune_examples, tune_parser

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[list[str]]:
    """The example command lines, continuations joined, from ``python`` on (a VAR=value prefix dropped)."""
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines()]
    words = [shlex.split(ln.rstrip("&")) for ln in lines if "python main/" in ln and not ln.startswith("#")]
    return [cmd[cmd.index("python") :] for cmd in words]


@pytest.mark.parametrize("family", sorted(families()))
def test_every_tuning_example_parses_with_its_scripts_parser(family):
    commands = _commands(tune_examples(family))
    tunes = [c for c in commands if c[1] == f"main/tune_{family}.py"]
    trains = [c for c in commands if c[1] == f"main/train_{family}.py"]
    assert len(tunes) >= 6 and len(trains) == 1 and len(tunes) + len(trains) == len(commands), commands
    for cmd in tunes:
        parse_strictly(tune_parser(family), cmd[2:])
    parse_strictly(train_parser(family), trains[0][2:])
    stores = {f"data/{s.store_name(100)}" for s in family_models(family)}
    assert all(c[c.index("--data") + 1] in stores for c in commands), "an example names another family's store"


def test_the_space_in_the_examples_is_the_familys():
    """A family whose space differs says so in its own --help (MoViNet's learning rate, ViViT's optimizers)."""
    movinet, vivit = tune_examples("movinet"), tune_examples("vivit")
    assert "lr 0.0003..0.03" in movinet and "optimizer adam/sgd," in vivit and "rmsprop" not in vivit
    assert "--tune-variant" in movinet and "--tune-variant" not in vivit  # ViViT has one model


def test_a_tune_script_shows_them():
    r = subprocess.run([sys.executable, "main/tune_x3d.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0 and "python main/tune_x3d.py --tuner bayesian --variant s --data data/wlasl100_224" in r.stdout
