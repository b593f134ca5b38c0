"""Recognise the sign in a raw video with a trained run (or one of its exports).

Examples:
    # the run's own model; the whole frame, the whole video
    python main/predict.py raw/videos/69241.mp4 --run results/runs/i3d-wlasl100_224-s0
    # an export, the signer's box and a frame range (1-based, as in WLASL's metadata), JSON out
    python main/predict.py clip.mp4 --run results/runs/x3d_s-wlasl100_224-s0 --export onnx_int8 \\
        --bbox 385,37,885,720 --start 10 --end 70 --top 3 --json
    # a stream MoViNet run: the running prediction after every frame
    python main/predict.py clip.mp4 --run results/runs/movinet_a0_stream-wlasl100_172-s0 --export tflite_float32 --stream

The video is cut exactly as preprocessing cut the run's clip store (wlasl.prepare.make_clip:
decode, square crop around the bbox with the store's margin, uniform sampling, resize),
then centre-windowed as evaluation does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install


def build_parser():
    from models.export.predict import predict_parser

    return predict_parser(epilog=__doc__.split("Examples:")[1])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from models.export import ExportError, predict_video
    from models.export.predict import parse_bbox

    try:
        pred = predict_video(args.video, args.run, export=args.export, bbox=parse_bbox(args.bbox), start=args.start,
                             end=args.end, top=args.top, stream=args.stream)  # fmt: skip
    except (ExportError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(pred.to_json()))
        return 0
    for step in pred.stream:
        print(f"frame {step['frame']:>3}: {step['gloss']} ({step['prob']:.3f})")
    print(f"{pred.video} [{pred.source}; frames {pred.frame_range[0]}..{pred.frame_range[1]}, crop {list(pred.crop)}"
          f"{'; ' + '+'.join(pred.notes) if pred.notes else ''}]")  # fmt: skip
    for rank, entry in enumerate(pred.top, 1):
        print(f"{rank:>2}. {entry['gloss']:<24} {entry['prob']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
