"""The whole pipeline on a synthetic mini-WLASL, on CPU, in a few minutes (what `make demo` runs).

    python main/demo.py [--root demo]
is experiments/demo.yaml run here in order, i.e.
    python main/experiment.py run experiments/demo.yaml --local
with everything under --root (default demo/). It ends with the result table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without install

from utils.demo import run_demo  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="main/demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="demo", help="where the demo writes everything, relative to the repo root (default demo/)")
    p.add_argument("--workers", type=int, default=2, help="preprocessing processes (default 2)")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    os.chdir(ROOT)  # experiment paths are relative to the repo root
    return run_demo(root, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
