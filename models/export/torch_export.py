"""PyTorch runs (S3D, X3D) -> ONNX with a dynamic batch axis; int8 by onnxruntime static quantisation.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based
exporter. Both it and the ``dynamo=True`` exporter give files that
onnxruntime runs to within 2e-9 of torch on X3D-XS here; the TorchScript one
exports about 3.5x faster (10 s vs 36 s for tiny X3D-XS on this CPU), writes
one self-contained file (the dynamo one puts the weights in a side
``.onnx.data`` file) and needs no onnxscript. ``dynamo=True`` stays an
option for models the TorchScript tracer cannot follow.

int8: ``onnxruntime.quantization.quantize_static`` in QDQ format (int8
weights per channel, uint8 activations), calibrated on train clips. The uint8
input and its cast stay as they are: the file takes raw pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from models.export.contract import ExportError

__all__ = ["export_onnx", "quantize_onnx"]

OPSET = 17


def export_onnx(model, frames: int, size: int, path: Path) -> None:
    """Write ``model`` (uint8 clips -> logits) as ONNX with input ``clips`` and output ``logits``, batch axis dynamic."""
    import torch

    model.eval()
    example = torch.zeros((1, frames, size, size, 3), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            # The input check's shape test is traced as a constant: right here, the file's shape is fixed but for the batch.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["clips"],
                output_names=["logits"],
                dynamic_axes={"clips": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as e:  # torch raises its exporter's own error types (UnsupportedOperatorError, ...)
        raise ExportError(f"{type(model.net).__name__}: torch.onnx.export failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                          "no other format is available for PyTorch runs") from None  # fmt: skip


def quantize_onnx(src: Path, dst: Path, calibration: list[np.ndarray]) -> None:
    """Static int8 quantisation of ``src`` into ``dst``, calibrated on ``calibration`` (model inputs ``(1, T, S, S, 3)``).

    Raises:
        ExportError: onnxruntime cannot quantise the graph (names the op when it says which).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"clips": x}

    try:
        quantize_static(
            str(src),
            str(dst),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    except Exception as e:  # onnxruntime's quantiser raises plain exceptions naming the node
        raise ExportError(f"{src.name}: onnxruntime static int8 quantisation failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300]}); what works instead: the float32 ONNX export (drop --int8)") from None  # fmt: skip
