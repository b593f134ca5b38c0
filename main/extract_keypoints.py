"""Extract MediaPipe Holistic keypoints from WLASL videos into a keypoint store.

Examples:
    # WLASL100 (the official split), every frame of each sign up to 200
    python main/extract_keypoints.py --metadata raw/WLASL_v0.3.json --nslt raw/nslt_100.json \\
        --videos raw/videos --out data/wlasl100_pose --workers 4
    # shard 2 of 8 by hand (inside a SLURM job array it is automatic)
    python main/extract_keypoints.py ... --shard 2/8

Environment: MediaPipe 0.10.21 (whose wheel ships the Holistic models, so
nothing downloads at run time) needs numpy<2 and protobuf<5, which the main
environment's TensorFlow cannot share. The extraction therefore runs in its
own virtualenv, .venv-pose (make pose-setup; SLR_POSE_VENV=DIR points
elsewhere): started with any other interpreter, this script re-runs itself
there. The two environments meet only through the keypoint store's files.

Exit status: 0 done (skips are listed in keypoints_report.json); 1 --strict
and some instance was skipped; 2 bad arguments, metadata, --out, or no pose
environment; 3 a worker process died (e.g. the OOM killer) and its instance
is named: rerun the same command to retry it, finished clips are kept.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere without install

from wlasl.keypoints import keypoint_config, keypoint_parser, run_keypoints  # noqa: E402
from wlasl.stage import SCRIPT_ERRORS, check_videos, exit_status, summary  # noqa: E402

# Set on the re-run, so a pose environment without MediaPipe fails instead of looping.
_REEXEC = "SLR_POSE_REEXEC"


def pose_venv() -> Path:
    """The pose environment: $SLR_POSE_VENV, else .venv-pose in the repository."""
    return Path(os.environ.get("SLR_POSE_VENV") or REPO / ".venv-pose")


def _has_mediapipe() -> bool:
    # find_spec does not import it: MediaPipe takes a second to load.
    if importlib.util.find_spec("mediapipe") is None:
        return False
    import numpy

    return int(numpy.__version__.split(".")[0]) < 2


def build_parser():
    return keypoint_parser(epilog=__doc__.split("Examples:")[1])


def _reexec_in_pose_env(argv: list[str]) -> int:
    """Replace this process with the same command under the pose environment's Python."""
    venv = pose_venv()
    python = venv / "bin" / "python"
    if os.environ.get(_REEXEC) or not python.is_file():
        where = f"{python} has no MediaPipe" if python.is_file() else f"{python} does not exist"
        print(
            f"error: keypoint extraction runs in its own environment ({where}): MediaPipe 0.10.21 needs "
            f"numpy<2 and protobuf<5, which the main environment's TensorFlow cannot share. Create it with: "
            f"make pose-setup (or: python3 -m venv {venv} && {venv}/bin/pip install -r {REPO / 'requirements-pose.txt'}); "
            "SLR_POSE_VENV=DIR uses one elsewhere",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ, **{_REEXEC: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *argv], env)
    return 0  # not reached


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # --help and usage errors need no pose environment
    try:
        cfg = keypoint_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not _has_mediapipe():
        return _reexec_in_pose_env(argv)
    try:
        check_videos(cfg)
        report = run_keypoints(cfg, progress=not args.no_progress)
    except SCRIPT_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(report, unit="keypoint clips"))
    print(
        f"  frames: {report['frames_total']} extracted, {report['frames_no_person']} with no person, "
        f"{report['frames_no_hands']} with no hand (listed per clip in the report)"
    )
    print(f"keypoint store: {cfg.out} (report: {cfg.out / 'keypoints_report.json'})")
    return exit_status(report, strict=cfg.strict)


if __name__ == "__main__":
    sys.exit(main())
