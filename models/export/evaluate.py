"""An export's metrics.json: accuracy through the exported file's own runtime, beside the run's own figures.

Each test clip goes through the exported file and through the run's model
(the same uint8 input), so the largest logit difference, the prediction
agreement and both latencies come from one pass. Latency is the median
wall time of one clip (batch 1) after a warm-up call.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from utils.core.metrics import evaluate_logits

__all__ = ["compare_runners", "compare_stream", "run_figures"]


def _median_ms(times: list[float]) -> float:
    return round(float(np.median(times)) * 1000.0, 3) if times else float("nan")


def _figures(logits: np.ndarray, labels: np.ndarray) -> dict:
    m = evaluate_logits(logits, labels)
    return {"top1": m["top1"], "top2": m["top2"], "n": m["n"]}


def run_figures(run_dir: Path) -> dict:
    """The run's own test top-1/top-2 from its metrics.json (empty when it has none)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return {}
    test = (json.loads(path.read_text()).get("metrics") or {}).get("test") or {}
    return {k: test[k] for k in ("top1", "top2", "n") if k in test}


def compare_runners(exported, original, clips, labels: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """Run every clip through both runners; returns (metrics, exported logits, original logits)."""
    first = clips[0]
    exported.logits(first)  # warm-up: first calls allocate and trace
    original.logits(first)
    ours, theirs, t_ours, t_theirs = [], [], [], []
    for x in clips:
        t0 = time.perf_counter()
        ours.append(exported.logits(x)[0])
        t1 = time.perf_counter()
        theirs.append(original.logits(x)[0])
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_theirs.append(t2 - t1)
    ours, theirs = np.asarray(ours, np.float32), np.asarray(theirs, np.float32)
    metrics = {
        "exported": _figures(ours, labels),
        "original": _figures(theirs, labels),
        "agreement": float((ours.argmax(1) == theirs.argmax(1)).mean()),
        "max_abs_logit_diff": float(np.abs(ours - theirs).max()),
        # The scale the difference is read against: how far apart the original logits are.
        "original_logit_range": float(theirs.max() - theirs.min()),
        "latency_ms": _median_ms(t_ours),
        "original_latency_ms": _median_ms(t_theirs),
    }
    return metrics, ours, theirs


def compare_stream(stream, graph, clips, labels: np.ndarray, clip_logits: np.ndarray) -> dict:
    """Check a streaming export frame by frame.

    Every test clip is fed one frame at a time; the logits after its last
    frame are compared with the run's clip logits (``clip_logits``: the
    original model on the whole clip). On the first clip the running logits
    of every frame are also compared with the TensorFlow streaming graph
    (``graph``), which the file was converted from.
    """
    finals, t_frames = [], []
    for x in clips:
        states = stream.initial_states()
        for t in range(x.shape[1]):
            t0 = time.perf_counter()
            logits, states = stream.step(x[:, t : t + 1], states)
            t_frames.append(time.perf_counter() - t0)
        finals.append(logits[0])
    finals = np.asarray(finals, np.float32)
    first = clips[0]
    per_frame = max(float(np.abs(a - b).max()) for a, b in zip(stream.frames(first), graph.frames(first)))
    return {
        "exported": _figures(finals, labels),
        "agreement_with_clip_model": float((finals.argmax(1) == clip_logits.argmax(1)).mean()),
        "max_abs_logit_diff_vs_clip_model": float(np.abs(finals - clip_logits).max()),
        "max_abs_logit_diff_per_frame_vs_tf_stream": per_frame,
        "frames_per_clip": int(first.shape[1]),
        "latency_ms_per_frame": _median_ms(t_frames[1:]),
    }
