"""Hugging Face Transformers video classifiers in the suite's contract (ViViT, VideoMAE, V-JEPA 2).

What the three families share: the network is the library's own
``*ForVideoClassification`` class built from its config class, wrapped so it
takes the suite's uint8 clips ``(B, T, H, W, 3)`` and returns logits; its
classifier is always a fresh ``num_classes`` layer (with the run's dropout
before it); ``--pretrained DIR`` is a Hugging Face model folder (``config.json``
and ``model.safetensors``, the layout of the released Kinetics checkpoints
and of ``save_pretrained``) read by the library's own loader, which also
renames the tensors of checkpoints saved by older versions of the library.

Imported lazily by :func:`models._hf_common.build_video_transformer` (the
builder the family modules ``models/vivit.py``, ``models/videomae.py`` and
``models/vjepa2.py`` register), so ``import models`` never pays for torch or
transformers. ``family`` arguments are :class:`models._hf_common.HFFamily`
(not imported here: that module imports this one).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn

from models._torch_video import ClipClassifier, refuse_unfit

__all__ = ["DropoutLinear", "HFVideoClassifier", "build_hf_video", "import_transformers", "resample_positions"]

# Files a Hugging Face model folder holds the weights in, in the order the library looks for them.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def import_transformers():
    """``import transformers``, with torchvision imported first through :mod:`models._torchvision_compat`.

    The library's image utilities import torchvision, whose CUDA wheel fails
    to import beside the CPU torch of a workstation unless its op schemas are
    declared first (see that module).
    """
    from models._torchvision_compat import import_torchvision

    import_torchvision()
    import transformers

    return transformers


@contextlib.contextmanager
def _quiet_library():
    """The library's load report table and progress bars off while we load (the suite reports instead)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class DropoutLinear(nn.Linear):
    """A linear classifier with dropout on its input; state-dict keys stay the library's (``classifier.weight``)."""

    def __init__(self, in_features: int, out_features: int, *, dropout: float):
        super().__init__(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(x))


class HFVideoClassifier(ClipClassifier):
    """uint8 clips ``(B, T, H, W, 3)`` -> the suite's normalisation -> the library's model -> logits.

    The library's video models take ``(B, T, C, H, W)``; each transposes it
    back to ``(B, C, T, H, W)`` for its 3D patch convolution, so the view
    passed here costs no copy.
    """

    def __init__(self, net: nn.Module, *, input_name: str, **kw):
        super().__init__(net, **kw)
        self.input_name = input_name

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.input(clips).transpose(1, 2)
        return self.net(**{self.input_name: x}).logits


def resample_positions(table: torch.Tensor, old: tuple[int, int, int], new: tuple[int, int, int]) -> torch.Tensor:
    """A ``(1, 1 + t*h*w, D)`` position table ([CLS] first) resampled to another tubelet grid, trilinearly.

    The token order is the patch convolution's flattening (time, then rows,
    then columns); the [CLS] entry is kept as it is.
    """
    dim = table.shape[-1]
    grid = table[:, 1:].reshape(1, *old, dim).permute(0, 4, 1, 2, 3)
    grid = nn.functional.interpolate(grid.float(), size=new, mode="trilinear", align_corners=False)
    return torch.cat([table[:, :1], grid.permute(0, 2, 3, 4, 1).reshape(1, -1, dim).to(table.dtype)], dim=1)


def check_geometry(name: str, *, frames: int, size: int, tubelet: int, patch: int) -> None:
    """Refuse clips the patch convolution would cut unevenly (it would drop the remainder silently)."""
    if frames < tubelet or size < patch or frames % tubelet or size % patch:
        raise ValueError(
            f"{name} cuts clips into tubelets of {tubelet} frames x {patch}x{patch} px: frames must be a multiple of "
            f"{tubelet} and size a multiple of {patch}, received frames={frames} size={size}; pick --frames / --size "
            f"that are (e.g. --frames {max(tubelet, frames - frames % tubelet)} --size {max(patch, size - size % patch)}) "
            "and preprocess a store that holds them"
        )


def _read_config(path: Path, family, name: str) -> dict:
    """The checkpoint folder's ``config.json`` as a dict, or an error saying what the folder lacks or holds."""
    if not path.is_dir():
        what = "a file" if path.exists() else "not found"
        raise FileNotFoundError(
            f"pretrained weights for {name}: {path} is {what}; expected a Hugging Face model folder (config.json + "
            f"model.safetensors), e.g. made by: hf download <repo> --local-dir {path}"
        )
    config_file = path / "config.json"
    weights = [f for f in WEIGHT_FILES if (path / f).is_file()]
    if not config_file.is_file() or not weights:
        lacking = [f for f, ok in (("config.json", config_file.is_file()), ("model.safetensors", bool(weights))) if not ok]
        raise FileNotFoundError(
            f"{path} lacks {' and '.join(lacking)}: expected a Hugging Face model folder as the released checkpoints "
            "and save_pretrained lay it out; download the whole repository (hf download <repo> "
            f"--local-dir {path})"
        )
    try:
        data = json.loads(config_file.read_text())
    except ValueError as e:
        raise ValueError(f"{config_file} is not valid JSON ({e}); download it again") from None
    found = data.get("model_type") if isinstance(data, dict) else None
    if found != family.model_type:
        raise ValueError(
            f"{path} holds a {found!r} checkpoint (model_type in config.json) but {name} is {family.display} "
            f"(model_type {family.model_type!r}); pass a {family.display} checkpoint, or train the family that fits it"
        )
    return data


def _check_arch(path: Path, file_cfg: dict, ours: dict, family, name: str) -> None:
    """Refuse a checkpoint whose architecture differs from the one asked for (another size or patching)."""

    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v

    differ = [f"{k} {norm(file_cfg.get(k))} (file) vs {norm(ours[k])}" for k in family.arch_fields
              if k in ours and k in file_cfg and norm(file_cfg[k]) != norm(ours[k])]  # fmt: skip
    if differ:
        raise ValueError(
            f"{path} is a {family.display} of another architecture than {name}: {'; '.join(differ)}. Pass the "
            "checkpoint of this variant, or the variant / builder options (--hidden-size, --layers, --heads, "
            "--intermediate-size, --patch-size, --tubelet) that match the file"
        )


def _load(family, config, path: Path, file_cfg: dict, name: str, partial: bool):
    """The library's model with the checkpoint loaded (its loader renames old layouts); plus the report's lists."""
    from models._pretrained import pretrained_report

    transformers = import_transformers()
    model_class = getattr(transformers, family.model_class)
    with _quiet_library():
        try:
            net, info = model_class.from_pretrained(
                str(path), config=config, ignore_mismatched_sizes=True, output_loading_info=True,
                local_files_only=True, dtype=torch.float32,
            )  # fmt: skip
        except (OSError, ValueError, RuntimeError) as e:
            raise ValueError(
                f"{path}: the library could not read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                "download it again"
            ) from None
    skip = family.skipped
    mismatched = {k: (tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]}
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(skip))
    unexpected = sorted(k for k in info["unexpected_keys"] if not k.startswith(family.head))
    adapted = []
    if family.positions is not None and family.positions[0] in mismatched:
        key, grid_of = family.positions
        adapted.append(key)
        old, new = grid_of(file_cfg), grid_of(config.to_dict())
        table = _file_tensor(path, key)
        if table.shape[1] != 1 + old[0] * old[1] * old[2]:
            raise ValueError(
                f"{path}: {key} has {table.shape[1]} entries but its config.json's geometry gives 1 + "
                f"{old[0]}x{old[1]}x{old[2]}; the folder mixes two checkpoints: download it again"
            )
        with torch.no_grad():
            net.get_parameter(key).copy_(resample_positions(table, old, new))
        del mismatched[key]
    shapes = [f"{k} {a} vs {b}" for k, (a, b) in mismatched.items() if not k.startswith(skip)]
    state = net.state_dict()
    loaded = [k for k in state if not k.startswith(skip) and k not in info["missing_keys"] and k not in mismatched]
    refuse_unfit(path, f"{name} checkpoint", missing=missing, unexpected=unexpected, shapes=shapes,
                 any_loaded=bool(loaded), partial=partial, fix=f"Use the {family.display} checkpoint of the same variant")  # fmt: skip
    present_head = [k for k in state if k.startswith(family.head) and k not in info["missing_keys"]]
    dropped = [k for k in state if k.startswith(skip) and not k.startswith(family.head)]
    report = pretrained_report(
        file=path,
        tensors_loaded=len(loaded),
        unused=unexpected + [k for k in dropped if k not in info["missing_keys"]],
        skipped_head=present_head + sorted(k for k in info["unexpected_keys"] if k.startswith(family.head)),
        left=missing,
        partial=partial,
        adapted=adapted,
    )
    return net, report


def _file_tensor(path: Path, key: str) -> torch.Tensor:
    """One tensor of the folder's weights file, by its key (read alone: no whole-file load)."""
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            return f.get_tensor(key)
    return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)[key]


def build_hf_video(
    family,
    *,
    num_classes: int,
    frames: int,
    size: int,
    mean,
    std,
    arch: dict,
    dropout: float,
    freeze: int,
    unfreeze_last: int | None,
    pretrained: str | None,
    pretrained_partial: bool,
    model_name: str,
) -> HFVideoClassifier:
    """The family's classifier for ``num_classes`` on uint8 clips ``(B, frames, size, size, 3)``.

    ``arch``: ``hidden_size, num_hidden_layers, num_attention_heads,
    intermediate_size, patch_size, tubelet`` (see
    :func:`models._hf_common.build_video_transformer`). Without ``pretrained`` the network is the library's fresh initialisation
    of the config ``family.config(frames, size, arch)``. With it, the
    checkpoint's ``config.json`` supplies everything the architecture does not
    fix (activation, norms' epsilon, pooling); its architecture must match
    ``arch``; the input geometry is the run's.

    Raises:
        ValueError: geometry the patching cannot cut, freeze out of range, a
            checkpoint of another family / architecture / incomplete (unless
            ``pretrained_partial``).
        FileNotFoundError: no checkpoint folder, or one without its files.
    """
    from models._pretrained import check_partial
    from models._torch_video import unfreeze_last_layers

    name = model_name
    check_geometry(name, frames=frames, size=size, tubelet=arch["tubelet"], patch=arch["patch_size"])
    check_partial(pretrained, pretrained_partial)
    if num_classes < 2:
        raise ValueError(f"{name} expected num_classes >= 2, received {num_classes}")
    if arch["hidden_size"] % arch["num_attention_heads"]:
        raise ValueError(f"{name} expected hidden_size divisible by heads, received {arch['hidden_size']} and "
                         f"{arch['num_attention_heads']}")  # fmt: skip
    transformers = import_transformers()
    config_class = getattr(transformers, family.config_class)
    ours = family.config(frames, size, arch)
    report = None
    if pretrained:
        path = Path(pretrained)
        file_cfg = _read_config(path, family, name)
        _check_arch(path, file_cfg, ours, family, name)
        config = config_class.from_dict({**file_cfg, **ours})
        config.num_labels = num_classes
        net, report = _load(family, config, path, file_cfg, name, pretrained_partial)
    else:
        config = config_class(**ours)
        config.num_labels = num_classes
        net = getattr(transformers, family.model_class)(config)
    for module in family.dropped:
        parent, _, child = module.rpartition(".")
        setattr(net.get_submodule(parent), child, None)  # never run by the classifier: no weights to train or keep
    head = DropoutLinear(net.classifier.in_features, num_classes, dropout=dropout)
    nn.init.trunc_normal_(head.weight, std=config.initializer_range)  # the library's init of its classifiers
    nn.init.zeros_(head.bias)
    net.classifier = head
    net.train()
    blocks = family.blocks(net)
    if not 0 <= freeze <= len(blocks):
        raise ValueError(f"{name} freeze expected 0..{len(blocks)} (the patch embedding and {len(blocks) - 1} "
                         f"transformer layers), received {freeze}")  # fmt: skip
    frozen = list(blocks[:freeze])
    if unfreeze_last is not None:
        frozen += unfreeze_last_layers(net, unfreeze_last, head=family.head, name=name)
    model = HFVideoClassifier(net, input_name=family.input_name, mean=mean, std=std, num_classes=num_classes, frozen=frozen)
    model.pretrained_report = report
    return model
