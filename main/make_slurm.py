"""Render the SLURM job files in slurm/ from a cluster profile.

Examples:
    # after editing slurm/cluster.toml
    python main/make_slurm.py
    # CI / pre-commit: exit 1 if a committed job file differs from the profile
    python main/make_slurm.py --check
    # a second cluster, into its own folder
    python main/make_slurm.py --profile slurm/other.toml --out slurm/other
    # then, from the repo root
    sbatch slurm/preprocess_172.slurm && sbatch slurm/movinet_a3.slurm --epochs 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without install

from utils.cluster.jobs import check_dir, render_all, write_dir  # noqa: E402
from utils.cluster.sbatch import load_profile  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main/make_slurm.py",
        description="Write slurm/*.slurm (one job per model, preprocessing arrays, tuning, report) from a cluster profile.",
        epilog=__doc__.split("Examples:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=ROOT / "slurm" / "cluster.toml",
        help="TOML cluster profile (default slurm/cluster.toml)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "slurm", help="folder for the job files (default slurm/)")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files in --out differ from the profile"
    )
    return p


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        files = render_all(load_profile(args.profile), source=_shown(args.profile))
    except (FileNotFoundError, KeyError, TypeError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    if args.check:
        drift = check_dir(files, args.out)
        if drift:
            print(
                f"{len(drift)} job file(s) in {_shown(args.out)} do not match {_shown(args.profile)}:", file=sys.stderr
            )
            for line in drift:
                print(f"  {line}", file=sys.stderr)
            print(
                f"regenerate: python main/make_slurm.py --profile {_shown(args.profile)} --out {_shown(args.out)}",
                file=sys.stderr,
            )
            return 1
        print(f"{len(files)} job files in {_shown(args.out)} match {_shown(args.profile)}")
        return 0
    changed = write_dir(files, args.out)
    print(
        f"{len(files)} job files in {_shown(args.out)}; {len(changed)} changed"
        + (f": {', '.join(changed)}" if changed else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
