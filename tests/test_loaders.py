"""Both loaders: whole uint8 batches from the host, the random view cut on the device (issue 19).

The reference is the CPU path the suite always had (``clip_transform``:
window, box, flip, then OpenCV ``INTER_LINEAR``). The device path must cut
the same boxes for the same (seed, epoch, index) and produce clips at most
1 grey level away (OpenCV's bilinear weights are 11-bit fixed point, the
device's float32), so augmentation stays reproducible and resumable.
"""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from utils.core.config import config_from_dict
from wlasl.augment import augment_tf, augment_torch, boxes, clip_rng, draw_view
from wlasl.batches import BatchReader
from wlasl.clip_store import MANIFEST_COLUMNS, ClipStore, StoreError
from wlasl.transforms import clip_transform

# 1 grey level: OpenCV's fixed-point bilinear weights vs float32 on the device.
TOLERANCE = 1

# Boxes drawn by the pre-issue-19 clip_transform (main at 171a0e0), recorded
# from its output: ((stored, frames, height, width, crop_scale, flip),
# (seed, epoch, index), (start, y0, x0, side, flip)).
GOLDEN = [
    ((12, 8, 40, 40, (0.7, 1.0), True), (0, 0, 0), (4, 3, 1, 35, True)),
    ((12, 8, 40, 40, (0.7, 1.0), True), (0, 1, 0), (2, 3, 1, 37, False)),
    ((12, 8, 40, 40, (0.7, 1.0), True), (3, 2, 17), (1, 3, 2, 37, False)),
    ((12, 8, 40, 40, (0.7, 1.0), True), (1234, 7, 5), (4, 0, 1, 37, True)),
    ((8, 8, 32, 32, (0.5, 0.9), False), (0, 0, 0), (0, 2, 1, 28, False)),
    ((8, 8, 32, 32, (0.5, 0.9), False), (1234, 7, 5), (0, 7, 4, 24, False)),
    ((20, 16, 36, 52, (0.3, 1.0), True), (0, 0, 0), (4, 4, 7, 30, True)),
    ((20, 16, 36, 52, (0.3, 1.0), True), (0, 1, 0), (2, 0, 15, 36, False)),
    ((20, 16, 36, 52, (0.3, 1.0), True), (1234, 7, 5), (4, 0, 8, 35, True)),
]

STORED, FRAMES, STORE_PX, SIZE = 10, 8, 24, 20  # a temporal slack, and a resize on every path
CROP = (0.4, 1.0)


def _write_store(root, *, clips=9, frames=STORED, size=STORE_PX):
    """A clip store of random clips: 5 train, 2 val, 2 test, 3 classes."""
    (root / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(clips):
        vid = f"v{i:03d}"
        np.save(root / "clips" / f"{vid}.npy", rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))
        row = dict.fromkeys(MANIFEST_COLUMNS, "")
        split = "train" if i < 5 else "val" if i < 7 else "test"
        row.update(video_id=vid, gloss=f"g{i % 3}", label=i % 3, split=split, signer_id=0, path=f"clips/{vid}.npy")
        rows.append(row)
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (root / "labels.txt").write_text("g0\ng1\ng2\n")
    (root / "store.json").write_text(json.dumps({"frames": frames, "size": size, "num_classes": 3}))
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _write_store(tmp_path_factory.mktemp("loader_store"))


def _cfg(store, workers=0, size=SIZE):
    return config_from_dict(
        {"model": {"name": "x3d_xs", "frames": FRAMES, "size": size},
         "data": {"root": str(store), "batch_size": 2, "workers": workers, "flip": True, "crop_scale": CROP},
         "train": {"seed": 5}}
    )  # fmt: skip


def _reference(store, index, epoch, size=SIZE):
    clip = ClipStore(store).load(ClipStore(store).split("train")[index])
    return clip_transform(clip, FRAMES, size, clip_rng(5, epoch, index), crop_scale=CROP, flip=True)


def _assert_close(got, want):
    # Rounding differs pixel by pixel (random noise maximises it) but never by more than 1; OpenCV's
    # fixed-point rounding sits 0.1-0.15 grey level below exact bilinear on noise, so the mean may lean
    # that way, never by a whole level (which a box off by one pixel would cost).
    diff = np.asarray(got, np.int16) - np.asarray(want, np.int16)
    assert np.abs(diff).max() <= TOLERANCE and abs(diff.mean()) < 0.25, (np.abs(diff).max(), diff.mean())


def test_views_are_the_boxes_the_cpu_path_always_drew():
    for (stored, frames, h, w, scale, flip), (seed, epoch, index), box in GOLDEN:
        v = draw_view(clip_rng(seed, epoch, index), stored=stored, frames=frames, height=h, width=w,
                      crop_scale=scale, flip=flip)  # fmt: skip
        assert (v.start, v.y0, v.x0, v.height, v.flip) == box and v.width == v.height


@pytest.mark.parametrize("framework", ["torch", "torch-float", "tf"])
def test_device_crop_matches_the_cpu_reference(framework):
    # torch-float: the float32 arithmetic a CUDA device runs (its bilinear kernels take no uint8).
    # Random boxes on non-square frames, scaled up and down, half of them flipped.
    rng = np.random.default_rng(1)
    for trial, (h, w, size) in enumerate([(30, 44, 24), (40, 28, 52), (24, 24, 24)]):
        clips = rng.integers(0, 256, (4, 9, h, w, 3), dtype=np.uint8)
        views = [draw_view(clip_rng(trial, 0, b), stored=9, frames=6, height=h, width=w, crop_scale=(0.3, 1.0),
                           flip=True) for b in range(4)]  # fmt: skip
        inputs = {"clips": np.stack([c[v.start : v.start + 6] for c, v in zip(clips, views)]), "boxes": boxes(views)}
        if framework.startswith("torch"):
            torch = pytest.importorskip("torch")
            tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
            if framework == "torch-float":
                tensors["clips"] = tensors["clips"].float()
            out = augment_torch(tensors, size=size).numpy()
        else:
            from utils.core.tf_env import tf

            out = augment_tf({k: tf.constant(v) for k, v in inputs.items()}, size=size).numpy()
        assert out.dtype == np.uint8 and out.shape == (4, 6, size, size, 3)
        for b in range(4):
            want = clip_transform(clips[b], 6, size, clip_rng(trial, 0, b), crop_scale=(0.3, 1.0), flip=True)
            _assert_close(out[b], want)
    assert any(v.flip for v in views) and not all(v.flip for v in views)


def _torch_epoch(store, workers, epoch, start_step=0):
    from wlasl.loader_torch import make_loaders

    loaders = make_loaders(ClipStore(store), _cfg(store, workers))
    loaders.train.sampler.set_epoch(epoch, start_step)
    return loaders, [(loaders.augment(x, "cpu").numpy(), x["index"].numpy(), y.numpy()) for x, y in loaders.train]


def test_torch_batches_are_the_reference_views_with_or_without_workers(store):
    pytest.importorskip("torch")
    loaders, batches = _torch_epoch(store, 0, epoch=1)
    entries = ClipStore(store).split("train")
    assert len(batches) == 2 and loaders.ids["train"] == [e.video_id for e in entries]
    for clips, index, labels in batches:
        assert clips.shape == (2, FRAMES, SIZE, SIZE, 3)
        for clip, i, label in zip(clips, index, labels):
            _assert_close(clip, _reference(store, int(i), 1))
            assert label == entries[i].label
    _, threaded = _torch_epoch(store, 1, epoch=1)  # gathered by a worker thread
    _, resumed = _torch_epoch(store, 0, epoch=1, start_step=1)  # a run resumed after step 1
    for a, b in zip(batches, threaded):
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert all(np.array_equal(u, v) for u, v in zip(batches[1], resumed[0])) and len(resumed) == 1


def test_tf_batches_are_the_reference_views_and_resume_mid_epoch(store):
    from wlasl.loader_tf import make_loaders

    loaders = make_loaders(ClipStore(store), _cfg(store, workers=2))
    entries = ClipStore(store).split("train")
    batches = [(loaders.augment(x).numpy(), x["index"].numpy(), y.numpy()) for x, y in loaders.train.epoch(1)]
    assert [len(b[1]) for b in batches] == [2, 2, 1]  # every clip, the last batch partial
    assert sorted(i for b in batches for i in b[1]) == list(range(5))
    for clips, index, labels in batches:
        for clip, i, label in zip(clips, index, labels):
            _assert_close(clip, _reference(store, int(i), 1))
            assert label == entries[i].label
    tail = [loaders.augment(x).numpy() for x, _ in loaders.train.epoch(1, skip=1)]
    assert all(np.array_equal(a[0], b) for a, b in zip(batches[1:], tail)) and len(tail) == 2


@pytest.mark.parametrize("framework", ["torch", "tf"])
@pytest.mark.parametrize("size", [STORE_PX, SIZE], ids=["store-size", "resized"])
def test_evaluation_batches_are_the_centre_view(store, framework, size):
    if framework == "torch":
        pytest.importorskip("torch")
        from wlasl.loader_torch import make_loaders
    else:
        from wlasl.loader_tf import make_loaders
    loaders = make_loaders(ClipStore(store), _cfg(store, size=size))
    clips = np.concatenate([np.asarray(x) for x, _ in loaders.val])
    labels = np.concatenate([np.asarray(y) for _, y in loaders.val])
    val = ClipStore(store).split("val")
    want = np.stack([clip_transform(ClipStore(store).load(e), FRAMES, size) for e in val])
    np.testing.assert_array_equal(clips, want)
    assert labels.tolist() == [e.label for e in val]


def test_a_bad_clip_is_a_clear_error_naming_the_file(tmp_path):
    root = _write_store(tmp_path / "s", clips=6)
    store = ClipStore(root)
    entries = store.split("train")
    reader = BatchReader(store, entries, frames=FRAMES, size=SIZE)
    np.save(entries[1].path, np.zeros((STORED, STORE_PX, STORE_PX + 4, 3), np.uint8))
    with pytest.raises(
        StoreError, match=rf"{re.escape(str(entries[1].path))}: expected .* received uint8 \(10, 24, 28, 3\)"
    ):
        reader.train_batch([0, 1], epoch=0)
    np.save(entries[4].path, np.asfortranarray(np.zeros((STORED, STORE_PX, STORE_PX, 3), np.uint8)))
    with pytest.raises(StoreError, match=rf"{re.escape(str(entries[4].path))}: expected a C-order array"):
        reader.eval_batch([4])
    reader.train_batch([2], epoch=0)  # layout read and kept; then the file loses its tail
    with open(entries[2].path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(StoreError, match=rf"{re.escape(str(entries[2].path))}: ended after .* truncated, preprocess"):
        reader.eval_batch([2])
    entries[3].path.write_bytes(b"not a clip")
    with pytest.raises(StoreError, match=rf"{re.escape(str(entries[3].path))}: cannot read the clip"):
        reader.eval_batch([3])
