"""Deployment: export a finished run (TFLite, SavedModel, ONNX; float32 or int8) and recognise signs in raw videos.

``export_run(run_dir, fmt)`` writes ``RUN_DIR/exports/<name>/`` with the model
file, its input contract and its metrics measured through the exported
file's own runtime; ``open_export`` runs one; ``predict_video`` cuts a raw
video like preprocessing does and names the top glosses. docs/export.md has
the formats per family and the phone-side use.
"""

from models.export.api import check_format, check_request, default_name, export_run
from models.export.contract import FORMATS, ExportError, read_contract
from models.export.predict import Prediction, predict_video
from models.export.runtime import open_export

__all__ = [
    "FORMATS",
    "ExportError",
    "Prediction",
    "check_format",
    "check_request",
    "default_name",
    "export_run",
    "open_export",
    "predict_video",
    "read_contract",
]
