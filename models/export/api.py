"""``export_run``: one run directory -> ``RUN_DIR/exports/<name>/`` (model file, contract.json, metrics.json).

The export is written into a temporary sibling directory and renamed into
place only once its evaluation has passed through the exported file, so a
failed or killed export leaves nothing under ``exports/<name>``.
"""

from __future__ import annotations

import os
import re
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
from utils.core.files import HOST, pid_alive
from utils.core.ids import id_problem
from utils.core.records import RecordError, read_record

__all__ = ["MAX_THREADS", "check_format", "check_request", "default_name", "export_run", "remove_stale_exports"]


def default_name(fmt: str, int8: bool) -> str:
    return f"{fmt}_{'int8' if int8 else 'float32'}"


def check_format(spec, fmt: str, int8: bool, where: str) -> None:
    """Refuse a format the model's framework lacks, or int8 where it does not apply (``where`` names the request).

    Raises:
        ExportError: unknown format, a format of the other framework, or int8 with savedmodel; says what works instead.
    """
    every = sorted({f for fs in FORMATS.values() for f in fs})
    if fmt not in every:
        raise ExportError(f"--format expected one of {every}, received {fmt!r}")
    allowed = FORMATS[spec.framework]
    if fmt not in allowed:
        lacking = "TensorFlow/Keras" if spec.framework == "keras" else "PyTorch"
        raise ExportError(
            f"{where}: {spec.name} is a {lacking} model and --format {fmt} is not available for it "
            f"(no {fmt} exporter for {lacking} here); what works instead: --format {' or --format '.join(allowed)}"
        )
    if int8 and fmt == "savedmodel":
        raise ExportError("--int8 applies to --format tflite (Keras runs) and --format onnx (PyTorch runs), not savedmodel; "
                          "what works instead: --format tflite --int8")  # fmt: skip


def check_request(run_dir: Path, fmt: str, int8: bool) -> None:
    """Refuse a format the run's framework lacks before anything is built (reads config.json only).

    Raises:
        ExportError: unknown format, a format of the other framework, or int8 where it does not apply.
        FileNotFoundError: not a run directory.
        DamagedFile: its config.json is damaged (named).
    """
    import models  # noqa: F401  (registers every family)
    from models.registry import get_model
    from models.restore import read_run_config

    check_format(get_model(read_run_config(run_dir).model.name), fmt, int8, str(run_dir))


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
    name = name if name is not None else default_name(fmt, int8)
    problem = id_problem(name, "--name")
    if problem:
        raise ExportError(f"{problem}: it names the folder RUN_DIR/exports/<name>")
    if not 1 <= threads <= MAX_THREADS:
        raise ExportError(f"--threads expected 1..{MAX_THREADS} CPU threads, received {threads}")
    if calibration < 1:
        raise ExportError(f"--calibration expected >= 1 train clips, received {calibration}")
    check_request(run_dir, fmt, int8)
    _check_finished(run_dir)
    remove_stale_exports(run_dir / "exports")
    restored = restore_run(run_dir)
    cfg = restored.cfg
    frames, size = cfg.model.frames, cfg.model.size
    _, labels, clips = store_clips(cfg.data.root, "test", frames=frames, size=size)
    calib = store_clips(cfg.data.root, "train", frames=frames, size=size, limit=calibration)[2] if int8 else None
    final = run_dir / "exports" / name
    tmp = run_dir / "exports" / f".{name}.tmp-{HOST}-{os.getpid()}"
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


# Runtimes' thread pools: a bound so that a typo cannot ask for a million threads.
MAX_THREADS = 256
_STALE = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<host>[A-Za-z0-9.-]+)-(?P<pid>\d+)")


def _check_finished(run_dir: Path) -> None:
    """Only a completed run is exported: a running or failed one's best weights may change or never be evaluated.

    Raises:
        ExportError: the record says otherwise (or is unreadable); names the status and what to do.
    """
    try:
        record = read_record(run_dir / "metrics.json")
    except RecordError as e:
        raise ExportError(f"{run_dir}: its run record is unreadable ({e}); export a completed run") from None
    if record.status != "completed":
        raise ExportError(f"{run_dir}: run {record.run_id} is {record.status}, expected completed; finish it first "
                          "(rerun its training command), then export it")  # fmt: skip


def remove_stale_exports(exports: Path) -> list[Path]:
    """Delete what killed exports left behind (``.<name>.tmp-<pid>``, ``.<name>.old-<pid>``); returns them.

    An export builds in a temporary folder named with its host and process id: one whose process no
    longer runs on this host was killed (kill -9) and is never finished. Another host's is left alone
    (its process may run there now).
    """
    removed = []
    for path in sorted(exports.glob(".*-*")) if exports.is_dir() else []:
        m = _STALE.fullmatch(path.name)
        if m and path.is_dir() and m["host"] == HOST and not pid_alive(int(m["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


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
        old = final.with_name(f".{final.name}.old-{HOST}-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
