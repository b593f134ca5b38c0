"""Run an exported file in its own runtime, or the run's original model, behind one call: ``logits(x)``.

Every runner takes a model input ``(1, T, S, S, 3)`` uint8 and returns float32
logits ``(1, C)``. Runtimes use one CPU thread by default: the figures stand
for a phone-like core, and two runners measured side by side do not compete
for threads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.export.contract import ExportError, read_contract

__all__ = ["FrameworkRunner", "OnnxRunner", "SavedModelRunner", "StreamRunner", "TFLiteRunner", "open_export"]


def _interpreter(path: Path, threads: int):
    # ai-edge-litert: the TFLite runtime that replaces tf.lite.Interpreter (deprecated in TF 2.20).
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    return interp


class TFLiteRunner:
    """A clip TFLite model (one uint8 input, one logits output)."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.path = Path(path)
        self.interp = _interpreter(self.path, threads)
        (self._in,), (self._out,) = self.interp.get_input_details(), self.interp.get_output_details()

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self._in["index"], np.ascontiguousarray(x, dtype=self._in["dtype"]))
        self.interp.invoke()
        return np.array(self.interp.get_tensor(self._out["index"]), np.float32)


class StreamRunner:
    """A streaming TFLite model: one frame ``(1, 1, S, S, 3)`` uint8 and the states in, logits and new states out.

    ``stream`` is the contract's ``stream`` entry: the input and output names in
    the file's order (outputs: ``logits`` first, then the states, sorted).
    """

    def __init__(self, path: str | Path, stream: dict, threads: int = 1):
        self.path = Path(path)
        self.interp = _interpreter(self.path, threads)
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        if len(ins) != len(stream["inputs"]) or len(outs) != len(stream["outputs"]):
            raise ExportError(
                f"{self.path} has {len(ins)} inputs / {len(outs)} outputs, its contract lists "
                f"{len(stream['inputs'])} / {len(stream['outputs'])}; export it again"
            )
        self._in = dict(zip(stream["inputs"], ins))
        self._out = dict(zip(stream["outputs"], outs))
        self.state_names = [n for n in stream["inputs"] if n != "image"]

    def initial_states(self) -> dict:
        return {n: np.zeros(self._in[n]["shape"], self._in[n]["dtype"]) for n in self.state_names}

    def step(self, frame: np.ndarray, states: dict) -> tuple[np.ndarray, dict]:
        """One frame ``(1, 1, S, S, 3)`` uint8 -> (logits ``(1, C)``, new states)."""
        self.interp.set_tensor(self._in["image"]["index"], np.ascontiguousarray(frame, np.uint8))
        for name in self.state_names:
            self.interp.set_tensor(self._in[name]["index"], states[name])
        self.interp.invoke()
        new = {n: self.interp.get_tensor(self._out[n]["index"]) for n in self.state_names}
        return np.array(self.interp.get_tensor(self._out["logits"]["index"]), np.float32), new

    def frames(self, x: np.ndarray):
        """Yield the running logits after each frame of a clip ``(1, T, S, S, 3)``."""
        states = self.initial_states()
        for t in range(x.shape[1]):
            logits, states = self.step(x[:, t : t + 1], states)
            yield logits

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The logits after the clip's last frame (what the clip model gives for the whole clip)."""
        *_, last = self.frames(x)
        return last


class OnnxRunner:
    """An ONNX model in onnxruntime (CPU)."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self._in = self.session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self._in: np.ascontiguousarray(x, np.uint8)})[0], np.float32)


class SavedModelRunner:
    """A SavedModel's ``serving_default`` signature in TensorFlow."""

    def __init__(self, path: str | Path):
        from utils.core.tf_env import tf

        self.path = Path(path)
        self._tf = tf
        self.loaded = tf.saved_model.load(str(self.path))
        self.fn = self.loaded.signatures["serving_default"]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(clips=self._tf.constant(x, self._tf.uint8))["logits"], np.float32)


class FrameworkRunner:
    """The run's own model in its framework (Keras graph function, or PyTorch in eval mode without gradients)."""

    def __init__(self, restored, threads: int | None = None):
        self.framework = restored.spec.framework
        self.model = restored.model
        cfg = restored.cfg.model
        shape = (1, cfg.frames, cfg.size, cfg.size, 3)
        if self.framework == "keras":
            from utils.core.tf_env import tf

            self._tf = tf
            model = self.model
            self.fn = tf.function(lambda clips: model(clips, training=False), input_signature=[tf.TensorSpec(shape, tf.uint8)])
        else:
            import torch

            self._torch = torch
            self.model.eval()
            self.threads = threads

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self.framework == "keras":
            return np.asarray(self.fn(self._tf.constant(x, self._tf.uint8)), np.float32)
        torch = self._torch
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self.model(torch.from_numpy(np.array(x, np.uint8))).float().numpy()
        finally:
            torch.set_num_threads(before)


def open_export(export_dir: str | Path, *, threads: int = 1, stream: bool = False):
    """The runner of an export directory (its clip model, or with ``stream`` its streaming model).

    Raises:
        ExportError: no such export, or no streaming model in it.
    """
    export_dir = Path(export_dir)
    contract = read_contract(export_dir)
    if stream and not contract.get("stream"):
        raise ExportError(
            f"{export_dir} has no streaming model (only MoViNet --stream runs exported to tflite have one); "
            "drop --stream or export a stream run with --format tflite"
        )
    path = export_dir / (contract["stream"]["file"] if stream else contract["files"]["model"])
    try:
        if stream:
            return StreamRunner(path, contract["stream"], threads)
        if contract["format"] == "tflite":
            return TFLiteRunner(path, threads)
        if contract["format"] == "onnx":
            return OnnxRunner(path, threads)
        return SavedModelRunner(path)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - a cut, emptied or foreign model file: every runtime raises its own type
        raise ExportError(
            f"{path}: expected the export's {contract['format']} model, received a file its runtime cannot "
            f"load ({type(e).__name__}: {' '.join(str(e).split())[:200]}); export the run again: python main/export.py "
            f"{export_dir.parent.parent} --format {contract['format']}{' --int8' * (contract.get('precision') == 'int8')} "
            f"--name {export_dir.name}"
        ) from None
