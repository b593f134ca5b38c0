"""PyTorch loaders over the clip store: whole uint8 batches from the host, augmentation on the device.

A batch is gathered whole (:class:`wlasl.batches.BatchReader`: one read per
clip straight into the batch buffer) by ``workers`` threads that run ahead
of the training loop; file reads release the GIL, so threads overlap
without the worker processes and shared-memory hand-over of a
``DataLoader`` (a fresh shared-memory batch cost ~20 ms of page faults
here, more than reading it). With CUDA the buffer is pinned memory, so the
engine's non-blocking copy to the GPU overlaps the step.

A training batch is ``(inputs, labels)`` with ``inputs`` a dict: uint8
``clips`` (the stored frames of each clip's window), ``index`` (each clip's
position in ``Loaders.ids["train"]``) and the ``boxes`` of their random
views. The engine moves it to the model's device and cuts the views there
with ``Loaders.augment`` (:func:`wlasl.augment.augment_torch`).
Evaluation batches are plain ``(uint8 clips, labels)``, centre view.

Augmentation is fresh every epoch yet reproducible: a clip's view is drawn
from ``(seed, epoch, index)`` and the sampler yields ``(index, epoch)``. The
sampler also shards for DistributedDataParallel and can start mid-epoch,
which is how a preempted run resumes exactly.
"""

from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import torch

from utils.core.config import RunConfig
from utils.core.distenv import dist_env, per_process_batch
from wlasl.augment import CLIPS, augment_torch
from wlasl.batches import BatchReader
from wlasl.clip_store import ClipStore, StoreError
from wlasl.transforms import Loaders, capped_splits

__all__ = ["BatchStream", "ClipBatches", "EpochSampler", "SampledEpochs", "make_loaders"]


def _tensor(array) -> torch.Tensor:
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(array)


class ClipBatches:
    """One split's clips, served a whole batch at a time.

    Args:
        reader: the split's :class:`wlasl.batches.BatchReader`.
        train: training batches (random views, boxes for the device) vs the centre view.
    """

    def __init__(self, reader: BatchReader, *, train: bool):
        self.reader, self.train = reader, train

    def __len__(self) -> int:
        return len(self.reader)

    def _out(self, n: int) -> torch.Tensor | None:
        """Pinned memory with CUDA, else None (the reader's own buffer: reused heap, no page faults)."""
        if not torch.cuda.is_available():
            return None
        r = self.reader
        shape = (n, r.frames, *(r.stored[1:] if self.train else (r.size, r.size)), 3)
        # The caching host allocator hands a block out again only once its copies to the GPU are done.
        return torch.empty(shape, dtype=torch.uint8, pin_memory=True)

    def __getitems__(self, items: list) -> tuple:
        """Items are ``(index, epoch)`` pairs (training) or indices; returns one batch."""
        pairs = [item if isinstance(item, tuple) else (item, 0) for item in items]
        indices = [i for i, _ in pairs]
        out = self._out(len(pairs))
        buffer = None if out is None else out.numpy()  # the reader fills it through numpy
        if not self.train:
            clips, labels = self.reader.eval_batch(indices, buffer)
            return (_tensor(clips) if out is None else out), _tensor(labels)
        epochs = {e for _, e in pairs}
        if len(epochs) != 1:
            raise ValueError(f"a batch mixes epochs {sorted(epochs)}; the sampler yields one epoch per pass")
        inputs, labels = self.reader.train_batch(indices, epochs.pop(), buffer)
        if out is not None:
            inputs[CLIPS] = out  # the pinned tensor itself, not a numpy view of it
        return {k: _tensor(v) for k, v in inputs.items()}, _tensor(labels)


class BatchStream:
    """Batches of ``dataset`` in ``sampler`` order, gathered by ``workers`` threads ahead of the consumer.

    Args:
        dataset: a :class:`ClipBatches`.
        sampler: an iterable of items (:class:`EpochSampler`, or a range for evaluation).
        batch_size: items per batch.
        workers: threads (0: each batch is gathered when asked for).
        drop_last: drop a last partial batch.
    """

    def __init__(self, dataset: ClipBatches, sampler, *, batch_size: int, workers: int, drop_last: bool):
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.workers, self.drop_last = batch_size, workers, drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _chunks(self):
        items = list(self.sampler)
        for s in range(0, len(items), self.batch_size):
            chunk = items[s : s + self.batch_size]
            if len(chunk) == self.batch_size or not self.drop_last:
                yield chunk

    def __iter__(self):
        if self.workers == 0:
            for chunk in self._chunks():
                yield self.dataset.__getitems__(chunk)
            return
        # Two batches in flight per thread keep every thread busy; order is the sampler's.
        pool, pending = ThreadPoolExecutor(self.workers, thread_name_prefix="clip-batches"), deque()
        try:
            for chunk in self._chunks():
                pending.append(pool.submit(self.dataset.__getitems__, chunk))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # also when the consumer stops early (preemption): no thread outlives the epoch
            pool.shutdown(wait=True, cancel_futures=True)


class SampledEpochs:
    """A training stream over an :class:`EpochSampler` (:class:`wlasl.transforms.TrainStream`).

    Args:
        batches: iterates the batches of the sampler's current epoch (a :class:`BatchStream`,
            a ``DataLoader``) in sampler order.
        sampler: the :class:`EpochSampler` it draws from.
    """

    def __init__(self, batches, sampler: EpochSampler):
        self.batches, self.sampler = batches, sampler

    def __len__(self) -> int:
        """Batches in a full epoch."""
        return self.sampler.steps

    def __iter__(self):
        """The batches of the sampler's current epoch (:meth:`EpochSampler.set_epoch`)."""
        return iter(self.batches)

    @property
    def dataset(self):
        return self.batches.dataset

    def epoch(self, epoch: int, skip: int = 0, max_batches: int | None = None):
        """Batches ``skip`` .. ``max_batches`` (or the end) of ``epoch``: a resumed epoch goes on where it stopped."""
        self.sampler.set_epoch(epoch, skip)
        if max_batches is None:
            return iter(self.batches)
        return itertools.islice(self.batches, max(0, max_batches - skip))


class EpochSampler:
    """Training order: a seeded permutation per epoch, this rank's share, from a given step.

    Yields ``(index, epoch)``. Every rank gets the same number of full
    batches (the permutation is cut to a multiple of ``world * batch_size``),
    so DDP ranks never wait on each other at the end of an epoch.

    Args:
        n: dataset size.
        batch_size: this process's share of the batch.
        seed: run seed.
        rank: this process.
        world: processes.
    """

    def __init__(self, n: int, *, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.steps = n // (batch_size * world)
        if self.steps == 0:
            raise StoreError(
                f"{n} training clips do not fill one batch of {batch_size * world} (--batch-size, over {world} "
                f"process(es)); lower --batch-size or add clips"
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


def make_loaders(store: ClipStore, cfg: RunConfig) -> Loaders:
    """Train / val / test batch streams of uint8 clips for ``cfg`` (rank-aware under DDP).

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
    batch = per_process_batch(d.batch_size, world)  # --batch-size is the global batch (utils.core.distenv)
    splits = capped_splits(store, d.max_clips, seed)

    def reader(split, **kw):
        return BatchReader(store, splits[split], frames=frames, size=size, **kw)

    train_set = ClipBatches(reader("train", seed=seed, crop_scale=d.crop_scale, flip=d.flip), train=True)
    sampler = EpochSampler(len(train_set), batch_size=batch, seed=seed, rank=rank, world=world)
    train = SampledEpochs(BatchStream(train_set, sampler, batch_size=batch, workers=d.workers, drop_last=True), sampler)

    def evaluation(split):  # every process evaluates the whole split, a process's batch at a time
        data = ClipBatches(reader(split), train=False)
        return BatchStream(data, range(len(data)), batch_size=batch, workers=d.workers, drop_last=False)

    return Loaders.assemble(store, splits, train=train, evaluation=evaluation, augment=partial(augment_torch, size=size))
