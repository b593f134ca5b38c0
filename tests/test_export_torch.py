"""PyTorch runs -> ONNX (float32 and int8), evaluated through onnxruntime; refusals leave nothing behind."""

import json

import numpy as np
import pytest
from export_helpers import FRAMES, SIZE, make_store, read_export, train_run

from models.export import ExportError, export_run, open_export
from models.export import torch_export as torch_export_module
from wlasl.clip_store import ClipStore


@pytest.fixture(scope="module")
def x3d_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_torch")
    store = make_store(root)
    return train_run(store, root / "results", "x3d", model="x3d_xs")


@pytest.fixture(scope="module")
def onnx_float(x3d_run):
    export_run(x3d_run, "onnx", log=lambda _: None)
    return x3d_run / "exports" / "onnx_float32"


def test_onnx_export_matches_the_run_through_onnxruntime(x3d_run, onnx_float):
    contract, metrics = read_export(x3d_run, "onnx_float32")
    store = ClipStore(json.loads((x3d_run / "config.json").read_text())["data"]["root"])
    assert contract["input"]["shape"] == [None, FRAMES, SIZE, SIZE, 3] and contract["input"]["dtype"] == "uint8"
    assert contract["input"]["pixel_range"] == [0, 255] and contract["input"]["mean"] == [0.45] * 3
    assert contract["classes"] == store.labels and contract["runtime"] == "onnxruntime"
    assert contract["preprocessing"]["store"]["frames"] == FRAMES and contract["preprocessing"]["store"]["margin"] == 0.1
    assert metrics["max_abs_logit_diff"] < 1e-4 and metrics["agreement"] == 1.0
    assert metrics["exported"] == metrics["original"]
    assert metrics["exported"]["n"] == len(store.split("test"))
    # The run's own figure (its metrics.json) is the same model on the same clips.
    assert metrics["run"]["top1"] == pytest.approx(metrics["original"]["top1"])
    assert metrics["size_bytes"] == (onnx_float / "model.onnx").stat().st_size
    assert metrics["latency_ms"] > 0 and metrics["original_latency_ms"] > 0


def test_onnx_batch_axis_is_dynamic(onnx_float):
    runner = open_export(onnx_float)
    x = np.random.default_rng(0).integers(0, 256, (3, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    together = runner.logits(x)
    one_by_one = np.concatenate([runner.logits(x[i : i + 1]) for i in range(3)])
    assert together.shape == (3, 3)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_onnx_int8_stays_within_the_stated_margin_of_float(x3d_run):
    import onnx

    out = export_run(x3d_run, "onnx", int8=True, calibration=8, log=lambda _: None)
    _, metrics = read_export(x3d_run, "onnx_int8")
    nodes = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "QuantizeLinear" in nodes and "DequantizeLinear" in nodes
    assert metrics["precision"] == "int8" and metrics["calibration_clips"] == 8
    assert not (out / "float.onnx").exists()
    # Margin: uint8 activations carry ~1/255 of each tensor's calibrated range per layer; over X3D-XS's
    # depth that stays within 10% of the spread of the float logits, and predictions agree on >= 80%
    # of the test clips (measured here: see docs/export.md for the figures).
    assert metrics["max_abs_logit_diff"] <= 0.1 * metrics["original_logit_range"], metrics
    assert metrics["agreement"] >= 0.8, metrics
    assert abs(metrics["exported"]["top1"] - metrics["original"]["top1"]) <= 0.2, metrics


def test_formats_the_framework_lacks_are_refused_before_anything_is_written(x3d_run):
    for fmt in ("tflite", "savedmodel"):
        with pytest.raises(ExportError, match=rf"--format {fmt} is not available.*what works instead: --format onnx"):
            export_run(x3d_run, fmt, log=lambda _: None)
        assert not (x3d_run / "exports" / f"{fmt}_float32").exists()
    with pytest.raises(ExportError, match="expected one of"):
        export_run(x3d_run, "coreml", log=lambda _: None)


def test_a_failing_export_leaves_no_half_written_folder(x3d_run, monkeypatch):
    def broken(model, frames, size, path):
        path.write_bytes(b"half a file")  # the exporter dies midway
        raise ExportError("torch.onnx.export failed (op Foo)")

    monkeypatch.setattr(torch_export_module, "export_onnx", broken)
    with pytest.raises(ExportError, match="op Foo"):
        export_run(x3d_run, "onnx", int8=True, calibration=2, name="broken", log=lambda _: None)
    leftovers = [p.name for p in (x3d_run / "exports").iterdir() if "broken" in p.name]
    assert leftovers == []
