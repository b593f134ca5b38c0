"""The exports table: every ``RUN_DIR/exports/<name>/metrics.json`` under a results root, one row each.

Columns: run, export name, format and precision, file size, median CPU
latency per clip (exported file vs the run's framework, same pass), test
top-1 through the exported file vs the original model on the same clips,
and the largest logit difference. See docs/export.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExportRow", "collect_exports", "format_exports", "is_export_metrics"]

_DASH = "–"


@dataclass(frozen=True)
class ExportRow:
    run_id: str
    name: str
    format: str
    precision: str
    size_mb: float
    latency_ms: float
    original_latency_ms: float
    top1: float
    top1_original: float
    max_abs_logit_diff: float
    stream_ms_per_frame: float = math.nan


def is_export_metrics(path: Path) -> bool:
    """``<run>/exports/<name>/metrics.json``: an export's figures, not a run record."""
    return path.name == "metrics.json" and path.parent.parent.name == "exports"


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def collect_exports(results: str | Path) -> tuple[list[ExportRow], list[str]]:
    """(rows sorted by run and export name, one-line notes on unreadable exports' metrics)."""
    rows, problems = [], []
    for path in sorted(Path(results).rglob("exports/*/metrics.json")):
        try:
            m = json.loads(path.read_text())
            rows.append(ExportRow(
                run_id=str(m["run_id"]), name=path.parent.name, format=str(m["format"]), precision=str(m["precision"]),
                size_mb=_number(m["size_bytes"]) / 1e6, latency_ms=_number(m["latency_ms"]),
                original_latency_ms=_number(m["original_latency_ms"]), top1=_number(m["exported"]["top1"]),
                top1_original=_number(m["original"]["top1"]), max_abs_logit_diff=_number(m["max_abs_logit_diff"]),
                stream_ms_per_frame=_number((m.get("stream") or {}).get("latency_ms_per_frame")),
            ))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{path}: unreadable export metrics ({type(e).__name__}: {e})")
    return sorted(rows, key=lambda r: (r.run_id, r.name)), problems


def _f(value: float, digits: int) -> str:
    return _DASH if math.isnan(value) else f"{value:.{digits}f}"


def _md(text: str) -> str:
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


_HEADER = ("Run", "Export", "Format", "Size (MB)", "Latency (ms/clip)", "Original (ms/clip)",
           "Top 1 exported", "Top 1 original", "Max |Δ logit|", "Stream (ms/frame)")  # fmt: skip


def format_exports(rows: list[ExportRow], fmt: str = "md") -> str:
    """The table as Markdown (accuracies in percent) or CSV (raw numbers); empty text without rows."""
    if not rows:
        return ""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run_id", "export", "format", "precision", "size_mb", "latency_ms", "original_latency_ms",
                    "top1", "top1_original", "max_abs_logit_diff", "stream_ms_per_frame"])  # fmt: skip
        for r in rows:
            w.writerow([r.run_id, r.name, r.format, r.precision, r.size_mb, r.latency_ms, r.original_latency_ms,
                        r.top1, r.top1_original, r.max_abs_logit_diff, r.stream_ms_per_frame])  # fmt: skip
        return buf.getvalue()
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    for r in rows:
        cells = (_md(r.run_id), _md(r.name), f"{_md(r.format)} {_md(r.precision)}", _f(r.size_mb, 2), _f(r.latency_ms, 1),
                 _f(r.original_latency_ms, 1), _f(100 * r.top1, 2), _f(100 * r.top1_original, 2),
                 _f(r.max_abs_logit_diff, 4), _f(r.stream_ms_per_frame, 1))  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
