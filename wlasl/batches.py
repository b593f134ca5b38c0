"""Host side of both loaders: whole batches of uint8 clip windows, one read per clip.

A batch is gathered straight into one buffer: each clip's temporal window
(contiguous in a C-order ``.npy``) is read from the page cache into its
slot of the batch with a single ``readinto``; no per-clip array, no stack,
no per-clip augmentation. The file's layout (data offset, shape, dtype)
comes from the store's own memory map (:meth:`ClipStore.load`), read once
per clip and kept. Reading instead of copying out of the memory map: the
map faults every 4 KiB page in on first touch, which made the copy about
half as fast on this machine (1,600 vs 4,300 clips/s at 172², batch 8).
File reads release the GIL, so threads overlap (tf.data's parallel map).

Training batches carry, beside the clips, each clip's position in the
split (``index``) and the box of its view (:mod:`wlasl.augment`); the crop
and resize run on the device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wlasl.augment import BOXES, CLIPS, INDEX, boxes, centre_view, clip_rng, draw_view
from wlasl.clip_store import ClipEntry, ClipStore, StoreError
from wlasl.transforms import clip_transform

__all__ = ["BatchReader"]


class BatchReader:
    """Reads batches of one split's clips (the framework loaders wrap it).

    Args:
        store: the clip store.
        entries: the split's clips (maybe limited); batch indices refer to this list.
        frames: frames the model takes.
        size: input side of the model.
        seed: run seed (training views derive from ``(seed, epoch, index)``).
        crop_scale: area share range of the random resized crop.
        flip: random horizontal flip.
    """

    def __init__(self, store: ClipStore, entries: list[ClipEntry], *, frames: int, size: int, seed: int = 0,
                 crop_scale=(0.7, 1.0), flip: bool = False):  # fmt: skip
        self.store, self.entries = store, list(entries)
        self.frames, self.size, self.seed = frames, size, seed
        self.crop_scale, self.flip = tuple(crop_scale), flip
        self.stored = (store.frames, store.size, store.size)  # what every clip of the store holds
        self.labels = np.array([e.label for e in self.entries], np.int64)
        self._layout: dict[int, tuple[int, int]] = {}  # index -> (data offset, stored frames)

    def __len__(self) -> int:
        return len(self.entries)

    def _clip_layout(self, index: int) -> tuple[int, int]:
        """Data offset and frame count of a clip (read once; the store checks its dtype and shape)."""
        if index not in self._layout:
            entry = self.entries[index]
            clip = self.store.load(entry)  # StoreError naming the file when it is not a clip of this store
            if not clip.flags.c_contiguous:  # a window is one contiguous read only in C order
                raise StoreError(
                    f"{entry.path}: expected a C-order array (as main/preprocess.py writes), received a Fortran-order "
                    f"one; delete it and rerun main/preprocess.py with the same arguments"
                )
            # Threads may fill this at once; they store the same value, and a dict item is set atomically.
            self._layout[index] = (int(clip.offset), int(clip.shape[0]))
            del clip  # closes the map
        return self._layout[index]

    def read_window(self, index: int, start: int, out: np.ndarray) -> None:
        """Read frames ``start .. start + len(out)`` of clip ``index`` into ``out`` (C-contiguous uint8)."""
        offset, _ = self._clip_layout(index)
        path: Path = self.entries[index].path
        view = memoryview(out).cast("B")
        begin = offset + start * (out.nbytes // out.shape[0])
        with open(path, "rb", buffering=0) as f:
            f.seek(begin)
            done = 0
            while done < len(view):
                got = f.readinto(view[done:])
                if not got:
                    raise StoreError(
                        f"{path}: ended after {begin + done} bytes, expected {begin + len(view)}; the clip is "
                        f"truncated, preprocess the store again"
                    )
                done += got

    def train_batch(self, indices, epoch: int, out: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
        """One training batch: full stored frames of each clip's random window, plus its view's box.

        Args:
            indices: positions in ``entries``.
            epoch: 0-based epoch (views are fresh every epoch).
            out: the clip buffer ``(len(indices), frames, H, W, 3)`` uint8 to fill (default: a new one).

        Returns:
            ``({"clips", "index", "boxes"}, labels)``, numpy (see :mod:`wlasl.augment`).
        """
        indices = np.asarray(indices, np.int64)
        out = self._buffer(len(indices), self.stored[1:]) if out is None else out
        views = []
        for slot, i in enumerate(indices):
            _, stored = self._clip_layout(int(i))
            view = draw_view(clip_rng(self.seed, epoch, int(i)), stored=stored, frames=self.frames,
                             height=self.stored[1], width=self.stored[2], crop_scale=self.crop_scale,
                             flip=self.flip)  # fmt: skip
            self.read_window(int(i), view.start, out[slot])
            views.append(view)
        return {CLIPS: out, INDEX: indices, BOXES: boxes(views)}, self.labels[indices]

    def eval_batch(self, indices, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One evaluation batch: centre window, whole frame at the model's size; ``(clips, labels)``."""
        indices = np.asarray(indices, np.int64)
        out = self._buffer(len(indices), (self.size, self.size)) if out is None else out
        resize = self.stored[1:] != (self.size, self.size)
        scratch = self._buffer(1, self.stored[1:])[0] if resize else None
        for slot, i in enumerate(indices):
            _, stored = self._clip_layout(int(i))
            view = centre_view(stored=stored, frames=self.frames, height=self.stored[1], width=self.stored[2])
            if resize:  # a store cut at another size: resized on the host (evaluation only, rare)
                self.read_window(int(i), view.start, scratch)
                out[slot] = clip_transform(scratch, self.frames, self.size)
            else:
                self.read_window(int(i), view.start, out[slot])
        return out, self.labels[indices]

    def _buffer(self, n: int, hw: tuple[int, int]) -> np.ndarray:
        return _aligned_empty((n, self.frames, *hw, 3))


def _aligned_empty(shape: tuple[int, ...], align: int = 64) -> np.ndarray:
    """An uninitialised uint8 array whose data starts on an ``align``-byte boundary.

    TensorFlow takes a ``numpy_function`` result without copying only when
    it is 64-byte aligned; numpy's large arrays start 16 bytes into a page,
    which cost a second full copy of every batch (handing a ready batch of
    8 x 20 x 172² to tf.data: 2,900 clips/s misaligned, 22,000 aligned).
    """
    nbytes = int(np.prod(shape))
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes].reshape(shape)
