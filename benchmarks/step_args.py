"""The command line of the benchmarks that time one training step per registry model.

``channels_last.py`` and ``tf_onednn.py`` each compare two settings of the
same step on random clips; they share the shape, model list and output
options, so a new option or default lands in both.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def step_parser(doc: str, models: tuple[str, ...], *, steps: int, steps_help: str) -> argparse.ArgumentParser:
    """``--models --frames --size --batch --steps --out``; ``doc``'s first line is the description."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(models), help=f"registry names, comma-separated ({','.join(models)})")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    return p
