"""The whole pipeline on a synthetic mini-WLASL, on CPU, in a few minutes.

    python main/demo.py [--root demo]     (what `make demo` runs)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.demo import run_demo  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="main/demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="demo", help="where the demo writes everything (default demo/)")
    args = p.parse_args(argv)
    run_demo(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
