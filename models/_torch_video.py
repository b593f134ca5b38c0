"""Pieces every PyTorch video model here shares: the input module, the wrapper,
backbone weight loading and block freezing.

Imported lazily by the family modules (``models/s3d.py``, ``models/x3d.py``)
so ``import models`` never pays for torch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["ClipClassifier", "VideoInput", "check_input_size", "load_backbone", "unfreeze_last_layers"]


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


def _unwrap_state(obj, path: Path) -> dict:
    """The tensor mapping inside a checkpoint file (plain, or under a usual key)."""
    if isinstance(obj, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), received {type(obj).__name__}")
    # Prefixes left by DataParallel/DDP, torch.compile, and our own wrapper.
    out = {}
    for key, value in obj.items():
        for prefix in ("module.", "_orig_mod.", "net."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_backbone(net: nn.Module, path: str | Path, *, head: tuple[str, ...], name: str) -> None:
    """Load a local checkpoint into ``net``'s backbone; the head keeps its fresh weights.

    Args:
        net: the upstream network (state dict keys as in the file).
        path: ``.pth``/``.pyth`` file, loaded with ``weights_only=True``.
        head: key prefixes of the classifier, skipped on both sides (its
            shape depends on the number of classes).
        name: model name for messages.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a state dict of this backbone; names the
            missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights for {name} not found: {path}")
    state = _unwrap_state(torch.load(path, map_location="cpu", weights_only=True), path)
    ours = {k: v for k, v in net.state_dict().items() if not k.startswith(head)}
    theirs = {k: v for k, v in state.items() if not k.startswith(head)}
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = sorted(
        f"{k} {tuple(theirs[k].shape)} vs {tuple(ours[k].shape)}"
        for k in set(ours) & set(theirs)
        if theirs[k].shape != ours[k].shape
    )
    if missing or unexpected or shapes:

        def few(keys):
            return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "") if keys else "none"

        raise ValueError(
            f"{path} is not a {name} backbone state dict: missing keys: {few(missing)}; unexpected keys: {few(unexpected)}; "
            f"shape mismatches (file vs model): {few(shapes)}. Use the upstream {name} weights of the same variant"
        )
    net.load_state_dict(theirs, strict=False)
