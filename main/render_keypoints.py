"""Draw a keypoint store as skeleton videos on black: a clip store any RGB family trains on.

The seed project's other ViViT input. Body (white), left hand (red), right
hand (blue) and the face subset (yellow) are drawn with OpenCV on black,
framed on the signer, ``--frames`` frames sampled uniformly per clip
(wlasl/render_skeleton.py documents the colours and the framing). Finished
clips are kept: rerunning the command resumes.

Examples:
    # WLASL100 keypoints (main/extract_keypoints.py) -> 20 frames at 224², the RGB families' default store shape
    python main/render_keypoints.py --keypoints data/wlasl100_pose --out data/wlasl100_skeleton_224
    # then train any RGB model on it
    python main/train_vivit.py --data data/wlasl100_skeleton_224 --epochs 30
    python main/train_x3d.py --variant s --data data/wlasl100_skeleton_224 --epochs 30
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from wlasl.clip_store import StoreError  # noqa: E402
from wlasl.render_skeleton import RenderConfig, run_render  # noqa: E402
from wlasl.stage import exit_status, parse_shard, summary  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main/render_keypoints.py",
        description=__doc__.split("Examples:")[0],
        epilog="Examples:" + __doc__.split("Examples:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--keypoints", required=True, type=Path, help="keypoint store (main/extract_keypoints.py --out)")
    p.add_argument("--out", required=True, type=Path, help="clip store directory to write")
    p.add_argument("--frames", type=int, default=20, help="frames per clip, sampled uniformly (default 20)")
    p.add_argument("--size", type=int, default=224, help="side of the square clips in pixels (default 224)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--shard", help="i/n: every n-th clip from i; default from the SLURM job array, else 0/1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = RenderConfig(keypoints=args.keypoints, out=args.out, frames=args.frames, size=args.size,
                           workers=args.workers, shard=parse_shard(args.shard))  # fmt: skip
        report = run_render(cfg, progress=not args.no_progress)
    except (StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(report, unit="skeleton clips"))
    print(f"clip store: {cfg.out}")
    return exit_status(report, strict=False)


if __name__ == "__main__":
    sys.exit(main())
