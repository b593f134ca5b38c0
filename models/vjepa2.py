"""V-JEPA 2 ViT-L with its attentive-probe classifier from Hugging Face Transformers, registered as ``vjepa2``.

Assran et al., "V-JEPA 2: Self-Supervised Video Models Enable Understanding,
Prediction and Planning", 2025. https://arxiv.org/abs/2506.09985

``VJEPA2ForVideoClassification`` fits the suite's contract: a video in
(``pixel_values_videos``, ``(B, T, C, H, W)``), logits out, from an encoder,
an attentive pooler (learned query, cross-attention) and a linear
classifier. The released classifier folders, e.g.
``facebook/vjepa2-vitl-fpc16-256-ssv2`` (ViT-L, 16 frames at 256²,
Something-Something v2), load with ``--pretrained DIR``: encoder and pooler
from the file, the linear classifier fresh. The encoder-only folders
(``facebook/vjepa2-vitl-fpc64-256``) lack the pooler: they load with
``--pretrained-partial`` (the pooler then starts fresh, listed under ``left``).

The library's classifier also carries V-JEPA 2's self-supervised predictor,
which classification never runs; it is removed after loading (its file
entries are listed as unused), so it neither counts as parameters nor
reaches the optimizer.

Input statistics: ImageNet's, as the library's ``VJEPA2VideoProcessor``
normalises (``IMAGENET_DEFAULT_MEAN``/``STD``). Geometry: the encoder uses
3D rotary position encodings computed from the config, with no learned
table, so it is built for the run's frames and size (20 frames at 224² for
the suite's stores) and nothing needs resampling.
"""

from __future__ import annotations

from models._hf_common import HFFamily, encoder_fields, register_video_transformer

__all__ = ["VJEPA2"]


def _config(frames: int, size: int, arch: dict) -> dict:
    return {
        "frames_per_clip": frames,
        "crop_size": size,
        "patch_size": arch["patch_size"],
        "tubelet_size": arch["tubelet"],
        "mlp_ratio": arch["intermediate_size"] / arch["hidden_size"],
        **encoder_fields(arch),
    }


VJEPA2 = HFFamily(
    display="V-JEPA 2",
    model_type="vjepa2",
    model_class="VJEPA2ForVideoClassification",
    config_class="VJEPA2Config",
    input_name="pixel_values_videos",
    config=_config,
    arch_fields=("hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "patch_size", "tubelet_size"),
    blocks=lambda net: [net.vjepa2.encoder.embeddings, *net.vjepa2.encoder.layer],
    dropped=("vjepa2.predictor",),
)

register_video_transformer(
    "vjepa2",
    family=VJEPA2,
    display="V-JEPA 2 ViT-L",
    order=75,
    arch={"hidden_size": 1024, "layers": 24, "heads": 16, "intermediate_size": 4096},
    description="V-JEPA 2 ViT-L + attentive probe (Hugging Face Transformers), ImageNet statistics; "
    "--pretrained a local facebook/vjepa2-vitl-fpc16-256-ssv2 folder",
)
