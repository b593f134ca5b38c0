"""Pose models (PyTorch) over the keypoint store: ``pose_lstm`` and ``pose_transformer``.

Both read MediaPipe Holistic keypoints (:mod:`wlasl.keypoint_store`: body 33,
left hand 21, right hand 21, a face subset of 24; K = 99 per frame) rather
than pixels, resampled by :mod:`wlasl.loader_pose` to a fixed number of
frames, as float32 ``(batch, frames, 99, 4)``: x, y in pixels, the
confidence, and the presence of the keypoint's part (see
:mod:`models._torch_pose` for the exact contract).

Normalisation lives inside the model, as the RGB models' does: its first
layer centres every clip on the shoulders' midpoint and divides by the
shoulder width (:func:`models._torch_pose.keypoint_features`), and zeroes
the keypoints of missing parts. So the loaders ship what the store holds
(in pixels), training, evaluation and any export share one implementation,
and an exported file takes the store's numbers with nothing to replicate.

Default frames: 50, what the WLASL paper's pose baselines (Pose-GRU,
Pose-TGCN; ``NUM_SAMPLES = 50`` in its TGCN configs) sample per video.
WLASL clips hold about 30-90 frames at 25-30 fps, so 50 keeps nearly every
frame of a typical clip and repeats a few of the short ones.

torch is imported inside the builders, so ``import models`` stays cheap.
"""

from __future__ import annotations

from models.registry import Option, register_model

__all__ = ["POSE_FRAMES", "build_pose_lstm", "build_pose_transformer"]

POSE_FRAMES = 50


def _check_common(name: str, *, num_classes, frames, size, freeze, unfreeze_last, pretrained) -> None:
    """The shared builder arguments a pose model cannot honour: each raises, naming the fix."""
    if num_classes < 2:
        raise ValueError(f"{name} expected num_classes >= 2, received {num_classes}")
    if frames < 2:
        raise ValueError(f"{name} expected frames >= 2 (it models motion), received {frames}")
    if size is not None:
        raise ValueError(f"{name} reads keypoints, not pixels: it has no input size, received size={size}; drop --size")
    if freeze or unfreeze_last is not None:
        raise ValueError(
            f"{name} is trained from scratch and has no backbone blocks to freeze, received freeze={freeze}, "
            f"unfreeze_last={unfreeze_last}; drop --freeze / --unfreeze-last"
        )
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights to load, received {pretrained!r}; drop --pretrained")


@register_model(
    "pose_lstm",
    family="pose",
    framework="torch",
    display="Pose-LSTM",
    order=60,
    frames=POSE_FRAMES,
    size=None,
    input="keypoints",
    # Nothing to freeze. Batch sizes stay the shared ones (4, 8, 16): a --dry-run study has
    # 8 clips, so larger choices would only fail its trials.
    space={"freeze": {"kind": "fixed", "value": 0}},
    options=(
        Option("hidden", int, 256, "LSTM units per layer"),
        Option("layers", int, 2, "stacked LSTM layers"),
        Option("bidirectional", bool, False, "read the frames in both directions"),
    ),
    description="stacked LSTM over per-frame MediaPipe keypoints (shoulder-normalised)",
)
def build_pose_lstm(
    *,
    num_classes: int,
    frames: int = POSE_FRAMES,
    size: int | None = None,
    mean=None,
    std=None,
    dropout: float = 0.5,
    freeze: int = 0,
    unfreeze_last: int | None = None,
    pretrained: str | None = None,
    pretrained_partial: bool = False,
    # ---- the network
    hidden: int = 256,
    layers: int = 2,
    bidirectional: bool = False,
):
    """A stacked LSTM over per-frame keypoint vectors, as the seed project's keypoint model.

    Each frame's 301 features (99 shoulder-normalised x, y; 99 confidences;
    4 part flags) enter the first LSTM layer; the top layer's final state
    (both directions' when bidirectional) goes through dropout to a linear
    classifier.

    Args:
        num_classes: output classes.
        frames: frames per clip (any length runs; this is what the loader gives).
        size: must be None (no pixels).
        mean: unused (keypoint models normalise by the shoulders).
        std: unused.
        dropout: between stacked layers and before the classifier.
        freeze: must be 0 (trained from scratch).
        unfreeze_last: must be None.
        pretrained: must be None (no released weights).
        pretrained_partial: unused.
        hidden: units per LSTM layer (256).
        layers: stacked layers (2).
        bidirectional: also read the frames backwards (False: the seed's causal reading).
    """
    name = "pose_lstm"
    _check_common(name, num_classes=num_classes, frames=frames, size=size, freeze=freeze,
                  unfreeze_last=unfreeze_last, pretrained=pretrained)  # fmt: skip
    if hidden < 1 or layers < 1:
        raise ValueError(f"{name} expected hidden >= 1 and layers >= 1, received hidden={hidden}, layers={layers}")
    from models._torch_pose import PoseLSTM

    model = PoseLSTM(num_classes=num_classes, hidden=hidden, layers=layers, bidirectional=bidirectional, dropout=dropout)
    model.pretrained_report = None
    return model


@register_model(
    "pose_transformer",
    family="pose",
    framework="torch",
    display="Pose-Transformer",
    order=61,
    frames=POSE_FRAMES,
    size=None,
    input="keypoints",
    space={"freeze": {"kind": "fixed", "value": 0}},
    tune_default=True,
    options=(
        Option("dim", int, 108, "model width (SPOTER: 108)"),
        Option("heads", int, 9, "attention heads; must divide dim (SPOTER: 9)"),
        Option("encoder_layers", int, 6, "encoder layers over the frames (SPOTER: 6)"),
        Option("decoder_layers", int, 6, "decoder layers of the class query (SPOTER: 6)"),
        Option("feedforward", int, 2048, "feed-forward width (SPOTER: 2048)"),
    ),
    description="SPOTER-style transformer (learned positions, class query) over MediaPipe keypoints",
)
def build_pose_transformer(
    *,
    num_classes: int,
    frames: int = POSE_FRAMES,
    size: int | None = None,
    mean=None,
    std=None,
    dropout: float = 0.5,
    freeze: int = 0,
    unfreeze_last: int | None = None,
    pretrained: str | None = None,
    pretrained_partial: bool = False,
    # ---- the network (SPOTER's values)
    dim: int = 108,
    heads: int = 9,
    encoder_layers: int = 6,
    decoder_layers: int = 6,
    feedforward: int = 2048,
):
    """A SPOTER-style transformer over the frames' keypoint vectors.

    Boháček and Hrúz, "Sign Pose-based Transformer for Word-level Sign
    Language Recognition", WACV Workshops 2022 (63.18 top-1 on WLASL100).
    As there: a learned positional embedding per frame, a transformer
    encoder over the frames, and a decoder in which one learned class query
    attends to the encoded frames (without self-attention), then a linear
    classifier. Unlike SPOTER, whose width is its input (54 joints x 2 =
    108), the 301 per-frame features here are first projected to ``dim``;
    the encoder layers are pre-norm (they train without a learning-rate
    warm-up, which the suite's policy does not have; see
    :class:`models._torch_pose.PoseTransformer`); and the normalisation is
    the shoulders' (SPOTER normalises body and hands separately).

    Args:
        num_classes: output classes.
        frames: frames per clip; the learned positions fix it (other lengths raise).
        size: must be None (no pixels).
        mean: unused (keypoint models normalise by the shoulders).
        std: unused.
        dropout: before the classifier (attention and feed-forward blocks use 0.1, as SPOTER).
        freeze: must be 0 (trained from scratch).
        unfreeze_last: must be None.
        pretrained: must be None (no released weights).
        pretrained_partial: unused.
        dim: model width (108).
        heads: attention heads, dividing ``dim`` (9).
        encoder_layers: encoder depth (6).
        decoder_layers: class-query decoder depth (6).
        feedforward: feed-forward width (2048).
    """
    name = "pose_transformer"
    _check_common(name, num_classes=num_classes, frames=frames, size=size, freeze=freeze,
                  unfreeze_last=unfreeze_last, pretrained=pretrained)  # fmt: skip
    if min(dim, heads, encoder_layers, decoder_layers, feedforward) < 1 or dim % heads:
        raise ValueError(
            f"{name} expected dim divisible by heads and every size >= 1, received dim={dim}, heads={heads}, "
            f"encoder_layers={encoder_layers}, decoder_layers={decoder_layers}, feedforward={feedforward}"
        )
    from models._torch_pose import PoseTransformer

    model = PoseTransformer(num_classes=num_classes, frames=frames, dim=dim, heads=heads, encoder_layers=encoder_layers,
                            decoder_layers=decoder_layers, feedforward=feedforward, dropout=dropout)  # fmt: skip
    model.pretrained_report = None
    return model
