"""The pose models' networks (PyTorch): keypoint features, a linear baseline, an LSTM, a class-token transformer.

Imported lazily by :mod:`models.pose`'s builders, so ``import models`` never
pays for torch.

Input contract of every pose model: float32 ``(batch, frames, K, 4)``, the
keypoint store's layout (:mod:`wlasl.keypoint_store`: body 33, left hand 21,
right hand 21, face subset 24; K = 99) with channels

- ``x, y``: position in pixels of the source frame (any unit shared by both
  axes works: the normalisation below removes position and scale; the
  store's frame-relative coordinates times the row's width and height, as
  :mod:`wlasl.loader_pose` gives them);
- ``c``: the store's confidence (MediaPipe's visibility for body joints);
- ``p``: 1.0 when the keypoint's part (body, left hand, right hand, face) was
  found in that frame, else 0.0 (the store's presence mask, per keypoint).
"""

from __future__ import annotations

import torch
from torch import nn

from wlasl.keypoint_store import NUM_KEYPOINTS, PARTS, part_slices

__all__ = ["FEATURES", "SHOULDERS", "KeypointInput", "PoseLSTM", "PoseLinear", "PoseTransformer", "Standardise",
           "keypoint_features"]  # fmt: skip

# MediaPipe Pose's left and right shoulder (body indices 11 and 12).
SHOULDERS = (11, 12)
# MediaPipe Hands: the wrist (0) and the bases of the index, middle, ring and little fingers.
WRIST, KNUCKLES = 0, (5, 9, 13, 17)
_HANDS = (part_slices()["left_hand"], part_slices()["right_hand"])
HAND_POINTS = _HANDS[0].stop - _HANDS[0].start
# Per frame: x, y and c of every keypoint, the presence of each part, then each hand's shape (x, y).
FEATURES = 3 * NUM_KEYPOINTS + len(PARTS) + 2 * len(_HANDS) * HAND_POINTS
_PART_STARTS = tuple(s.start for s in part_slices().values())
# Scale floor (in input units): a clip of one point (all at the centre) has zero spread.
_EPS = 1e-6
POSITION_STD = 1.0


def keypoint_features(x: torch.Tensor) -> torch.Tensor:
    """Keypoints ``(B, T, K, 4)`` -> per-frame feature vectors ``(B, T, FEATURES)``, shoulder-normalised.

    Centre and scale come from the shoulders, once per clip: the centre is
    the mean shoulder midpoint and the scale the mean shoulder width over the
    frames whose body was found. Per clip rather than per frame, so the
    signer's own movement (leaning, a step) stays in the features and one
    frame's noisy shoulders cannot warp that frame. A clip without any body
    falls back to the mean and RMS spread of its present keypoints. Either
    way, moving or scaling the whole body leaves the features unchanged.
    Keypoints of missing parts are zero in the output, whatever they held.

    Each hand's shape comes once more, on its own scale: its 21 points
    relative to its wrist, divided by the mean wrist-to-knuckle distance of
    that frame. A hand spans about a third of the shoulder width, so in
    shoulder units a handshape (what most ASL signs differ by) is a few
    hundredths of a unit; on the hand's own scale it is of order one, and a
    model need not find it in the noise of the body's position.

    Returns:
        ``[x, y] * K`` normalised, then ``c * K`` (zero where missing), then
        the presence of each of the 4 parts, then ``[x, y] * 21`` of the left
        and of the right hand on the hand's own scale (zero where missing).
    """
    if x.dim() != 4 or tuple(x.shape[2:]) != (NUM_KEYPOINTS, 4):
        raise ValueError(
            f"expected keypoints (batch, frames, {NUM_KEYPOINTS}, 4) = x, y, confidence, part presence; "
            f"received shape {tuple(x.shape)}"
        )
    x = x.float()
    xy, conf, present = x[..., :2], x[..., 2], x[..., 3]
    weight = present.unsqueeze(-1)  # (B, T, K, 1)
    body = present[..., SHOULDERS[0]]  # (B, T): 1 where the body (and so both shoulders) was found
    left, right = xy[..., SHOULDERS[0], :], xy[..., SHOULDERS[1], :]
    n_body = body.sum(1)
    centre = (((left + right) / 2) * body.unsqueeze(-1)).sum(1) / n_body.clamp(min=1).unsqueeze(-1)
    scale = ((left - right).norm(dim=-1) * body).sum(1) / n_body.clamp(min=1)
    # Fallback for clips with no body (or coincident shoulders): the present points' own spread.
    n_points = present.sum((1, 2)).clamp(min=1)
    mean = (xy * weight).sum((1, 2)) / n_points.unsqueeze(-1)
    spread = ((((xy - mean[:, None, None]) ** 2).sum(-1) * present).sum((1, 2)) / n_points).sqrt()
    shoulders = (n_body > 0) & (scale > _EPS)
    centre = torch.where(shoulders.unsqueeze(-1), centre, mean)
    scale = torch.where(shoulders, scale, spread).clamp(min=_EPS)
    norm = (xy - centre[:, None, None]) / scale[:, None, None, None] * weight
    parts = present[..., list(_PART_STARTS)]
    shapes = [_hand_shape(xy[:, :, hand], present[:, :, hand.start]) for hand in _HANDS]
    return torch.cat([norm.flatten(2), conf * present, parts, *shapes], dim=-1)


def _hand_shape(hand: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """One hand's points ``(B, T, 21, 2)`` -> ``(B, T, 42)`` relative to the wrist, in wrist-to-knuckle units."""
    rel = hand - hand[:, :, WRIST : WRIST + 1]
    size = rel[:, :, list(KNUCKLES)].norm(dim=-1).mean(-1).clamp(min=_EPS)
    return (rel / size[..., None, None] * present[..., None, None]).flatten(2)


class Standardise(nn.Module):
    """Every feature to zero mean and unit variance, with statistics gathered in training (over clips and frames).

    Without it the pose networks did not even fit the training clips of real
    WLASL (train top-1 0.11-0.43 after 60 epochs): the features live on very
    different scales (hand coordinates vary by hundredths of a shoulder width,
    the legs by whole units, flags are 0/1), and a plain logistic regression,
    whose inputs were standardised, fitted them fully.
    """

    def __init__(self, features: int = FEATURES):
        super().__init__()
        self.norm = nn.BatchNorm1d(features, affine=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, t, n = features.shape
        return self.norm(features.reshape(b * t, n)).reshape(b, t, n)


class KeypointInput(nn.Module):
    """The models' first layer: :func:`keypoint_features` (no weights), so every export carries it."""

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        return keypoint_features(keypoints)


class PoseLinear(nn.Module):
    """A linear classifier on the flattened per-frame features: the honest floor of every pose table.

    The features of all ``frames`` frames (the same features the other pose
    models read) are standardised with statistics gathered while training (a
    batch norm without scale or shift: at evaluation a fixed affine map, so
    the model stays linear), then one linear layer gives the logits.
    """

    def __init__(self, *, num_classes: int, frames: int, dropout: float):
        super().__init__()
        self.num_classes, self.frames = num_classes, frames
        self.normalise = KeypointInput()
        self.standardise = nn.BatchNorm1d(frames * FEATURES, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(frames * FEATURES, num_classes)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        features = self.normalise(keypoints)
        if features.shape[1] != self.frames:
            raise ValueError(
                f"this model was built for {self.frames} frames (one weight per frame and feature), received "
                f"{features.shape[1]}; build it with frames={features.shape[1]} or resample the clips"
            )
        return self.head(self.dropout(self.standardise(features.flatten(1))))


class PoseLSTM(nn.Module):
    """Stacked (bidirectional) LSTM over standardised per-frame keypoint vectors, max-pooled over time, then a classifier."""

    def __init__(self, *, num_classes: int, hidden: int, layers: int, bidirectional: bool, dropout: float):
        super().__init__()
        self.num_classes = num_classes
        self.normalise = KeypointInput()
        self.standardise = Standardise()
        # Dropout between stacked layers as well as before the classifier.
        self.lstm = nn.LSTM(FEATURES, hidden, layers, batch_first=True, bidirectional=bidirectional,
                            dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.standardise(self.normalise(keypoints)))
        # Each unit's largest output over the frames rather than the last state: a sign is not at
        # the end of its clip, and the gradient reaches the frames that matter directly. On real
        # WLASL keypoints (3 seeds) the last state of a one-way LSTM did not fit the training
        # clips; the mean over frames reached val top-1 0.71, the maximum 0.75 (docs/pose.md).
        return self.head(self.dropout(out.amax(1)))


class PoseTransformer(nn.Module):
    """A transformer encoder over the frames, read out through a learned class token (as ViT and BERT)."""

    def __init__(self, *, num_classes: int, frames: int, dim: int, heads: int, layers: int, feedforward: int,
                 dropout: float, attention_dropout: float = 0.1):  # fmt: skip
        super().__init__()
        self.num_classes, self.frames = num_classes, frames
        self.normalise = KeypointInput()
        self.standardise = Standardise()
        self.embed = nn.Linear(FEATURES, dim)
        # Learned positions start at POSITION_STD, the order of the projected standardised frames,
        # so that the frames' order is visible from the first step; the class token starts at zero.
        self.position = nn.Parameter(torch.randn(1, frames, dim) * POSITION_STD)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        # Pre-norm layers (Xiong et al., 2020) start stably; the registry entry still warms the
        # learning rate up over 5 epochs, which took real-WLASL val top-1 from 0.77 to 0.81 (docs/pose.md).
        layer = nn.TransformerEncoderLayer(dim, heads, feedforward, dropout=attention_dropout, batch_first=True,
                                           norm_first=True)  # fmt: skip
        # No nested-tensor fast path: it warns with norm_first and changes nothing without padding.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        features = self.standardise(self.normalise(keypoints))
        if features.shape[1] != self.frames:
            raise ValueError(
                f"this model was built for {self.frames} frames (its learned positions), received "
                f"{features.shape[1]}; build it with frames={features.shape[1]} or resample the clips"
            )
        tokens = self.embed(features) + self.position
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.head(self.dropout(self.norm(self.encoder(tokens))[:, 0]))
