"""Export a finished run to TFLite, SavedModel or ONNX (float32 or int8) and check it through its own runtime.

Examples:
    # Keras runs (I3D, MoViNet): TFLite float32, then full-integer int8 calibrated on 64 train clips
    python main/export.py results/runs/movinet_a0_stream-wlasl100_172-s0 --format tflite
    python main/export.py results/runs/movinet_a0_stream-wlasl100_172-s0 --format tflite --int8 --calibration 64
    python main/export.py results/runs/i3d-wlasl100_224-s0 --format savedmodel
    # PyTorch runs (S3D, X3D): ONNX with a dynamic batch axis, and its static int8 quantisation
    python main/export.py results/runs/x3d_s-wlasl100_224-s0 --format onnx --int8 --name onnx_int8_c64

Writes RUN_DIR/exports/<name>/ (default name <format>_<float32|int8>): the model file
(model.tflite, saved_model/, model.onnx; a stream MoViNet run also gets stream.tflite),
contract.json (input shape, dtype, pixel range, classes in order, preprocessing geometry)
and metrics.json (test top-1/top-2 through the exported file beside the run's, largest
logit difference, file size, median CPU latency per clip). docs/export.md explains them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.core.argv import script_parser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(
        "main/export.py",
        "Export a run's best model (tflite/savedmodel for Keras runs, onnx for PyTorch runs), "
        "optionally int8, and evaluate the exported file on the store's test split through its own runtime.",
        __doc__,
    )
    p.add_argument("run_dir", type=Path, help="a finished run directory (results/runs/<run_id>)")
    p.add_argument("--format", required=True, choices=("tflite", "onnx", "savedmodel"), help="export format")
    p.add_argument("--int8", action="store_true", help="full-integer post-training quantisation (tflite, onnx)")
    p.add_argument("--calibration", type=int, default=32, help="train clips that calibrate --int8 (default 32)")
    p.add_argument("--name", help="export folder under RUN_DIR/exports (default <format>_<float32|int8>)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the runtimes while measuring latency (default 1)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from models.export import ExportError, export_run

    try:
        out = export_run(args.run_dir, args.format, int8=args.int8, calibration=args.calibration, name=args.name,
                         threads=args.threads, log=lambda line: print(line, file=sys.stderr))  # fmt: skip
    except (ExportError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    m = json.loads((out / "metrics.json").read_text())
    run = m["run"].get("top1")
    print(f"{out}: {m['format']} {m['precision']}, {m['size_bytes'] / 1e6:.2f} MB, {m['latency_ms']:.1f} ms/clip "
          f"(original {m['original_latency_ms']:.1f}); test top-1 {m['exported']['top1']:.3f} exported vs "
          f"{m['original']['top1']:.3f} original{f' ({run:.3f} in the run record)' if run is not None else ''}; "
          f"max |logit diff| {m['max_abs_logit_diff']:.2e}")  # fmt: skip
    if "stream" in m:
        s = m["stream"]
        print(f"  stream.tflite: {s['size_bytes'] / 1e6:.2f} MB, {s['latency_ms_per_frame']:.1f} ms/frame; "
              f"last-frame logits vs clip model: max diff {s['max_abs_logit_diff_vs_clip_model']:.2e}, "
              f"agreement {s['agreement_with_clip_model']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
