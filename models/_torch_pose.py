"""The pose models' networks (PyTorch): keypoint normalisation, a stacked LSTM, a SPOTER-style transformer.

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

__all__ = ["FEATURES", "SHOULDERS", "KeypointInput", "PoseLSTM", "PoseTransformer", "keypoint_features"]

# MediaPipe Pose's left and right shoulder (body indices 11 and 12).
SHOULDERS = (11, 12)
# Per frame: x, y and c of every keypoint, then the presence of each part.
FEATURES = 3 * NUM_KEYPOINTS + len(PARTS)
_PART_STARTS = tuple(s.start for s in part_slices().values())
# Scale floor (in input units): a clip of one point (all at the centre) has zero spread.
_EPS = 1e-6


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

    Returns:
        ``[x, y] * K`` normalised, then ``c * K`` (zero where missing), then
        the presence of each of the 4 parts.
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
    return torch.cat([norm.flatten(2), conf * present, parts], dim=-1)


class KeypointInput(nn.Module):
    """The models' first layer: :func:`keypoint_features` (no weights), so every export carries it."""

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        return keypoint_features(keypoints)


class PoseLSTM(nn.Module):
    """Stacked LSTM over per-frame keypoint vectors; the last layer's final state feeds the classifier."""

    def __init__(self, *, num_classes: int, hidden: int, layers: int, bidirectional: bool, dropout: float):
        super().__init__()
        self.num_classes = num_classes
        self.normalise = KeypointInput()
        # Dropout between stacked layers as well as before the classifier.
        self.lstm = nn.LSTM(FEATURES, hidden, layers, batch_first=True, bidirectional=bidirectional,
                            dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.normalise(keypoints))
        # h: (layers * directions, B, hidden); the top layer's forward (and backward) final states.
        last = torch.cat([h[-2], h[-1]], dim=-1) if self.lstm.bidirectional else h[-1]
        return self.head(self.dropout(last))


class _QueryLayer(nn.Module):
    """A decoder layer for one learned query: cross-attention to the frames, then a feed-forward block.

    SPOTER's decoder drops the self-attention of the stock decoder layer: a
    single query has nothing else to attend to. Post-norm, as PyTorch's
    default transformer layers.
    """

    def __init__(self, dim: int, heads: int, feedforward: int, dropout: float):
        super().__init__()
        self.attend = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, feedforward), nn.ReLU(), nn.Dropout(dropout), nn.Linear(feedforward, dim))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        query = self.norm1(query + self.drop1(self.attend(query, memory, memory, need_weights=False)[0]))
        return self.norm2(query + self.drop2(self.ff(query)))


class PoseTransformer(nn.Module):
    """SPOTER-style: frames -> projection + learned positions -> encoder; a learned class query decodes them."""

    def __init__(self, *, num_classes: int, frames: int, dim: int, heads: int, encoder_layers: int,
                 decoder_layers: int, feedforward: int, dropout: float, attention_dropout: float = 0.1):  # fmt: skip
        super().__init__()
        self.num_classes, self.frames = num_classes, frames
        self.normalise = KeypointInput()
        self.embed = nn.Linear(FEATURES, dim)
        # One learned vector per frame slot, on the scale of the projected features (SPOTER draws
        # them from U[0, 1)): the class query starts by averaging the frames, and positions
        # drawn near zero would hide their order from it (it did not learn here with 0.02).
        self.position = nn.Parameter(torch.randn(1, frames, dim))
        # The learned class query, on that scale too: a near-zero query attends uniformly (an
        # average over the frames) and took about twice the epochs to break away from it.
        self.query = nn.Parameter(torch.randn(1, 1, dim))
        # Pre-norm encoder layers (SPOTER keeps PyTorch's post-norm): they train without the
        # learning-rate warm-up post-norm needs (Xiong et al., 2020), which the suite's policy
        # does not have. The query layers stay post-norm, so the classifier reads a normalised
        # vector. On the synthetic store (7 seeds, 12 epochs) this mix reached 100% test top-1
        # in 4-10 epochs; all post-norm (as SPOTER) in 8-12; all pre-norm on 3 seeds of 7.
        layer = nn.TransformerEncoderLayer(dim, heads, feedforward, dropout=attention_dropout, batch_first=True,
                                           norm_first=True)  # fmt: skip
        # No nested-tensor fast path: it warns with norm_first and changes nothing without padding.
        self.encoder = nn.TransformerEncoder(layer, encoder_layers, enable_nested_tensor=False)
        self.decoder = nn.ModuleList(
            _QueryLayer(dim, heads, feedforward, attention_dropout) for _ in range(decoder_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        features = self.normalise(keypoints)
        if features.shape[1] != self.frames:
            raise ValueError(
                f"this model was built for {self.frames} frames (its learned positions), received "
                f"{features.shape[1]}; build it with frames={features.shape[1]} or resample the clips"
            )
        memory = self.encoder(self.embed(features) + self.position)
        query = self.query.expand(features.shape[0], -1, -1)
        for layer in self.decoder:
            query = layer(query, memory)
        return self.head(self.dropout(query[:, 0]))
