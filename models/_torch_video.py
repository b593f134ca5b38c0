"""Pieces every PyTorch video model here shares: the input module, the wrapper,
backbone weight loading and block freezing.

Imported lazily by the family modules (``models/s3d.py``, ``models/x3d.py``)
so ``import models`` never pays for torch.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["ClipClassifier", "VideoInput", "check_input_size", "load_backbone", "refuse_unfit", "unfreeze_last_layers"]


class VideoInput(nn.Module):
    """uint8 ``(B, T, H, W, 3)`` RGB -> normalised float ``(B, 3, T, H, W)`` on the model's device.

    Loaders ship uint8 (4x less to copy than float32); the conversion runs on
    the accelerator. The permuted view of a channels-last clip already has
    ``channels_last_3d`` strides, so with ``channels_last`` no copy is made.

    Args:
        mean: per-channel mean on [0, 1] pixels.
        std: per-channel std on [0, 1] pixels.
    """

    def __init__(self, mean, std):
        super().__init__()
        # Folded into one multiply-add: x * scale + shift == (x / 255 - mean) / std.
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)
        self.channels_last = False

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.dim() != 5 or clips.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 clips (batch, frames, height, width, 3), received shape {tuple(clips.shape)}"
            )
        x = clips.permute(0, 4, 1, 2, 3).float() * self.scale + self.shift
        return x if self.channels_last else x.contiguous()


class ClipClassifier(nn.Module):
    """``input`` (uint8 -> normalised float) followed by ``net`` (the backbone and head).

    Attributes:
        input: the :class:`VideoInput`.
        net: the torchvision / pytorchvideo network; its state dict keys are
            the upstream ones, under ``net.``.
        num_classes: output columns.
        frozen: the leading blocks kept frozen; they stay in eval mode, so
            their BatchNorm statistics do not drift either.
    """

    def __init__(self, net: nn.Module, *, mean, std, num_classes: int, frozen: list[nn.Module] | None = None):
        super().__init__()
        self.input = VideoInput(mean, std)
        self.net = net
        self.num_classes = num_classes
        self.frozen = list(frozen or [])  # plain list: not registered twice as submodules
        for block in self.frozen:
            block.requires_grad_(False)

    def train(self, mode: bool = True) -> ClipClassifier:
        super().train(mode)
        for block in self.frozen:
            block.eval()
        return self

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(self.input(clips))


def unfreeze_last_layers(net: nn.Module, k: int, *, head: tuple[str, ...], name: str) -> list[nn.Module]:
    """The leaf layers with weights of ``net``'s backbone except the last ``k``: the ones to freeze.

    "Layers" are the modules that own parameters, in definition order (the
    PyTorch reading of the Keras ``backbone.layers[:-k]`` the seed thesis
    froze); the head (state-dict prefixes ``head``) always trains.

    Raises:
        ValueError: ``k`` is not in 1..number of backbone layers.
    """
    layers = [
        m
        for qualified, m in net.named_modules()
        if any(True for _ in m.parameters(recurse=False)) and not f"{qualified}.".startswith(head)
    ]
    if not 1 <= k <= len(layers):
        raise ValueError(f"unfreeze_last expected 1..{len(layers)} (layers with weights of the {name} backbone), received {k}")
    return layers[:-k]


def check_input_size(name: str, *, frames: int, size: int, min_frames: int, min_size: int) -> None:
    """Raise a ValueError naming the numbers when the clip is smaller than the network's strides allow."""
    if frames < min_frames or size < min_size:
        raise ValueError(
            f"{name} needs frames >= {min_frames} and size >= {min_size} px, received frames={frames} size={size}; "
            f"raise --frames / --size (and preprocess a store that holds them)"
        )


# Wrappers whose name prefixes every key of a saved state dict: DataParallel/DDP,
# torch.compile, PySlowFast's PTVX3D (the pytorchvideo net as ``.model``), and ours.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
# Where checkpoints nest the state dict: PySlowFast and the pytorchvideo model zoo
# (``model_state``), Lightning and many scripts (``state_dict``), others (``model``).
_STATE_KEYS = ("model_state", "state_dict", "model")
# The first bytes of the legacy (pre-1.6) torch.save format: the pickled magic number.
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]


def _read_torch_file(path: Path, name: str):
    """``torch.load(path, weights_only=True)``, or a ValueError saying what the file is instead."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(f"{path} is empty (0 bytes); download the {name} weights again")
    is_zip, is_legacy = head.startswith(b"PK\x03\x04"), head.startswith(_LEGACY_MAGIC)
    if not (is_zip or is_legacy):
        raise ValueError(
            f"{path} is not a PyTorch weights file (neither the zip format of torch.save nor its legacy one; "
            f"it starts with {head[:16]!r}); expected the upstream {name} .pth/.pyth: check the download "
            "(an HTML error page or a partial copy are common) and download it again"
        )
    if is_zip and not zipfile.is_zipfile(path):  # the zip's directory sits at the end: gone when cut short
        raise ValueError(
            f"{path} is a truncated or damaged PyTorch file (its zip directory is missing); download it again "
            "and compare its size with the release"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # A well-formed file whose pickle names Python classes or functions: weights_only refuses them because
        # unpickling them runs code (a whole model saved with torch.save(model), or a custom training object).
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = found.group(1) if found else "classes beyond tensors and plain containers"
        raise ValueError(
            f"{path} is a PyTorch file that is not a plain state dict: it pickles Python objects ({what}), which "
            "torch.load(weights_only=True) refuses because unpickling them can run code; if you trust the file, "
            f"re-save its weights and pass that file: python -c \"import torch; m = torch.load('{path}', "
            f"weights_only=False); torch.save(m.state_dict(), '{path}.state_dict.pth')\""
        ) from None
    except RuntimeError as e:
        if "TorchScript" not in str(e):
            raise _damaged(path, e) from None
        raise ValueError(
            f"{path} is a TorchScript archive (torch.jit.save), not a state dict; if you trust it, save its weights "
            f"and pass that file: python -c \"import torch; torch.save(torch.jit.load('{path}').state_dict(), "
            f"'{path}.state_dict.pth')\""
        ) from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise _damaged(path, e) from None


def _damaged(path: Path, error: Exception) -> ValueError:
    reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    return ValueError(
        f"{path} is a truncated or damaged PyTorch file ({reason}); download it again and compare its size with "
        "the release"
    )


def _unwrap_state(obj, path: Path) -> dict:
    """The tensor mapping inside a checkpoint (plain, or under a usual key), with wrapper prefixes removed."""
    if isinstance(obj, dict):
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = (
            f"a dict with keys {', '.join(map(str, list(obj)[:8]))}" if isinstance(obj, dict) else type(obj).__name__
        )
        raise ValueError(
            f"{path}: expected a state dict (name -> tensor), plain or under one of {', '.join(_STATE_KEYS)}; "
            f"received {found}"
        )
    state = dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def _is_counter(key: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: a step count, not a weight. Files without it load in
    torchvision's and pytorchvideo's own strict loads (BatchNorm then keeps its 0), so here too."""
    return key.endswith("num_batches_tracked")


def refuse_unfit(path, kind: str, *, missing: list[str], unexpected: list[str], shapes: list[str], any_loaded: bool,
                 partial: bool, fix: str) -> None:  # fmt: skip
    """The strictness every PyTorch loader here shares: refuse a file before anything is loaded from it.

    Refused: any shape mismatch, nothing loadable, or (unless ``partial``)
    backbone keys the file lacks or file keys that fit nothing.

    Raises:
        ValueError: names the missing, unexpected and mis-shaped keys, and ``fix``.
    """
    from models._pretrained import few

    if shapes or not any_loaded or ((missing or unexpected) and not partial):
        hint = " (or --pretrained-partial to load a file that holds only part of it)" if not shapes and any_loaded else ""
        raise ValueError(
            f"{path} is not a {kind}: missing keys: {few(missing)}; unexpected keys: {few(unexpected)}; "
            f"shape mismatches (file vs model): {few(shapes)}. {fix}{hint}"
        )


def load_backbone(net: nn.Module, path: str | Path, *, head: tuple[str, ...], name: str, partial: bool = False) -> dict:
    """Load a local checkpoint into ``net``'s backbone; the head keeps its fresh weights.

    As strict as the upstream loaders (pytorchvideo's hub, torchvision): every
    backbone key must come from the file and every file key must fit, except
    BatchNorm's ``num_batches_tracked`` counters, which those loaders do not
    require either. Wrapper prefixes (``module.``, PySlowFast's ``model.``,
    ...) are removed. Nothing is loaded unless the file fits.

    Args:
        net: the upstream network (state dict keys as in the file).
        path: ``.pth``/``.pyth`` file, loaded with ``weights_only=True``: a
            state dict, or one under ``model_state`` (pytorchvideo model zoo,
            PySlowFast), ``state_dict`` or ``model``.
        head: key prefixes of the classifier, skipped on both sides (its
            shape depends on the number of classes).
        name: model name for messages.
        partial: allow backbone keys the file lacks and file keys the model
            lacks (both listed in the report); shapes must still match.

    Returns:
        The :func:`models._pretrained.pretrained_report` dict; entries are state-dict keys.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable, safe PyTorch state dict
            (empty, truncated, pickled objects, another format), or not one
            of this backbone; names the missing, unexpected and mis-shaped keys.
    """
    from models._pretrained import pretrained_report

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights for {name} not found: {path}")
    state = _unwrap_state(_read_torch_file(path, name), path)
    ours = {k: v for k, v in net.state_dict().items() if not k.startswith(head)}
    theirs = {k: v for k, v in state.items() if not k.startswith(head)}
    missing = [k for k in ours if k not in theirs and not _is_counter(k)]
    unexpected = [k for k in theirs if k not in ours and not _is_counter(k)]
    shapes = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(ours[k].shape)}"
        for k in ours
        if k in theirs and theirs[k].shape != ours[k].shape
    ]
    loadable = {k: v for k, v in theirs.items() if k in ours and v.shape == ours[k].shape}
    refuse_unfit(path, f"{name} backbone state dict", missing=missing, unexpected=unexpected, shapes=shapes,
                 any_loaded=bool(loadable), partial=partial, fix=f"Use the upstream {name} weights of the same variant")  # fmt: skip
    net.load_state_dict(loadable, strict=False)
    return pretrained_report(
        file=path,
        tensors_loaded=len(loadable),
        unused=unexpected,
        skipped_head=[k for k in state if k.startswith(head)],
        left=missing,
        partial=partial,
    )
