"""``export_run``: one run directory -> ``RUN_DIR/exports/<name>/`` (model file, contract.json, metrics.json).

The export is written into a temporary sibling directory and renamed into
place only once its evaluation has passed through the exported file, so a
failed or killed export leaves nothing under ``exports/<name>``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from models.export.contract import (
    CONTRACT_FILE,
    FORMATS,
    METRICS_FILE,
    ExportError,
    build_contract,
    store_clips,
    write_json,
)

__all__ = ["check_request", "default_name", "export_run"]


def default_name(fmt: str, int8: bool) -> str:
    return f"{fmt}_{'int8' if int8 else 'float32'}"


def check_request(run_dir: Path, fmt: str, int8: bool) -> None:
    """Refuse a format the run's framework lacks before anything is built (reads config.json only).

    Raises:
        ExportError: unknown format, a format of the other framework, or int8 where it does not apply.
        FileNotFoundError: not a run directory.
    """
    import models  # noqa: F401  (registers every family)
    from models.registry import get_model

    every = sorted({f for fs in FORMATS.values() for f in fs})
    if fmt not in every:
        raise ExportError(f"--format expected one of {every}, received {fmt!r}")
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json); pass results/runs/<run_id>")
    spec = get_model(json.loads(config.read_text())["model"]["name"])
    allowed = FORMATS[spec.framework]
    if fmt not in allowed:
        lacking = "TensorFlow/Keras" if spec.framework == "keras" else "PyTorch"
        raise ExportError(
            f"{run_dir}: {spec.name} is a {lacking} model and --format {fmt} is not available for it "
            f"(no {fmt} exporter for {lacking} here); what works instead: --format {' or --format '.join(allowed)}"
        )
    if int8 and fmt == "savedmodel":
        raise ExportError("--int8 applies to --format tflite (Keras runs) and --format onnx (PyTorch runs), not savedmodel; "
                          "what works instead: --format tflite --int8")  # fmt: skip


def export_run(run_dir, fmt: str, *, int8: bool = False, calibration: int = 32, name: str | None = None,
               threads: int = 1, log=print) -> Path:  # fmt: skip
    """Export a finished run and evaluate the export through its own runtime.

    Args:
        run_dir: ``results/runs/<run_id>``.
        fmt: ``tflite`` / ``savedmodel`` (Keras runs) or ``onnx`` (PyTorch runs).
        int8: full-integer post-training quantisation (tflite, onnx).
        calibration: train clips of the run's store that calibrate int8.
        name: export folder name (default ``<fmt>_<float32|int8>``); an existing one is replaced.
        threads: CPU threads of the exported file's runtime while measuring.
        log: where progress lines go.

    Returns:
        The export directory.

    Raises:
        ExportError: the format or an op is not supported (names it and what works instead).
        FileNotFoundError: not a finished run.
    """
    from models.export.evaluate import compare_runners, compare_stream, run_figures
    from models.export.runtime import FrameworkRunner, StreamRunner, open_export
    from models.restore import restore_run

    run_dir = Path(run_dir)
    check_request(run_dir, fmt, int8)
    if calibration < 1:
        raise ExportError(f"--calibration expected >= 1 train clips, received {calibration}")
    name = name or default_name(fmt, int8)
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"--name expected a plain folder name, received {name!r}")
    restored = restore_run(run_dir)
    cfg = restored.cfg
    frames, size = cfg.model.frames, cfg.model.size
    _, labels, clips = store_clips(cfg.data.root, "test", frames=frames, size=size)
    calib = store_clips(cfg.data.root, "train", frames=frames, size=size, limit=calibration)[2] if int8 else None
    final = run_dir / "exports" / name
    tmp = run_dir / "exports" / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        what = f"{cfg.run_id} ({restored.spec.name})"
        log(f"exporting {what} to {fmt}{' int8' if int8 else ''} ...")
        files, stream_entry, graph = _write_model(restored, fmt, tmp, calib, what, log)
        precision = "int8" if int8 else "float32"
        contract = build_contract(restored, fmt=fmt, precision=precision, files=files,
                                  batch="dynamic" if fmt == "onnx" else "fixed",
                                  runtime={"tflite": "ai-edge-litert Interpreter", "onnx": "onnxruntime",
                                           "savedmodel": "TensorFlow"}[fmt], stream=stream_entry)  # fmt: skip
        write_json(tmp / CONTRACT_FILE, contract)
        log(f"evaluating on {len(clips)} test clips through the exported file ...")
        original = FrameworkRunner(restored, threads=threads)
        metrics, _, theirs = compare_runners(open_export(tmp, threads=threads), original, clips, labels)
        metrics = {
            "run_id": cfg.run_id, "model": restored.spec.name, "format": fmt, "precision": precision,
            "split": "test", "threads": threads, "calibration_clips": len(calib) if calib else 0,
            "size_bytes": _size(tmp / files["model"]), "run": run_figures(run_dir), **metrics,
        }  # fmt: skip
        if stream_entry:
            log("checking the streaming model frame by frame ...")
            runner = StreamRunner(tmp / stream_entry["file"], stream_entry, threads)
            metrics["stream"] = {"size_bytes": _size(tmp / stream_entry["file"]),
                                 **compare_stream(runner, graph, clips, labels, theirs)}  # fmt: skip
        write_json(tmp / METRICS_FILE, metrics)
        _replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_model(restored, fmt: str, out: Path, calib, what: str, log):
    """Write the model file(s) into ``out``; returns (files, stream contract entry or None, stream graph or None)."""
    from models.export.stream import build_stream_graph, is_stream_run

    cfg = restored.cfg
    frames, size = cfg.model.frames, cfg.model.size
    if fmt == "onnx":
        from models.export.torch_export import export_onnx, quantize_onnx

        if calib is None:
            export_onnx(restored.model, frames, size, out / "model.onnx")
        else:
            export_onnx(restored.model, frames, size, out / "float.onnx")
            log(f"calibrating int8 on {len(calib)} train clips ...")
            quantize_onnx(out / "float.onnx", out / "model.onnx", calib)
            (out / "float.onnx").unlink()
        return {"model": "model.onnx"}, None, None
    from models.export.keras_export import convert_tflite, save_savedmodel, serving_function, tflite_friendly

    if fmt == "savedmodel":
        save_savedmodel(restored.model, serving_function(restored.model, frames, size), out / "saved_model")
        return {"model": "saved_model"}, None, None
    model = tflite_friendly(restored.model)
    representative = None
    if calib is not None:
        log(f"calibrating int8 on {len(calib)} train clips ...")

        def representative():
            for x in calib:
                yield [x]

    data = convert_tflite(serving_function(model, frames, size), model, what=what, representative=representative)
    (out / "model.tflite").write_bytes(data)
    files, entry, graph = {"model": "model.tflite"}, None, None
    if is_stream_run(restored):
        log("building the streaming model (one frame + states -> logits + states) ...")
        graph = build_stream_graph(restored)
        # float32 only: the states carry quantisation error from frame to frame (see docs/export.md).
        stream = convert_tflite(graph.concrete, graph.backbone, what=f"{what} stream")
        (out / "stream.tflite").write_bytes(stream)
        files["stream"] = "stream.tflite"
        entry = graph.contract("stream.tflite")
    return files, entry, graph


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _replace(tmp: Path, final: Path) -> None:
    """Move the finished export into place; an older export of that name goes only after the new one is whole."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
