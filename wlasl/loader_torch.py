"""PyTorch loaders over the memory-mapped clip store.

Each sample is read through a memory map (only the frames of the temporal
window are touched) and cut by :func:`wlasl.transforms.clip_transform`, the
augmentation the tf.data loader shares. Batches stay uint8; the model
converts and normalises on its device.

Augmentation is fresh every epoch yet reproducible: a sample's generator is
seeded from ``(seed, epoch, index)``, and the epoch travels with the index
(the sampler yields ``(index, epoch)``), so persistent worker processes need
no epoch broadcast. The sampler also shards for DistributedDataParallel and
can start mid-epoch, which is how a preempted run resumes exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.core.config import RunConfig
from utils.core.distenv import dist_env
from wlasl.clip_store import ClipEntry, ClipStore, StoreError
from wlasl.transforms import Loaders, clip_transform

__all__ = ["ClipDataset", "EpochSampler", "limit_clips", "make_loaders"]


class ClipDataset(Dataset):
    """Clips of one split as ``(uint8 (frames, size, size, 3), label)``.

    Args:
        store: the clip store.
        entries: the clips (one split, maybe limited).
        frames: frames the model takes.
        size: input side.
        train: random window / crop / flip (seeded per epoch and clip) vs the centre view.
        seed: run seed.
        crop_scale: area share range of the random resized crop.
        flip: random horizontal flip.
        index: also yield the clip's index into ``entries`` (distillation
            runs look their soft targets up by it).
    """

    def __init__(
        self,
        store: ClipStore,
        entries: list[ClipEntry],
        *,
        frames: int,
        size: int,
        train: bool,
        seed: int = 0,
        crop_scale=(0.7, 1.0),
        flip: bool = False,
        index: bool = False,
    ):
        self.store, self.entries, self.index = store, list(entries), index
        self.frames, self.size, self.train = frames, size, train
        self.seed, self.crop_scale, self.flip = seed, tuple(crop_scale), flip

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        entry = self.entries[index]
        clip = self.store.load(entry)  # memory map: pages are read on touch
        if clip.shape[0] < self.frames:
            raise StoreError(
                f"{entry.path} holds {clip.shape[0]} frames, the model takes {self.frames}; preprocess again"
            )
        rng = np.random.default_rng((self.seed, epoch, index)) if self.train else None
        out = clip_transform(clip, self.frames, self.size, rng, crop_scale=self.crop_scale, flip=self.flip)
        if not out.flags.writeable:  # an uncropped centre view is still a view of the memory map
            out = out.copy()
        return (torch.from_numpy(out), entry.label, index) if self.index else (torch.from_numpy(out), entry.label)


class EpochSampler(Sampler):
    """Training order: a seeded permutation per epoch, this rank's share, from a given step.

    Yields ``(index, epoch)``. Every rank gets the same number of full
    batches (the permutation is cut to a multiple of ``world * batch_size``),
    so DDP ranks never wait on each other at the end of an epoch.

    Args:
        n: dataset size.
        batch_size: per-rank batch.
        seed: run seed.
        rank: this process.
        world: processes.
        max_steps: cap on steps per epoch (None = all full batches).
    """

    def __init__(
        self, n: int, *, batch_size: int, seed: int, rank: int = 0, world: int = 1, max_steps: int | None = None
    ):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        steps = n // (batch_size * world)
        self.steps = min(steps, max_steps) if max_steps else steps
        if self.steps == 0:
            raise StoreError(
                f"{n} training clips do not fill one batch of {batch_size} on each of {world} process(es); "
                f"lower --batch-size or add clips"
            )
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Order of ``epoch``, skipping the ``start_step`` batches a resumed run already did."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.batch_size

    def __iter__(self):
        order = np.random.default_rng((self.seed, self.epoch, 7919)).permutation(self.n)
        mine = order[: self.steps * self.batch_size * self.world][self.rank :: self.world]
        for index in mine[self.start_step * self.batch_size :]:
            yield int(index), self.epoch


def limit_clips(entries: list[ClipEntry], max_clips: int | None, seed: int) -> list[ClipEntry]:
    """At most ``max_clips`` entries, a seeded sample in manifest order (a prefix would be one class)."""
    if not max_clips or len(entries) <= max_clips:
        return list(entries)
    keep = np.sort(np.random.default_rng(seed).choice(len(entries), max_clips, replace=False))
    return [entries[i] for i in keep]


def make_loaders(store: ClipStore, cfg: RunConfig) -> Loaders:
    """Train / val / test DataLoaders of uint8 batches for ``cfg`` (rank-aware under DDP).

    Raises:
        StoreError: the store holds fewer frames than the model takes, or too
            few training clips for one batch.
    """
    frames, size = cfg.model.frames, cfg.model.size
    if frames is None or size is None:
        raise ValueError("cfg.model.frames/size are unresolved; call models.train.resolve(cfg) first")
    store.check_frames(frames)
    rank, world, _ = dist_env()
    seed, d = cfg.train.seed, cfg.data
    splits = {s: limit_clips(store.split(s), d.max_clips, seed) for s in ("train", "val", "test")}
    common = {
        "batch_size": d.batch_size,
        "num_workers": d.workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": d.workers > 0,
        # Its own generator: DataLoader would otherwise draw worker seeds from
        # the global torch RNG, shifting dropout between a run and its resume.
        "generator": torch.Generator().manual_seed(seed),
    }
    # A distillation run's batches carry each clip's index into ids["train"] (the soft-target row).
    train_set = ClipDataset(
        store, splits["train"], frames=frames, size=size, train=True, seed=seed, crop_scale=d.crop_scale, flip=d.flip,
        index=bool(cfg.train.teachers),
    )  # fmt: skip
    sampler = EpochSampler(
        len(train_set), batch_size=d.batch_size, seed=seed, rank=rank, world=world, max_steps=cfg.train.steps_per_epoch
    )
    train = DataLoader(train_set, sampler=sampler, drop_last=True, **common)

    def evaluation(split):
        return DataLoader(
            ClipDataset(store, splits[split], frames=frames, size=size, train=False), shuffle=False, **common
        )

    return Loaders(
        train=train,
        train_eval=evaluation("train"),
        val=evaluation("val"),
        test=evaluation("test"),
        ids={split: [e.video_id for e in entries] for split, entries in splits.items()},
        num_classes=store.num_classes,
        glosses=list(store.labels),
        train_size=len(train_set),
    )
