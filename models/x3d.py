"""X3D XS/S/M/L from pytorchvideo, registered as ``x3d_xs``, ``x3d_s``, ``x3d_m``, ``x3d_l``.

Feichtenhofer, "X3D: Expanding Architectures for Efficient Video
Recognition", CVPR 2020. https://arxiv.org/abs/2004.04730

Only ``pytorchvideo.models.x3d`` is imported (its transforms break on current
torchvision), and through :mod:`models._torchvision_compat`, because
``pytorchvideo.models`` imports torchvision's ops. torch is imported inside
the builder, so ``import models`` stays cheap.

Unlike the seed project (which set ``model.fc``, an attribute the network
never calls, and kept a 400-class output), the classifier built here is the
head's own projection ``blocks[-1].proj`` with ``num_classes`` outputs, and
the head's pooling window is sized from the run's frames and crop.
"""

from __future__ import annotations

from models.registry import register_model

__all__ = ["build_x3d", "X3D_HEAD", "X3D_MEAN", "X3D_STD", "X3D_VARIANTS"]

# The X3D weights were trained on RGB normalised with mean 0.45 and std 0.225
# on every channel (PyTorch Hub's X3D page; PySlowFast's _C.DATA.MEAN/STD,
# which its X3D configs keep), not torchvision's Kinetics statistics.
X3D_MEAN = (0.45, 0.45, 0.45)
X3D_STD = (0.225, 0.225, 0.225)

# Paper / pytorchvideo-hub settings per variant: the clip the Kinetics
# weights were trained on, and the depth multiplier (the only architectural
# difference between XS, S and M; L is deeper).
X3D_VARIANTS = {
    "xs": {"clip_len": 4, "crop_px": 160, "depth_factor": 2.2},
    "s": {"clip_len": 13, "crop_px": 160, "depth_factor": 2.2},
    "m": {"clip_len": 16, "crop_px": 224, "depth_factor": 2.2},
    "l": {"clip_len": 16, "crop_px": 312, "depth_factor": 5.0},
}
# State-dict prefix of the classifier projection (fresh for num_classes).
X3D_HEAD = ("blocks.5.proj.",)
# Stem and stages stride 32 in space and 1 in time.
X3D_MIN_FRAMES = 1
X3D_MIN_SIZE = 32


def build_x3d(
    *,
    num_classes: int,
    # Input clip (sets the head's pooling window).
    frames: int = 13,
    size: int = 160,
    mean=X3D_MEAN,
    std=X3D_STD,
    # Architecture.
    depth_factor: float = 2.2,
    width_factor: float = 2.0,
    # Training.
    dropout: float = 0.5,
    freeze: int = 0,
    unfreeze_last: int | None = None,
    pretrained: str | None = None,
    pretrained_partial: bool = False,
    model_name: str = "x3d",
):
    """X3D for ``num_classes`` on uint8 clips ``(B, frames, size, size, 3)``.

    Args:
        num_classes: output columns (the projection ``blocks[-1].proj``).
        frames: clip length; the head pools over all of it (temporal stride 1).
        size: crop side in pixels (>= 32, the spatial stride).
        mean: per-channel mean on [0, 1] pixels (0.45, as the weights were trained).
        std: per-channel std on [0, 1] pixels (0.225).
        depth_factor: stage depth multiplier (XS/S/M 2.2, L 5.0).
        width_factor: channel multiplier (2.0 for every variant).
        dropout: dropout before the projection.
        freeze: freeze the first K of the 5 backbone blocks (stem, stages 1-4).
        unfreeze_last: train only the last K layers with weights of the
            backbone (convs and norms, in order); the projection always trains.
        pretrained_partial: accept a file that leaves backbone tensors unloaded.
        pretrained: local pytorchvideo X3D checkpoint of the same variant
            (``X3D_S.pyth``: a state dict, or one under ``model_state``);
            the projection stays fresh. PySlowFast's copies (keys under
            ``model.``) and files without BatchNorm's ``num_batches_tracked``
            load too.
        pretrained_partial: allow a ``pretrained`` file that holds only part
            of the backbone (recorded in the report); refused otherwise.
        model_name: registry name, for messages.

    Variants (paper clip, crop, depth): XS 4, 160, 2.2; S 13, 160, 2.2;
    M 16, 224, 2.2; L 16, 312, 5.0. The registry trains all at 20 frames, 224².

    Returns:
        A :class:`models._torch_video.ClipClassifier` producing logits, with
        ``pretrained_report`` (the :func:`models._torch_video.load_backbone`
        dict, or None without ``pretrained``).
    """
    from models._pretrained import check_partial
    from models._torch_video import ClipClassifier, check_input_size, load_backbone, unfreeze_last_layers
    from models._torchvision_compat import import_torchvision

    name = model_name
    check_input_size(name, frames=frames, size=size, min_frames=X3D_MIN_FRAMES, min_size=X3D_MIN_SIZE)
    check_partial(pretrained, pretrained_partial)
    if num_classes < 2:
        raise ValueError(f"{name} expected num_classes >= 2, received {num_classes}")
    if not 0 <= freeze <= 5:
        raise ValueError(f"{name} freeze expected 0..5 (stem and 4 stages), received {freeze}")
    import_torchvision()  # pytorchvideo.models imports torchvision.ops
    from pytorchvideo.models.x3d import create_x3d

    net = create_x3d(
        input_clip_length=frames,
        input_crop_size=size,
        model_num_class=num_classes,
        dropout_rate=dropout,
        depth_factor=depth_factor,
        width_factor=width_factor,
        # Logits out: the stock head ends in a softmax, which the loss would apply twice.
        head_activation=None,
    )
    report = (
        load_backbone(net, pretrained, head=X3D_HEAD, name=name, partial=pretrained_partial) if pretrained else None
    )
    frozen = list(net.blocks[:freeze])
    if unfreeze_last is not None:
        frozen += unfreeze_last_layers(net, unfreeze_last, head=X3D_HEAD, name=name)
    model = ClipClassifier(net, mean=mean, std=std, num_classes=num_classes, frozen=frozen)
    model.pretrained_report = report
    return model


def _register(order: int, variant: str) -> None:
    paper = X3D_VARIANTS[variant]
    name = f"x3d_{variant}"
    register_model(
        name,
        family="x3d",
        framework="torch",
        display=f"X3D-{variant.upper()}",
        order=order,
        frames=20,
        size=224,
        mean=X3D_MEAN,
        std=X3D_STD,
        # Stem + 4 stages (5 blocks).
        space={"freeze": {"kind": "int", "min": 0, "max": 4}},
        tune_default=variant == "s",
        # Its channel-wise 3x3x3 convolutions train about twice as fast on a CPU in channels_last_3d
        # (benchmarks/channels_last.py: X3D-XS 2.1x and X3D-S 2.3x at 8 x 8 x 32², both 2.1x at 4 x 16 x 112²).
        channels_last_cpu=True,
        description=f"X3D-{variant.upper()} (pytorchvideo); paper clip {paper['clip_len']}x{paper['crop_px']}²",
        kwargs={"depth_factor": paper["depth_factor"], "model_name": name},
    )(build_x3d)


for _i, _variant in enumerate(X3D_VARIANTS):
    _register(40 + _i, _variant)
