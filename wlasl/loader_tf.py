"""tf.data loaders over the clip store, for the Keras engine.

Clips stay on disk as memory-mapped uint8 ``.npy`` files; each element is
read and cut by :func:`wlasl.transforms.clip_transform` when the pipeline
asks for it, so resident memory does not grow with the dataset (the seed
project held every clip as float32 in RAM and needed 100 GB jobs, and its
``cache()`` froze the "random" crop after epoch 1).

Training order and augmentation are a pure function of (seed, epoch, clip):
:meth:`TrainStream.epoch` gives the same batches for the same epoch in any
process, which makes a resumed run (even one stopped mid-epoch) repeat the
uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from utils.core.tf_env import tf
from wlasl.clip_store import ClipEntry, ClipStore
from wlasl.transforms import Loaders, clip_transform

__all__ = ["TrainStream", "eval_dataset", "make_loaders"]


def _reader(entries: list[ClipEntry], store: ClipStore, frames: int, size: int, seed: int | None, crop_scale, flip):
    """A numpy function (index, epoch) -> uint8 clip; seed None = evaluation view."""

    def read(index, epoch):
        index, epoch = int(index), int(epoch)
        rng = None if seed is None else np.random.default_rng([seed, epoch, index])
        clip = store.load(entries[index])  # memory map: only the window's pages are read
        return clip_transform(clip, frames, size, rng=rng, crop_scale=tuple(crop_scale), flip=flip)

    return read


def _pipeline(indices: tf.data.Dataset, entries, read, frames, size, batch_size, workers, epoch, with_index=False):
    labels = tf.constant([e.label for e in entries], tf.int32)

    def load(i):
        clip = tf.numpy_function(read, [i, tf.constant(epoch, tf.int64)], tf.uint8, stateful=False)
        clip.set_shape((frames, size, size, 3))
        # Distillation runs also get the clip's index into ids["train"] (the soft-target row).
        return (clip, labels[i], i) if with_index else (clip, labels[i])

    # deterministic=True keeps batch order fixed whatever the thread timing,
    # so a run's history is reproducible; parallel reads still overlap.
    ds = indices.map(load, num_parallel_calls=max(1, workers), deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class TrainStream:
    """The training split as one tf.data pipeline per epoch (shuffled, augmented).

    Args:
        store: the clip store.
        entries: training clips.
        frames, size: model input.
        batch_size: clips per batch.
        workers: parallel reads.
        seed: run seed; order and augmentation derive from (seed, epoch, clip).
        crop_scale, flip: augmentation (see ``clip_transform``).
        index: batches are ``(clips, labels, clip indices into entries)`` (distillation).
    """

    def __init__(self, store, entries, *, frames, size, batch_size, workers, seed, crop_scale, flip, index=False):
        self.entries, self.frames, self.size, self.index = entries, frames, size, index
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self._read = _reader(entries, store, frames, size, seed, crop_scale, flip)

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.entries) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.entries))

    def epoch(self, epoch: int, skip_batches: int = 0, max_batches: int | None = None) -> tf.data.Dataset:
        """Batches of ``epoch`` (0-based), optionally skipping those already trained on."""
        order = self.order(epoch)
        if max_batches is not None:
            order = order[: max_batches * self.batch_size]
        order = order[skip_batches * self.batch_size :]
        indices = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
        return _pipeline(
            indices, self.entries, self._read, self.frames, self.size, self.batch_size, self.workers, epoch, self.index
        )

    def __iter__(self):
        return iter(self.epoch(0))


def eval_dataset(store, entries, *, frames, size, batch_size, workers) -> tf.data.Dataset:
    """Val / test batches: fixed order, centre window, whole frame resized."""
    read = _reader(entries, store, frames, size, None, (1.0, 1.0), False)
    indices = tf.data.Dataset.range(len(entries))
    return _pipeline(indices, entries, read, frames, size, batch_size, workers, 0)


def make_loaders(store: ClipStore, cfg) -> Loaders:
    """Train / val / test pipelines for a RunConfig (``cfg.data.max_clips`` caps each split)."""
    frames, size = cfg.model.frames, cfg.model.size
    store.check_frames(frames)
    limit = cfg.data.max_clips

    def take(split: str) -> list[ClipEntry]:
        entries = store.split(split)
        if limit is None or len(entries) <= limit:
            return entries
        # Keep classes mixed in dry runs: a seeded sample, not the first N rows.
        pick = np.sort(np.random.default_rng(cfg.train.seed).choice(len(entries), limit, replace=False))
        return [entries[i] for i in pick]

    train, val, test = take("train"), take("val"), take("test")
    common = {"frames": frames, "size": size, "batch_size": cfg.data.batch_size, "workers": cfg.data.workers}
    return Loaders(
        train=TrainStream(
            store, train, seed=cfg.train.seed, crop_scale=cfg.data.crop_scale, flip=cfg.data.flip,
            index=bool(cfg.train.teachers), **common,
        ),  # fmt: skip
        train_eval=eval_dataset(store, train, **common),
        val=eval_dataset(store, val, **common),
        test=eval_dataset(store, test, **common),
        ids={"train": [e.video_id for e in train], "val": [e.video_id for e in val], "test": [e.video_id for e in test]},
        num_classes=store.num_classes,
        glosses=list(store.labels),
        train_size=len(train),
    )
