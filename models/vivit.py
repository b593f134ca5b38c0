"""ViViT (the unfactorised "spatio-temporal attention" model) from Hugging Face Transformers, registered as ``vivit``.

Arnab et al., "ViViT: A Video Vision Transformer", ICCV 2021.
https://arxiv.org/abs/2103.15691

The released Kinetics-400 checkpoint is ``google/vivit-b-16x2-kinetics400``
(ViT-B, tubelets of 2 frames x 16x16 px, 32 frames at 224²), converted from
Scenic by the library; ``--pretrained DIR`` takes a local copy of it
(``hf download google/vivit-b-16x2-kinetics400 --local-dir DIR``).

Input statistics: [-1, 1] (mean 0.5, std 0.5 on [0, 1] pixels). The
original Scenic model was trained on zero-centred [-1, 1] pixels with no
mean/std normalisation (the library's conversion script,
``convert_vivit_flax_to_pytorch.py``: "zero-centering = True in original
implementation", DMVR's normalisation "mean 0 and std 1 ... effectively no
normalization"). The released ``preprocessor_config.json`` asks for both
(``offset: true``, ``rescale_factor`` 1/127.5, then ``do_normalize`` with
``image_mean``/``image_std`` 0.5), which maps pixels to [-3, 1]; the suite
follows what the weights were trained on, not that double normalisation.

Geometry: ViViT's position embeddings are learned, one per tubelet of the
checkpoint's grid (16 x 14 x 14 for 32 frames at 224²). The suite's stores
hold 20 frames, so the table is resampled (trilinearly, [CLS] kept) to the
run's grid (10 x 14 x 14 at 20 frames, 224²) when the checkpoint is loaded;
the report lists it under ``adapted``. (The library's own
``interpolate_pos_encoding`` treats the whole table as one square spatial
grid, which fits images, not videos, so it is not used.)
"""

from __future__ import annotations

from models._hf_common import HFFamily, encoder_fields, register_video_transformer

__all__ = ["VIVIT", "VIVIT_MEAN", "VIVIT_STD"]

VIVIT_MEAN = (0.5, 0.5, 0.5)
VIVIT_STD = (0.5, 0.5, 0.5)


def _config(frames: int, size: int, arch: dict) -> dict:
    patch = arch["patch_size"]
    return {
        "num_frames": frames,
        "image_size": size,
        "tubelet_size": [arch["tubelet"], patch, patch],
        "intermediate_size": arch["intermediate_size"],
        **encoder_fields(arch),
    }


def _grid(config: dict) -> tuple[int, int, int]:
    """The tubelet grid (time, rows, columns) a config's position table covers."""
    t, p, q = config["tubelet_size"]
    side = config["image_size"]
    h, w = (side, side) if isinstance(side, int) else side
    return config["num_frames"] // t, h // p, w // q


VIVIT = HFFamily(
    display="ViViT",
    model_type="vivit",
    model_class="VivitForVideoClassification",
    config_class="VivitConfig",
    input_name="pixel_values",
    config=_config,
    arch_fields=("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "tubelet_size"),
    blocks=lambda net: [net.vivit.embeddings, *net.vivit.layers],
    positions=("vivit.embeddings.position_embeddings", _grid),
)

register_video_transformer(
    "vivit",
    family=VIVIT,
    display="ViViT-B",
    order=70,
    arch={"hidden_size": 768, "layers": 12, "heads": 12, "intermediate_size": 3072},
    mean=VIVIT_MEAN,
    std=VIVIT_STD,
    description="ViViT-B 16x2 (Hugging Face Transformers), [-1,1] input; --pretrained a local "
    "google/vivit-b-16x2-kinetics400 folder (position table resampled to the run's frames/size)",
)
