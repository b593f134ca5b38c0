"""VideoMAE ViT-S and ViT-B from Hugging Face Transformers, registered as ``videomae_s`` and ``videomae_b``.

Tong et al., "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training", NeurIPS 2022. https://arxiv.org/abs/2203.12602

The released Kinetics-400 classifiers (16 frames at 224², tubelets of 2
frames x 16x16 px) are ``MCG-NJU/videomae-small-finetuned-kinetics`` and
``MCG-NJU/videomae-base-finetuned-kinetics``; ``--pretrained DIR`` takes a
local copy (``hf download MCG-NJU/videomae-base-finetuned-kinetics
--local-dir DIR``).

Input statistics: ImageNet's (mean 0.485, 0.456, 0.406; std 0.229, 0.224,
0.225 on [0, 1] pixels), as the released checkpoints' ``preprocessor_config.json``
sets them (``image_mean``/``image_std``, ``rescale_factor`` 1/255; the
library's class default would be 0.5/0.5, which is not what these weights saw).

Geometry: VideoMAE's position embeddings are fixed sin-cos ones computed
from the config (one per tubelet, in flattened time-row-column order), not
weights. The network is built for the run's frames and size: at 20 frames,
224² the first 8 tubelet steps get exactly the encodings the checkpoint was
trained with and the last 2 continue the same sequence; nothing is resampled.
"""

from __future__ import annotations

from models._hf_common import HFFamily, encoder_fields, register_video_transformer

__all__ = ["VIDEOMAE", "VIDEOMAE_VARIANTS"]

# The released checkpoints' encoders (ViT-S and ViT-B, 12 layers each).
VIDEOMAE_VARIANTS = {
    "s": {"hidden_size": 384, "layers": 12, "heads": 6, "intermediate_size": 1536},
    "b": {"hidden_size": 768, "layers": 12, "heads": 12, "intermediate_size": 3072},
}
_RELEASE = {"s": "MCG-NJU/videomae-small-finetuned-kinetics", "b": "MCG-NJU/videomae-base-finetuned-kinetics"}


def _config(frames: int, size: int, arch: dict) -> dict:
    return {
        "num_frames": frames,
        "image_size": size,
        "patch_size": arch["patch_size"],
        "tubelet_size": arch["tubelet"],
        "intermediate_size": arch["intermediate_size"],
        **encoder_fields(arch),
    }


VIDEOMAE = HFFamily(
    display="VideoMAE",
    model_type="videomae",
    model_class="VideoMAEForVideoClassification",
    config_class="VideoMAEConfig",
    input_name="pixel_values",
    config=_config,
    arch_fields=("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
                 "tubelet_size"),  # fmt: skip
    blocks=lambda net: [net.videomae.embeddings, *net.videomae.encoder.layer],
)

for _order, (_variant, _arch) in enumerate(VIDEOMAE_VARIANTS.items(), start=71):
    register_video_transformer(
        f"videomae_{_variant}",
        family=VIDEOMAE,
        display=f"VideoMAE-{_variant.upper()}",
        order=_order,
        arch=_arch,
        tune_default=_variant == "s",
        description=f"VideoMAE ViT-{_variant.upper()} (Hugging Face Transformers), ImageNet statistics; "
        f"--pretrained a local {_RELEASE[_variant]} folder",
    )
