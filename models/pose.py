"""Pose models (PyTorch) over the keypoint store: ``pose_linear``, ``pose_lstm`` and ``pose_transformer``.

All read MediaPipe Holistic keypoints (:mod:`wlasl.keypoint_store`: body 33,
left hand 21, right hand 21, a face subset of 24; K = 99 per frame) rather
than pixels, resampled by :mod:`wlasl.loader_pose` to a fixed number of
frames, as float32 ``(batch, frames, 99, 4)``: x, y in pixels, the
confidence, and the presence of the keypoint's part (see
:mod:`models._torch_pose` for the exact contract).

Normalisation lives inside the model, as the RGB models' does: its first
layer centres every clip on the shoulders' midpoint and divides by the
shoulder width, adds each hand's shape on the hand's own scale
(:func:`models._torch_pose.keypoint_features`), and zeroes the keypoints of
missing parts; the LSTM and the transformer then standardise every feature
(:class:`models._torch_pose.Standardise`). So the loaders ship what the store holds
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

__all__ = ["LINEAR_FRAMES", "POSE_FRAMES", "build_pose_linear", "build_pose_lstm", "build_pose_transformer"]

POSE_FRAMES = 50
# The linear baseline reads a fixed number of frames (one weight per frame and feature):
# 20, the RGB models' clip length, keeps its input (20 x 301 features) small against
# the few hundred training clips of a WLASL subset.
LINEAR_FRAMES = 20


# What every builder is passed (the engines build every family alike) that means nothing without pixels or
# released weights: a pose builder takes it as ``**backbone`` and :func:`_check_common` refuses a value set.
BACKBONE_ARGS = ("size", "mean", "std", "freeze", "unfreeze_last", "pretrained", "pretrained_partial")


def _check_common(name: str, *, num_classes: int, frames: int, backbone: dict) -> None:
    """The shared builder arguments a pose model cannot honour: each raises, naming the fix.

    ``mean``, ``std`` and ``pretrained_partial`` are ignored (no pixels; nothing to load).
    """
    unknown = sorted(set(backbone) - set(BACKBONE_ARGS))
    if unknown:
        raise TypeError(f"{name} expected builder arguments of its registry entry, received unknown {unknown}")
    if num_classes < 2:
        raise ValueError(f"{name} expected num_classes >= 2, received {num_classes}")
    if frames < 2:
        raise ValueError(f"{name} expected frames >= 2 (it models motion), received {frames}")
    size, freeze, unfreeze_last = backbone.get("size"), backbone.get("freeze", 0), backbone.get("unfreeze_last")
    if size is not None:
        raise ValueError(f"{name} reads keypoints, not pixels: it has no input size, received size={size}; drop --size")
    if freeze or unfreeze_last is not None:
        raise ValueError(
            f"{name} is trained from scratch and has no backbone blocks to freeze, received freeze={freeze}, "
            f"unfreeze_last={unfreeze_last}; drop --freeze / --unfreeze-last"
        )
    if backbone.get("pretrained"):
        raise ValueError(f"{name} has no pretrained weights to load, received {backbone['pretrained']!r}; drop --pretrained")


def _pose_model(name: str, **fields):
    """``register_model`` for a pose model: PyTorch, keypoint input, no pixel size, nothing to freeze.

    Tuning keeps the shared batch sizes (4, 8, 16): a ``--dry-run`` study has 8 clips, so larger
    choices would only fail its trials.
    """
    return register_model(name, family="pose", framework="torch", size=None, input="keypoints",
                          space={"freeze": {"kind": "fixed", "value": 0}}, **fields)  # fmt: skip


@_pose_model(
    "pose_linear",
    display="Pose-Linear",
    order=90,
    frames=LINEAR_FRAMES,
    description="linear classifier on standardised, shoulder-normalised keypoints: the floor a pose model must beat",
)
def build_pose_linear(
    *,
    num_classes: int,
    frames: int = LINEAR_FRAMES,
    dropout: float = 0.5,
    **backbone,
):
    """A linear classifier over every frame's keypoint features: the baseline of a pose table.

    The frames' features (the same 301 per frame as the other pose models:
    shoulder-normalised x, y, confidences, part flags) are concatenated,
    standardised with statistics gathered in training, and mapped to the
    classes by one linear layer, as a logistic regression would be. A pose
    model that does not beat it has learned nothing a linear model could not.

    Args:
        num_classes: output classes.
        frames: frames per clip, fixed by the weights (20).
        dropout: on the standardised features (regularises the ~6,000 weights per class).
        backbone: the RGB families' builder arguments (:data:`BACKBONE_ARGS`); none may be set.
    """
    name = "pose_linear"
    _check_common(name, num_classes=num_classes, frames=frames, backbone=backbone)
    from models._torch_pose import PoseLinear

    model = PoseLinear(num_classes=num_classes, frames=frames, dropout=dropout)
    model.pretrained_report = None
    return model


@_pose_model(
    "pose_lstm",
    display="Pose-LSTM",
    order=91,
    frames=POSE_FRAMES,
    options=(
        Option("hidden", int, 256, "LSTM units per layer"),
        Option("layers", int, 2, "stacked LSTM layers"),
        Option("bidirectional", bool, True, "read the frames in both directions"),
    ),
    description="stacked LSTM over per-frame MediaPipe keypoints (shoulder-normalised)",
)
def build_pose_lstm(
    *,
    num_classes: int,
    frames: int = POSE_FRAMES,
    dropout: float = 0.5,
    # ---- the network
    hidden: int = 256,
    layers: int = 2,
    bidirectional: bool = True,
    **backbone,
):
    """A stacked bidirectional LSTM over per-frame keypoint vectors, max-pooled over time.

    Each frame's features (shoulder-normalised x, y; confidences; part flags;
    both hands' shapes on their own scale), standardised, enter the first
    LSTM layer; the top layer's outputs, each unit's maximum over the frames,
    go through dropout to a linear classifier. The seed project's keypoint model read
    one direction and its last state; on real WLASL keypoints that fitted the
    training clips far slower and generalised worse (docs/pose.md).

    Args:
        num_classes: output classes.
        frames: frames per clip (any length runs; this is what the loader gives).
        dropout: between stacked layers and before the classifier.
        hidden: units per LSTM layer (256).
        layers: stacked layers (2).
        bidirectional: also read the frames backwards (True; False is the seed's causal reading).
        backbone: as :func:`build_pose_linear`'s.
    """
    name = "pose_lstm"
    _check_common(name, num_classes=num_classes, frames=frames, backbone=backbone)
    if hidden < 1 or layers < 1:
        raise ValueError(f"{name} expected hidden >= 1 and layers >= 1, received hidden={hidden}, layers={layers}")
    from models._torch_pose import PoseLSTM

    model = PoseLSTM(num_classes=num_classes, hidden=hidden, layers=layers, bidirectional=bidirectional, dropout=dropout)
    model.pretrained_report = None
    return model


@_pose_model(
    "pose_transformer",
    display="Pose-Transformer",
    order=92,
    frames=POSE_FRAMES,
    tune_default=True,
    # Real WLASL keypoints, 3 seeds, 60 epochs: val top-1 0.81 with 5 warm-up epochs, 0.77 without (docs/pose.md).
    warmup_epochs=5,
    options=(
        Option("dim", int, 128, "model width"),
        Option("heads", int, 8, "attention heads; must divide dim"),
        Option("layers", int, 3, "encoder layers over the frames"),
        Option("feedforward", int, 256, "feed-forward width"),
    ),
    description="transformer encoder over standardised MediaPipe keypoints, read out through a class token",
)
def build_pose_transformer(
    *,
    num_classes: int,
    frames: int = POSE_FRAMES,
    dropout: float = 0.5,
    # ---- the network
    dim: int = 128,
    heads: int = 8,
    layers: int = 3,
    feedforward: int = 256,
    **backbone,
):
    """A transformer encoder over the frames' keypoint vectors, sized for WLASL's few clips per sign.

    Each frame's features (as :func:`build_pose_lstm`'s), standardised, are
    projected to ``dim``, given a learned position, and a learned class token
    (Dosovitskiy et al., ViT, 2021) is put before them; pre-norm encoder
    layers attend over all of them, and the class token's output goes through
    dropout to a linear classifier. It replaces a SPOTER-sized model (6 + 6
    layers, 2,048-wide feed-forward, 5.9 M parameters, a decoder whose class
    query attends to the frames), which reached train top-1 0.11 on real
    WLASL keypoints in 60 epochs; this one (about 0.5 M) fits them (docs/pose.md).

    Args:
        num_classes: output classes.
        frames: frames per clip; the learned positions fix it (other lengths raise).
        dropout: before the classifier (attention and feed-forward blocks use 0.1).
        dim: model width (128).
        heads: attention heads, dividing ``dim`` (8).
        layers: encoder depth (3).
        feedforward: feed-forward width (256).
        backbone: as :func:`build_pose_linear`'s.
    """
    name = "pose_transformer"
    _check_common(name, num_classes=num_classes, frames=frames, backbone=backbone)
    if min(dim, heads, layers, feedforward) < 1 or dim % heads:
        raise ValueError(
            f"{name} expected dim divisible by heads and every size >= 1, received dim={dim}, heads={heads}, "
            f"layers={layers}, feedforward={feedforward}"
        )
    from models._torch_pose import PoseTransformer

    model = PoseTransformer(num_classes=num_classes, frames=frames, dim=dim, heads=heads, layers=layers,
                            feedforward=feedforward, dropout=dropout)  # fmt: skip
    model.pretrained_report = None
    return model
