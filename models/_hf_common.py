"""The registry side of the Hugging Face video transformers (ViViT, VideoMAE, V-JEPA 2): framework-free.

The three families share one builder, :func:`build_video_transformer`, one
set of builder options (the encoder's size and patching, so tests can build
tiny networks through the same registry entry) and one tuning space. Each
family module (``models/vivit.py``, ``models/videomae.py``,
``models/vjepa2.py``) declares what differs in an :class:`HFFamily` and
registers its variants with :func:`register_video_transformer`. torch and transformers are imported inside
the builder (:mod:`models._hf_video`), so ``import models`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models.registry import Option, register_model

__all__ = ["HFFamily", "IMAGENET_MEAN", "IMAGENET_STD", "TRANSFORMER_SPACE", "arch_options", "build_video_transformer",
           "encoder_fields", "register_video_transformer"]

# ImageNet's statistics (the library's IMAGENET_DEFAULT_MEAN/STD): what VideoMAE's released
# Kinetics checkpoints' preprocessor_config.json and V-JEPA 2's video processor normalise with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Fine-tuning a ViT: smaller learning rates than the CNNs', Adam (decoupled
# decay makes it AdamW) or SGD, AdamW-sized weight decay, small batches (long
# token sequences), and whole blocks of layers frozen at a time.
TRANSFORMER_SPACE = {
    "lr": {"kind": "float", "min": 1e-5, "max": 1e-3, "sampling": "log"},
    "optimizer": {"kind": "choice", "values": ["adam", "sgd"]},
    "weight_decay": {"kind": "choice", "values": [0.0, 0.01, 0.05]},
    "freeze": {"kind": "int", "min": 0, "max": 8, "step": 4},
    "batch_size": {"kind": "choice", "values": [2, 4, 8]},
}


@dataclass(frozen=True)
class HFFamily:
    """What differs between the library's video classifiers.

    Attributes:
        display: the family's name in messages (``ViViT``).
        model_type: ``model_type`` of its ``config.json`` (``vivit``).
        model_class: the library's classifier class (``VivitForVideoClassification``).
        config_class: its config class (``VivitConfig``).
        input_name: the forward argument that takes the video (``pixel_values``).
        config: ``(frames, size, arch) -> {config field: value}``: the input
            geometry and the architecture in the config's own fields; ``arch``
            holds ``hidden_size, layers, heads, intermediate_size, patch_size, tubelet``.
        arch_fields: config fields that fix tensor shapes and names; a
            checkpoint whose config differs in one is refused, naming it.
        blocks: ``net -> [embeddings, layer 0, ..., layer L-1]``: the freezable
            blocks, input side first.
        head: state-dict prefixes of the classifier (always fresh).
        dropped: submodules the classifier never runs (V-JEPA 2's
            predictor); removed after loading, their file entries listed as unused.
        positions: a learned position table to resample when the run's
            geometry differs from the checkpoint's: ``(state-dict key,
            config dict -> (t, h, w) tubelet grid)``; None when positions are
            not learned.
    """

    display: str
    model_type: str
    model_class: str
    config_class: str
    input_name: str
    config: Callable[[int, int, dict], dict]
    arch_fields: tuple[str, ...]
    blocks: Callable
    head: tuple[str, ...] = ("classifier.",)
    dropped: tuple[str, ...] = ()
    positions: tuple[str, Callable] | None = None

    @property
    def skipped(self) -> tuple[str, ...]:
        """State-dict prefixes never loaded into the trained model: the head and the dropped parts."""
        return self.head + tuple(f"{m}." for m in self.dropped)


def encoder_fields(arch: dict) -> dict:
    """The config fields every family names alike: width, depth, heads (its ``config`` adds the rest)."""
    return {k: arch[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads")}


def arch_options(*, hidden_size: int, layers: int, heads: int, intermediate_size: int, patch_size: int,
                 tubelet: int) -> tuple[Option, ...]:  # fmt: skip
    """The encoder's size and patching as builder options (defaults: the released checkpoint's).

    Unset, each variant keeps its released size (``--help`` shows the first variant's).
    """
    return (
        Option("hidden_size", int, hidden_size, "width of the encoder (ViT-S 384, ViT-B 768, ViT-L 1024)"),
        Option("layers", int, layers, "transformer layers of the encoder (ViT-S/B 12, ViT-L 24)"),
        Option("heads", int, heads, "attention heads per layer, dividing --hidden-size (ViT-S 6, ViT-B 12, ViT-L 16)"),
        Option("intermediate_size", int, intermediate_size, "width of each layer's MLP (4 x --hidden-size released)"),
        Option("patch_size", int, patch_size, "tubelet side in pixels (--size must be a multiple)"),
        Option("tubelet", int, tubelet, "tubelet length in frames (--frames must be a multiple)"),
    )


def build_video_transformer(
    *,
    num_classes: int,
    family: HFFamily,
    # Input clip.
    frames: int = 20,
    size: int = 224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    # Architecture (the variant's released checkpoint; ModelSpec.kwargs / options set them).
    hidden_size: int = 768,
    layers: int = 12,
    heads: int = 12,
    intermediate_size: int = 3072,
    patch_size: int = 16,
    tubelet: int = 2,
    # Training.
    dropout: float = 0.0,
    freeze: int = 0,
    unfreeze_last: int | None = None,
    pretrained: str | None = None,
    pretrained_partial: bool = False,
    model_name: str = "",
):
    """A Hugging Face Transformers video classifier for ``num_classes`` on uint8 clips ``(B, frames, size, size, 3)``.

    Args:
        num_classes: outputs of the new classifier (always freshly initialised).
        family: the :class:`HFFamily` (ViViT, VideoMAE or V-JEPA 2).
        frames: clip length; a multiple of ``tubelet``.
        size: input side in pixels; a multiple of ``patch_size``.
        mean: per-channel mean on [0, 1] pixels (the registry passes the statistics the released weights expect).
        std: per-channel std on [0, 1] pixels.
        hidden_size: encoder width (ViT-S 384, ViT-B 768, ViT-L 1024).
        layers: transformer layers (12, or 24 for ViT-L).
        heads: attention heads per layer.
        intermediate_size: MLP width (4x ``hidden_size`` in the released models).
        patch_size: tubelet side in pixels (16 in the released models).
        tubelet: tubelet length in frames (2 in the released models).
        dropout: dropout on the classifier's input (the library's heads have
            none; a run's config sets it, 0.5 unless told).
        freeze: freeze the first K blocks: the patch embedding, then the transformer layers in order.
        unfreeze_last: train only the last K layers with weights of the
            network (linears and norms, in order); the classifier always trains.
        pretrained: a Hugging Face model folder of the same family and
            architecture (``config.json`` + ``model.safetensors``, e.g.
            ``hf download MCG-NJU/videomae-base-finetuned-kinetics
            --local-dir DIR``); its classifier is replaced, its input geometry
            adapted to ``frames``/``size`` (see the family modules).
        pretrained_partial: accept a folder that leaves parts of the network unloaded (listed in the report).
        model_name: registry name, for messages.

    Returns:
        A :class:`models._hf_video.HFVideoClassifier` producing logits, with
        ``pretrained_report`` (:func:`models._pretrained.pretrained_report`'s
        dict, or None without ``pretrained``).

    Raises:
        ValueError: a geometry the patching cannot cut evenly, ``freeze`` out
            of range, or a checkpoint of another family, architecture or
            incomplete; the message names what differs and what to pass.
        FileNotFoundError: no checkpoint folder, or one without ``config.json`` / weights.
    """
    from models._hf_video import build_hf_video

    arch = {"hidden_size": hidden_size, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": intermediate_size, "patch_size": patch_size, "tubelet": tubelet}  # fmt: skip
    return build_hf_video(
        family, num_classes=num_classes, frames=frames, size=size, mean=mean, std=std, arch=arch, dropout=dropout,
        freeze=freeze, unfreeze_last=unfreeze_last, pretrained=pretrained, pretrained_partial=pretrained_partial,
        model_name=model_name or family.model_type,
    )  # fmt: skip


def register_video_transformer(name: str, *, family: HFFamily, display: str, order: int, arch: dict, description: str,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD, tune_default: bool = True) -> None:
    """Register one released encoder of a family: ``arch`` (hidden_size, layers, heads, intermediate_size) is its size.

    Every variant shares the builder, the tuning space, 16² x 2-frame tubelets and the suite's 20 x 224² clips.
    """
    register_model(
        name,
        family=family.model_type,
        framework="torch",
        display=display,
        order=order,
        frames=20,
        size=224,
        mean=mean,
        std=std,
        space=TRANSFORMER_SPACE,
        tune_default=tune_default,
        options=arch_options(**arch, patch_size=16, tubelet=2),
        kwargs={"family": family, **arch, "model_name": name},
        description=description,
    )(build_video_transformer)
