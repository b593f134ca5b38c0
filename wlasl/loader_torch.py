"""PyTorch loaders over the clip store: whole uint8 batches from the host, augmentation on the device.

A worker builds a whole batch at a time (:class:`wlasl.batches.BatchReader`:
one read per clip straight into the batch buffer, which in a worker
process lives in shared memory, so handing it over copies nothing). A
training batch is ``(inputs, labels)`` with ``inputs`` a dict: uint8
``clips`` (the stored frames of each clip's window), ``index`` (each clip's
position in ``Loaders.ids["train"]``) and the sampling ``taps`` / ``weights``
of its random view. The engine moves it to the model's device and cuts the
views there with ``Loaders.augment`` (:func:`wlasl.augment.augment_torch`).
Evaluation batches are plain ``(uint8 clips, labels)``, centre view.

Augmentation is fresh every epoch yet reproducible: a clip's view is drawn
from ``(seed, epoch, index)``, and the epoch travels with the index (the
sampler yields ``(index, epoch)``), so persistent worker processes need no
epoch broadcast. The sampler also shards for DistributedDataParallel and
can start mid-epoch, which is how a preempted run resumes exactly. With
CUDA, batches are pinned (DataLoader ``pin_memory``) so the engine's
non-blocking copy overlaps the step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.core.config import RunConfig
from utils.core.distenv import dist_env
from wlasl.augment import augment_torch
from wlasl.batches import BatchReader
from wlasl.clip_store import ClipEntry, ClipStore, StoreError
from wlasl.transforms import Loaders

__all__ = ["ClipBatches", "EpochSampler", "limit_clips", "make_loaders"]


def _as_is(batch):
    """collate_fn: the dataset already returns whole batches."""
    return batch


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array)


class ClipBatches(Dataset):
    """One split's clips, served a batch at a time (``__getitems__``).

    Args:
        reader: the split's :class:`wlasl.batches.BatchReader`.
        train: training batches (random views, taps for the device) vs the centre view.
    """

    def __init__(self, reader: BatchReader, *, train: bool):
        self.reader, self.train = reader, train

    def __len__(self) -> int:
        return len(self.reader)

    def _out(self, n: int) -> np.ndarray | None:
        """The batch buffer: in shared memory inside a worker process (sent without a copy)."""
        if torch.utils.data.get_worker_info() is None:
            return None  # the reader allocates (reused heap memory, no page faults)
        r = self.reader
        hw = r.stored[1:] if self.train else (r.size, r.size)
        shape = (n, r.frames, *hw, 3)
        storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
        return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape).numpy()

    def __getitems__(self, items: list) -> tuple:
        """Items are ``(index, epoch)`` pairs (training) or indices; returns one batch."""
        pairs = [item if isinstance(item, tuple) else (item, 0) for item in items]
        indices = [i for i, _ in pairs]
        out = self._out(len(pairs))
        if not self.train:
            clips, labels = self.reader.eval_batch(indices, out)
            return _tensor(clips), _tensor(labels)
        epochs = {e for _, e in pairs}
        if len(epochs) != 1:
            raise ValueError(f"a batch mixes epochs {sorted(epochs)}; the sampler yields one epoch per pass")
        inputs, labels = self.reader.train_batch(indices, epochs.pop(), out)
        return {k: _tensor(v) for k, v in inputs.items()}, _tensor(labels)

    def __getitem__(self, item):
        """One clip as a batch of one (the DataLoader uses ``__getitems__``)."""
        return self.__getitems__([item])


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
        "collate_fn": _as_is,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": d.workers > 0,
        # Its own generator: DataLoader would otherwise draw worker seeds from
        # the global torch RNG, shifting dropout between a run and its resume.
        "generator": torch.Generator().manual_seed(seed),
    }

    def reader(split, **kw):
        return BatchReader(store, splits[split], frames=frames, size=size, **kw)

    train_set = ClipBatches(reader("train", seed=seed, crop_scale=d.crop_scale, flip=d.flip), train=True)
    sampler = EpochSampler(
        len(train_set), batch_size=d.batch_size, seed=seed, rank=rank, world=world, max_steps=cfg.train.steps_per_epoch
    )
    train = DataLoader(train_set, sampler=sampler, drop_last=True, **common)

    def evaluation(split):
        return DataLoader(ClipBatches(reader(split), train=False), shuffle=False, **common)

    return Loaders(
        train=train,
        train_eval=evaluation("train"),
        val=evaluation("val"),
        test=evaluation("test"),
        ids={split: [e.video_id for e in entries] for split, entries in splits.items()},
        num_classes=store.num_classes,
        glosses=list(store.labels),
        train_size=len(train_set),
        augment=augment_torch,
    )
