"""tf.data loaders over the clip store: whole uint8 batches from the host, augmentation in the train step.

Each element of the pipeline is a whole batch, gathered by one
``tf.numpy_function`` call (:class:`wlasl.batches.BatchReader`: one read
per clip straight into the batch buffer; the reads release the GIL, so
``workers`` parallel calls overlap). Clips stay on disk as uint8 ``.npy``
files, so resident memory does not grow with the dataset (the seed project
held every clip as float32 in RAM and needed 100 GB jobs, and its
``cache()`` froze the "random" crop after epoch 1).

A training batch is ``(inputs, labels)`` with ``inputs`` a dict: uint8
``clips`` (the stored frames of each clip's window), ``index`` (each clip's
position in ``Loaders.ids["train"]``) and the ``boxes`` of their random
views; the Keras engine cuts the views inside its train step
with ``Loaders.augment`` (:func:`wlasl.augment.augment_tf`), on the GPU when
there is one. Evaluation batches are plain ``(uint8 clips, labels)``.

Training order and augmentation are a pure function of (seed, epoch, clip):
:meth:`TrainStream.epoch` gives the same batches for the same epoch in any
process, which makes a resumed run (even one stopped mid-epoch) repeat the
uninterrupted one.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from utils.core.tf_env import tf
from wlasl.augment import BOXES, CLIPS, INDEX, augment_tf
from wlasl.batches import BatchReader
from wlasl.clip_store import ClipStore
from wlasl.transforms import Loaders, capped_splits

__all__ = ["TrainStream", "eval_dataset", "make_loaders"]


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _pipeline(count: int, load, workers: int) -> tf.data.Dataset:
    # deterministic=True keeps batch order fixed whatever the thread timing,
    # so a run's history is reproducible; parallel batches still overlap.
    # workers 0 and 1 both gather one batch at a time, off the training thread
    # (a plain map, run by the prefetch thread, measured no faster).
    ds = tf.data.Dataset.range(count).map(load, num_parallel_calls=max(1, workers), deterministic=True)
    return ds.prefetch(max(2, workers))


class TrainStream:
    """The training split as one tf.data pipeline per epoch (shuffled; views cut by ``augment_tf``).

    Args:
        store: the clip store.
        entries: training clips.
        frames, size: model input.
        batch_size: clips per batch.
        workers: batches gathered in parallel.
        seed: run seed; order and augmentation derive from (seed, epoch, clip).
        crop_scale, flip: augmentation (see :func:`wlasl.augment.draw_view`).
    """

    def __init__(self, store, entries, *, frames, size, batch_size, workers, seed, crop_scale, flip):
        self.entries, self.frames, self.size = entries, frames, size
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.reader = BatchReader(store, entries, frames=frames, size=size, seed=seed, crop_scale=crop_scale, flip=flip)

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.entries) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.entries))

    def epoch(self, epoch: int, skip: int = 0, max_batches: int | None = None) -> tf.data.Dataset:
        """Batches ``skip`` .. ``max_batches`` (or the end) of ``epoch`` (0-based) (:class:`wlasl.transforms.TrainStream`)."""
        order = self.order(epoch)
        if max_batches is not None:
            order = order[: max_batches * self.batch_size]
        batches = _batches(order[skip * self.batch_size :], self.batch_size)
        h, w = self.reader.stored[1:]

        def gather(b):
            inputs, labels = self.reader.train_batch(batches[int(b)], epoch)
            return inputs[CLIPS], inputs[INDEX], inputs[BOXES], labels.astype(np.int32)

        def load(b):
            clips, index, box, labels = tf.numpy_function(
                gather, [b], [tf.uint8, tf.int64, tf.int32, tf.int32], stateful=False
            )
            clips.set_shape((None, self.frames, h, w, 3))
            index.set_shape((None,))
            box.set_shape((None, 5))
            labels.set_shape((None,))
            return {CLIPS: clips, INDEX: index, BOXES: box}, labels

        return _pipeline(len(batches), load, self.workers)

    def __iter__(self):
        return iter(self.epoch(0))


def eval_dataset(store, entries, *, frames, size, batch_size, workers) -> tf.data.Dataset:
    """Val / test batches: fixed order, centre window, whole frame at the model's size."""
    reader = BatchReader(store, entries, frames=frames, size=size)
    batches = _batches(np.arange(len(entries)), batch_size)

    def gather(b):
        clips, labels = reader.eval_batch(batches[int(b)])
        return clips, labels.astype(np.int32)

    def load(b):
        clips, labels = tf.numpy_function(gather, [b], [tf.uint8, tf.int32], stateful=False)
        clips.set_shape((None, frames, size, size, 3))
        labels.set_shape((None,))
        return clips, labels

    return _pipeline(len(batches), load, workers)


def make_loaders(store: ClipStore, cfg) -> Loaders:
    """Train / val / test pipelines for a RunConfig (``cfg.data.max_clips`` caps each split)."""
    frames, size = cfg.model.frames, cfg.model.size
    store.check_frames(frames)
    splits = capped_splits(store, cfg.data.max_clips, cfg.train.seed)
    common = {"frames": frames, "size": size, "batch_size": cfg.data.batch_size, "workers": cfg.data.workers}
    train = TrainStream(
        store, splits["train"], seed=cfg.train.seed, crop_scale=cfg.data.crop_scale, flip=cfg.data.flip, **common
    )
    return Loaders.assemble(store, splits, train=train, evaluation=lambda split: eval_dataset(store, splits[split], **common),
                            augment=partial(augment_tf, size=size))  # fmt: skip
