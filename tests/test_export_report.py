"""utils/report.py: the exports table, and export metrics never mistaken for run records."""

import json

from test_report import make_run

from utils.report import build_report, main, write_outputs


def _export_metrics(run_id: str, fmt: str, precision: str, top1: float, **extra) -> dict:
    return {
        "run_id": run_id, "model": "i3d", "format": fmt, "precision": precision, "split": "test", "threads": 1,
        "calibration_clips": 32 if precision == "int8" else 0, "size_bytes": 12_345_678, "run": {"top1": 0.5},
        "exported": {"top1": top1, "top2": 0.75, "n": 4}, "original": {"top1": 0.5, "top2": 0.75, "n": 4},
        "agreement": 0.75, "max_abs_logit_diff": 0.0123, "original_logit_range": 3.0,
        "latency_ms": 41.5, "original_latency_ms": 90.25, **extra,
    }  # fmt: skip


def _seed(tmp_path):
    results = tmp_path / "results"
    record = make_run(results, "i3d", 0)
    run_dir = results / "runs" / record.run_id
    for name, metrics in {
        "tflite_float32": _export_metrics(record.run_id, "tflite", "float32", 0.5),
        "tflite_int8": _export_metrics(record.run_id, "tflite", "int8", 0.25, stream={"latency_ms_per_frame": 3.5}),
    }.items():
        (run_dir / "exports" / name).mkdir(parents=True)
        (run_dir / "exports" / name / "metrics.json").write_text(json.dumps(metrics))
    return results, record


def test_export_metrics_are_not_run_records(tmp_path):
    results, _ = _seed(tmp_path)
    report = build_report(results)
    assert len(report.runs.completed) == 1
    assert report.runs.skipped == []  # an export's metrics.json is not an unreadable run record


def test_exports_table_lists_every_export(tmp_path, capsys):
    results, record = _seed(tmp_path)
    report = build_report(results)
    written = write_outputs(report, results / "tables", None)
    md = (results / "tables" / "exports.md").read_text()
    assert results / "tables" / "exports.csv" in written
    lines = [line for line in md.splitlines() if line.startswith(f"| {record.run_id}")]
    assert lines == [
        f"| {record.run_id} | tflite_float32 | tflite float32 | 12.35 | 41.5 | 90.2 | 50.00 | 50.00 | 0.0123 | – |",
        f"| {record.run_id} | tflite_int8 | tflite int8 | 12.35 | 41.5 | 90.2 | 25.00 | 50.00 | 0.0123 | 3.5 |",
    ]
    assert main(["--results", str(results), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "Exports" in out and "tflite_int8" in out


def test_a_damaged_export_metrics_file_is_reported_not_fatal(tmp_path):
    results, record = _seed(tmp_path)
    bad = results / "runs" / record.run_id / "exports" / "broken"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    report = build_report(results)
    assert [r.name for r in report.exports] == ["tflite_float32", "tflite_int8"]
    assert len(report.export_notes) == 1 and "broken/metrics.json" in report.export_notes[0]
