"""PyTorch loaders over the keypoint store, for the pose models (:mod:`models.pose`).

Each clip (any length T) is resampled to the model's ``frames`` and shipped
as float32 ``(frames, K, 4)``: x and y in pixels of the source frame (the
store's frame-relative coordinates times the row's width and height, so
both axes share one unit), the confidence, and the presence of the
keypoint's part (from the store's per-part mask). The model normalises
(relative to the shoulders) itself.

Augmentation at train time, all drawn from a generator seeded with
``(seed, epoch, index)`` as the RGB loaders do (the sampler yields
``(index, epoch)``), so it is fresh every epoch, the same in every worker
process, and a resumed run sees exactly the batches it would have seen:

- frame dropout: each frame is dropped with a probability drawn up to
  ``frame_dropout`` before resampling (missed detections, speed changes);
- a random phase of the resampling grid (which frames of a longer clip);
- a small rotation, shear, and a scale per axis. A uniform scale would be
  a no-op: the model divides by the shoulder width. Translation likewise;
- hand swap (mirror the pose, exchange left and right hands, body and face
  sides) only with ``--flip``: handedness carries meaning in ASL.

Evaluation takes every frame, a centred grid, no augmentation.

Keypoint clips are small (about 36 KB for 60 frames: WLASL100's ~2,000
clips hold ~70 MB, WLASL2000's ~21,000 ~0.8 GB), so :func:`make_loaders`
reads every clip of the run once, before the loader processes start (they
share the pages), instead of opening an ``.npz`` per sample and epoch
(~1 ms each, most of a small pose model's step on a CPU). Reading them up
front also checks every file before the first epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.core.config import RunConfig
from utils.core.distenv import dist_env
from wlasl.clip_store import StoreError
from wlasl.keypoint_store import (
    FACE_SUBSET,
    NUM_KEYPOINTS,
    PARTS,
    KeypointClip,
    KeypointEntry,
    KeypointStore,
    part_slices,
)
from wlasl.loader_torch import EpochSampler, SampledEpochs
from wlasl.transforms import Loaders, capped_splits

__all__ = ["MIRROR", "PART_OF", "KeypointDataset", "PoseAugment", "make_loaders", "read_clips", "sample_keypoints"]

# Which part (index into PARTS) each of the K keypoints belongs to.
PART_OF = np.repeat(np.arange(len(PARTS)), [n for _, n in PARTS])


def _mirror_permutation() -> np.ndarray:
    """Keypoint order after a horizontal mirror: left and right exchange their indices."""
    perm = np.arange(NUM_KEYPOINTS)
    s = part_slices()
    # MediaPipe Pose: 0 nose, then left/right pairs (eyes, ears, mouth, shoulders, elbows, wrists, hands, hips, legs).
    body_pairs = [(1, 4), (2, 5), (3, 6), (7, 8), (9, 10)] + [(k, k + 1) for k in range(11, 33, 2)]
    face = {v: i for i, v in enumerate(FACE_SUBSET)}
    # Face mesh left/right counterparts among the kept landmarks (eye corners, lids, brows, mouth corners, cheeks).
    face_pairs = [(33, 263), (133, 362), (159, 386), (145, 374), (70, 300), (105, 334), (107, 336), (61, 291), (234, 454)]
    pairs = [(s["body"].start + a, s["body"].start + b) for a, b in body_pairs]
    pairs += [(s["face"].start + face[a], s["face"].start + face[b]) for a, b in face_pairs]
    for a, b in pairs:
        perm[a], perm[b] = b, a
    left, right = np.arange(NUM_KEYPOINTS)[s["left_hand"]], np.arange(NUM_KEYPOINTS)[s["right_hand"]]
    perm[left], perm[right] = right, left
    return perm


MIRROR = _mirror_permutation()


@dataclass(frozen=True)
class PoseAugment:
    """Train-time keypoint augmentation (magnitudes; each clip draws its own values up to these).

    Attributes:
        rotation_deg: rotation drawn from [-r, r] degrees.
        shear: horizontal shear factor drawn from [-s, s].
        scale: per-axis scale drawn from [1 - s, 1 + s], independently for x and y.
        frame_dropout: each clip drops frames with a probability drawn from [0, p].
    """

    rotation_deg: float = 10.0
    shear: float = 0.1
    scale: float = 0.1
    frame_dropout: float = 0.2


def sample_keypoints(
    points: np.ndarray,
    present: np.ndarray,
    frames: int,
    *,
    width: int,
    height: int,
    rng: np.random.Generator | None = None,
    augment: PoseAugment = PoseAugment(),
    hand_swap: bool = False,
) -> np.ndarray:
    """One model input from a stored clip.

    Args:
        points: float16 ``(T, K, 3)`` from the store (x, y relative to the frame; c).
        present: bool ``(T, parts)``.
        frames: frames the model takes (T is resampled up or down to it).
        width: frame width in pixels (the manifest row's).
        height: frame height in pixels.
        rng: training randomness; None = evaluation (all frames, centred grid, no augmentation).
        augment: the magnitudes.
        hand_swap: mirror the pose with probability 1/2 (training only).

    Returns:
        float32 ``(frames, K, 4)``: x, y (pixels), c, part presence (0/1).
    """
    t = points.shape[0]
    keep = np.arange(t)
    phase = 0.5
    if rng is not None:
        drop = rng.random(t) < rng.uniform(0.0, augment.frame_dropout)
        if (~drop).sum() >= min(t, 2):  # never leave a clip without motion
            keep = keep[~drop]
        phase = rng.random()
    # A uniform grid of `frames` slots over the kept frames; each slot takes the frame it falls in.
    slots = np.minimum(((np.arange(frames) + phase) * len(keep) / frames).astype(np.int64), len(keep) - 1)
    src = keep[slots]
    out = np.empty((frames, NUM_KEYPOINTS, 4), np.float32)
    out[..., :3] = points[src]
    out[..., 0] *= width
    out[..., 1] *= height
    out[..., 3] = present[src][:, PART_OF]
    if rng is None:
        return out
    angle = np.deg2rad(rng.uniform(-augment.rotation_deg, augment.rotation_deg))
    cos, sin = np.cos(angle), np.sin(angle)
    shear = rng.uniform(-augment.shear, augment.shear)
    sx, sy = rng.uniform(1 - augment.scale, 1 + augment.scale, 2)
    swap = rng.random() < 0.5  # drawn either way, so --flip leaves the other draws unchanged
    # Linear, so missing keypoints (0, 0) stay at the origin; the model ignores them by their presence.
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    out[..., :2] = out[..., :2] @ matrix.T.astype(np.float32)
    if hand_swap and swap:
        out[..., 0] *= -1
        out = out[:, MIRROR]
    return out


class KeypointDataset(Dataset):
    """Clips of one split as ``(float32 (frames, K, 4), label)``.

    Args:
        store: the keypoint store.
        entries: the clips (one split, maybe limited).
        frames: frames the model takes.
        train: augmented (seeded per epoch and clip) vs the evaluation view.
        seed: run seed.
        hand_swap: mirror left and right at random (training only).
        augment: augmentation magnitudes.
        clips: ``{video_id: KeypointClip}`` already read (:func:`read_clips`); None reads each sample from the store.
    """

    def __init__(
        self,
        store: KeypointStore,
        entries: list[KeypointEntry],
        *,
        frames: int,
        train: bool,
        seed: int = 0,
        hand_swap: bool = False,
        augment: PoseAugment = PoseAugment(),
        clips: dict[str, KeypointClip] | None = None,
    ):
        self.store, self.entries = store, list(entries)
        self.frames, self.train, self.seed = frames, train, seed
        self.hand_swap, self.augment, self.clips = hand_swap, augment, clips

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        entry = self.entries[index]
        clip = self.clips[entry.video_id] if self.clips is not None else self.store.load(entry)
        rng = np.random.default_rng((self.seed, epoch, index)) if self.train else None
        out = torch.from_numpy(sample_keypoints(clip.points, clip.present, self.frames, width=entry.width,
                                                height=entry.height, rng=rng, augment=self.augment,
                                                hand_swap=self.hand_swap))  # fmt: skip
        if not self.train:
            return out, entry.label
        # The training batch contract of wlasl.transforms.Loaders: inputs by name, the clip's index riding along.
        return {"clips": out, "index": index}, entry.label


def _check_frame_sizes(store: KeypointStore, entries: list[KeypointEntry]) -> None:
    """Coordinates become pixels with the row's width and height: a row without them would distort every pose."""
    for e in entries:
        if e.width <= 0 or e.height <= 0:
            raise StoreError(
                f"{store.root / 'manifest.csv'}: video_id {e.video_id}: width and height expected > 0 (the frame "
                f"size its coordinates are relative to), received {e.width}x{e.height}; extract the store again"
            )


def read_clips(store: KeypointStore, entries) -> dict[str, KeypointClip]:
    """Every clip of ``entries``, read and checked once: ``{video_id: KeypointClip}``.

    Raises:
        StoreError: a clip's file is unreadable or does not match the layout (names it).
    """
    return {e.video_id: store.load(e) for e in entries}


def make_loaders(store: KeypointStore, cfg: RunConfig, *, augment: PoseAugment = PoseAugment()) -> Loaders:
    """Train / val / test DataLoaders of float32 keypoint batches for ``cfg`` (rank-aware under DDP).

    ``cfg.data.flip`` turns hand swap on; ``crop_scale`` (a pixel crop) does not apply.

    Raises:
        StoreError: a row without its frame size, a damaged clip, or too few training clips for one batch.
    """
    frames = cfg.model.frames
    if frames is None:
        raise ValueError("cfg.model.frames is unresolved; call models.train.resolve(cfg) first")
    rank, world, _ = dist_env()
    seed, d = cfg.train.seed, cfg.data
    splits = capped_splits(store, d.max_clips, seed)
    for entries in splits.values():
        _check_frame_sizes(store, entries)
    clips = read_clips(store, [e for entries in splits.values() for e in entries])
    common = {
        "batch_size": d.batch_size,
        "num_workers": d.workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": d.workers > 0,
        # Its own generator, as wlasl.loader_torch: worker seeds must not shift the global torch RNG.
        "generator": torch.Generator().manual_seed(seed),
    }
    train_set = KeypointDataset(store, splits["train"], frames=frames, train=True, seed=seed, hand_swap=d.flip,
                                augment=augment, clips=clips)  # fmt: skip
    sampler = EpochSampler(len(train_set), batch_size=d.batch_size, seed=seed, rank=rank, world=world)
    train = SampledEpochs(DataLoader(train_set, sampler=sampler, drop_last=True, **common), sampler)

    def evaluation(split):
        dataset = KeypointDataset(store, splits[split], frames=frames, train=False, clips=clips)
        return DataLoader(dataset, shuffle=False, **common)

    return Loaders.assemble(store, splits, train=train, evaluation=evaluation, augment=_to_device)


def _to_device(inputs: dict, device) -> torch.Tensor:
    """The keypoint batch on the model's device (its augmentation already ran per clip on the host)."""
    return inputs["clips"].to(device, non_blocking=True)
