"""Preprocess WLASL videos into a clip store.

Examples:
    # WLASL100 at 224² for I3D / S3D / X3D
    python main/preprocess.py --metadata raw/WLASL_v0.3.json --videos raw/videos \\
        --subset 100 --frames 20 --size 224 --out data/wlasl100_224
    # the same split from the official nslt file, at 172² for MoViNet
    python main/preprocess.py --metadata raw/WLASL_v0.3.json --nslt raw/nslt_100.json \\
        --videos raw/videos --frames 20 --size 172 --out data/wlasl100_172
    # the seed thesis's sampling: 20 frames, every 2nd frame, centred in the sign
    python main/preprocess.py ... --frames 20 --frame-step 2 --size 172 --out data/wlasl100_172_s2
    # shard 2 of 8 by hand (inside a SLURM job array it is automatic)
    python main/preprocess.py ... --shard 2/8

Exit status: 0 done (skips are listed in prepare_report.json); 1 --strict
and some instance was skipped; 2 bad arguments, metadata or --out; 3 a
worker process died (e.g. the OOM killer) and its instance is named: rerun
the same command to retry it, finished clips are kept.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from wlasl.prepare import prepare_config, prepare_parser, run_prepare, summary  # noqa: E402
from wlasl.stage import SCRIPT_ERRORS, check_videos, exit_status  # noqa: E402


def build_parser():
    return prepare_parser(epilog=__doc__.split("Examples:")[1])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = prepare_config(args)
        check_videos(cfg)
        report = run_prepare(cfg, progress=not args.no_progress)
    except SCRIPT_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(report))
    print(f"clip store: {cfg.out} (report: {cfg.out / 'prepare_report.json'})")
    return exit_status(report, strict=cfg.strict)


if __name__ == "__main__":
    sys.exit(main())
