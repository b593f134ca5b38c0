"""Render the SLURM job files from cluster profiles.

Examples:
    # after editing a profile (slurm/cluster.toml, local.toml, local_multi.toml): writes slurm/, slurm/local/, slurm/local_multi/
    python main/make_slurm.py
    # CI / pre-commit: exit 1 if a committed job file differs from its profile
    python main/make_slurm.py --check
    # your own cluster, into its own folder (the jobs find the repo root from there)
    python main/make_slurm.py --profile slurm/mycluster.toml --out slurm/mycluster
    # every profile key, its default and the per-kind defaults
    python main/make_slurm.py --keys
    # then, from the repo root
    sbatch slurm/preprocess_172.slurm && sbatch slurm/movinet_a3.slurm --epochs 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without install

from utils.cluster.profile import load_profile, valid_keys  # noqa: E402
from utils.cluster.render import check_dir, render_all, write_dir  # noqa: E402
from utils.core.argv import script_parser  # noqa: E402

# The committed pairs: the generic cluster files, and the ones fitted to slurm/local_cluster.sh (its single
# node, and the two namespaced nodes of `start --nodes 2`).
COMMITTED = ((ROOT / "slurm" / "cluster.toml", ROOT / "slurm"), (ROOT / "slurm" / "local.toml", ROOT / "slurm" / "local"),
             (ROOT / "slurm" / "local_multi.toml", ROOT / "slurm" / "local_multi"))  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(
        "main/make_slurm.py",
        "Write slurm/*.slurm (one job per model, preprocessing arrays, tuning, report) from a cluster "
        "profile. Without --profile: slurm/cluster.toml -> slurm/, slurm/local.toml -> slurm/local/ and "
        "slurm/local_multi.toml -> slurm/local_multi/.",
        __doc__,
    )
    p.add_argument("--profile", type=Path, help="TOML cluster profile (default: both committed profiles)")
    p.add_argument("--out", type=Path, help="folder for the job files (default slurm/ for slurm/cluster.toml)")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files in --out differ from the profile"
    )
    p.add_argument("--keys", action="store_true", help="print every profile key with its defaults and exit")
    return p


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _one(profile: Path, out: Path, check: bool) -> int:
    try:
        files = render_all(load_profile(profile), source=_shown(profile), folder=_shown(out))
    except (FileNotFoundError, KeyError, TypeError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    if check:
        drift = check_dir(files, out)
        if drift:
            print(f"{len(drift)} job file(s) in {_shown(out)} do not match {_shown(profile)}:", file=sys.stderr)
            for line in drift:
                print(f"  {line}", file=sys.stderr)
            print(f"regenerate: python main/make_slurm.py --profile {_shown(profile)} --out {_shown(out)}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"{len(files)} job files in {_shown(out)} match {_shown(profile)}")
        return 0
    changed = write_dir(files, out)
    print(f"{len(files)} job files in {_shown(out)}; {len(changed)} changed" + (f": {', '.join(changed)}" if changed else ""))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.keys:
        print(f"Profile keys and defaults (top level, or per kind in [train], [preprocess], ...):\n{valid_keys()}")
        return 0
    if args.profile is None and args.out is None:
        pairs = COMMITTED
    elif args.profile is None:
        pairs = ((COMMITTED[0][0], args.out),)
    else:
        pairs = ((args.profile, args.out or args.profile.parent / args.profile.stem),)
        if args.out is None and args.profile.resolve() == COMMITTED[0][0]:
            pairs = (COMMITTED[0],)
    return max(_one(profile, out, args.check) for profile, out in pairs)


if __name__ == "__main__":
    sys.exit(main())
