"""S3D (separable 3D Inception) from torchvision, registered as ``s3d``.

Xie et al., "Rethinking Spatiotemporal Feature Learning: Speed-Accuracy
Trade-offs in Video Classification", ECCV 2018. https://arxiv.org/abs/1712.04851

torch is imported inside the builder, so ``import models`` stays cheap.
"""

from __future__ import annotations

from models.registry import KINETICS_MEAN, KINETICS_STD, register_model

__all__ = ["build_s3d", "S3D_HEAD", "S3D_MIN_FRAMES", "S3D_MIN_SIZE"]

# State-dict prefix of the classifier (replaced for num_classes, never loaded).
S3D_HEAD = ("classifier.",)
# Total strides of ``features``: 8 in time, 32 in space.
S3D_MIN_FRAMES = 8
S3D_MIN_SIZE = 32


@register_model(
    "s3d",
    family="s3d",
    framework="torch",
    display="S3D",
    order=30,
    frames=20,
    size=224,
    # torchvision trained its S3D weights with its Kinetics statistics.
    mean=KINETICS_MEAN,
    std=KINETICS_STD,
    # Separable Inception, same block layout as I3D.
    space={"freeze": {"kind": "int", "min": 0, "max": 4}, "batch_size": {"kind": "choice", "values": [4, 8]}},
    tune_default=True,
    # Its training step on a CPU in channels_last_3d (benchmarks/channels_last.py): 1.4x faster at
    # 4 x 16 x 112², the same at 8 x 8 x 32².
    channels_last_cpu=True,
    description="S3D (torchvision), Kinetics-400 weights loadable from a local file",
)
def build_s3d(
    *,
    num_classes: int,
    # Input clip.
    frames: int = 20,
    size: int = 224,
    mean=KINETICS_MEAN,
    std=KINETICS_STD,
    # Training.
    dropout: float = 0.5,
    freeze: int = 0,
    unfreeze_last: int | None = None,
    pretrained: str | None = None,
    pretrained_partial: bool = False,
):
    """S3D for ``num_classes`` on uint8 clips ``(B, frames, size, size, 3)``.

    Args:
        num_classes: output columns.
        frames: clip length (>= 8, the temporal stride).
        size: input side in pixels (>= 32, the spatial stride).
        mean: per-channel mean on [0, 1] pixels (torchvision's Kinetics statistics).
        std: per-channel std on [0, 1] pixels.
        dropout: dropout before the 1x1x1 classifier conv.
        freeze: freeze the first K of the 16 layers of ``features``
            (stem convs, pools, Inception blocks; 0 = train all).
        unfreeze_last: train only the last K layers with weights of the
            backbone (convs and norms, in order); the classifier always trains.
        pretrained: local torchvision S3D state dict (``s3d-d76dad2f.pth``,
            Kinetics-400); loaded into the backbone, the classifier stays fresh.
        pretrained_partial: allow a ``pretrained`` file that holds only part
            of the backbone (recorded in the report); refused otherwise.

    Returns:
        A :class:`models._torch_video.ClipClassifier` producing logits, with
        ``pretrained_report`` (the :func:`models._torch_video.load_backbone`
        dict, or None without ``pretrained``).
    """
    from torch import nn

    from models._pretrained import check_partial
    from models._torch_video import ClipClassifier, check_input_size, load_backbone, unfreeze_last_layers
    from models._torchvision_compat import import_torchvision

    check_input_size("s3d", frames=frames, size=size, min_frames=S3D_MIN_FRAMES, min_size=S3D_MIN_SIZE)
    check_partial(pretrained, pretrained_partial)
    if num_classes < 2:
        raise ValueError(f"s3d expected num_classes >= 2, received {num_classes}")
    video = import_torchvision().models.video
    net = video.s3d(weights=None, num_classes=num_classes, dropout=dropout)
    n_layers = len(net.features)
    if not 0 <= freeze <= n_layers:
        raise ValueError(f"s3d freeze expected 0..{n_layers} (layers of features), received {freeze}")
    # torchvision pools with a fixed (2, 7, 7) window (stride 1) sized for
    # 224² and >= 14 frames. A global average has no weights either, so
    # Kinetics weights still load; at 224² it is the same spatial pool, and
    # it lets any frames/size >= the strides through (tests use 32 px).
    net.avgpool = nn.AdaptiveAvgPool3d(1)
    report = (
        load_backbone(net, pretrained, head=S3D_HEAD, name="s3d", partial=pretrained_partial) if pretrained else None
    )
    frozen = list(net.features[:freeze])
    if unfreeze_last is not None:
        frozen += unfreeze_last_layers(net, unfreeze_last, head=S3D_HEAD, name="s3d")
    model = ClipClassifier(net, mean=mean, std=std, num_classes=num_classes, frozen=frozen)
    model.pretrained_report = report
    return model
