"""Pose models: they learn hand motion through the real engine; shoulder normalisation; the keypoint loader.

The synthetic keypoint store (wlasl/synthetic_pose.py) has 4 classes that
visit the same hand positions in different temporal orders, so only a model
that reads time beats chance (25%).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import models  # noqa: E402,F401  (registers every family)
from models.registry import get_model, list_models  # noqa: E402
from models.train import open_store, run  # noqa: E402
from utils.core.config import config_from_dict  # noqa: E402
from utils.core.records import read_record  # noqa: E402
from wlasl.clip_store import StoreError  # noqa: E402
from wlasl.keypoint_store import NUM_KEYPOINTS, KeypointStore, part_slices  # noqa: E402
from wlasl.loader_pose import MIRROR, KeypointDataset, make_loaders, sample_keypoints  # noqa: E402
from wlasl.synthetic_pose import make_synthetic_keypoints  # noqa: E402

FRAMES = 16
CLASSES = 4
# Small networks: seconds on two CPU cores.
TINY = {
    "pose_linear": {},
    "pose_lstm": {"hidden": 64, "layers": 1},
    "pose_transformer": {"dim": 32, "heads": 4, "layers": 1, "feedforward": 64},
}


@pytest.fixture(autouse=True)
def one_thread():
    # Networks this small lose more to thread hand-offs than they gain, most of all on two
    # shared cores (a 15-epoch run: ~11 s of CPU with 2 threads under load, ~1 s with one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pose_store(tmp_path_factory):
    # 20 clips per class: 12 train, 4 val, 4 test each.
    return make_synthetic_keypoints(tmp_path_factory.mktemp("pose") / "wlasl4_pose", glosses=CLASSES, per_gloss=20,
                                    frames=(16, 32), seed=0)  # fmt: skip


def _cfg(store, results, name, **train):
    return config_from_dict({
        "model": {"name": name, "frames": FRAMES, "dropout": 0.1, "options": TINY[name]},
        "data": {"root": str(store), "batch_size": 8, "workers": 0},
        "train": {"epochs": 20, "lr": 3e-3, "schedule": "none", **train},
        "results": str(results), "run_id": f"{name}-test",
    })  # fmt: skip


@pytest.mark.parametrize("name", ["pose_linear", "pose_lstm", "pose_transformer"])
def test_pose_models_learn_hand_motion_through_the_engine(pose_store, tmp_path, name):
    record = run(_cfg(pose_store, tmp_path, name))
    assert record.status == "completed" and record.framework == "torch"
    test, chance = record.metrics["test"], 1 / CLASSES
    print(f"{name}: test top1 {test['top1']:.3f} (n={test['n']}), val top1 {record.metrics['val']['top1']:.3f}, "
          f"chance {chance:.2f}")  # fmt: skip
    # 16 test clips: 10 or more right by chance (0.25 each) has probability < 1e-3. Seen here (seeds 0-3,
    # 1 and 2 threads): pose_linear 0.94-1.0, pose_lstm 0.81-0.88 (its max over time keeps less of the order
    # these classes differ by than a last state did), pose_transformer 0.94-1.0.
    assert test["n"] == 4 * CLASSES and test["top1"] >= 0.625
    run_dir = tmp_path / "runs" / record.run_id
    assert read_record(run_dir / "metrics.json").metrics["test"]["top1"] == test["top1"]
    for split in ("train", "val", "test"):
        assert (run_dir / f"scores_{split}.npz").is_file()


def test_registry_entries():
    assert [n for n in list_models() if get_model(n).family == "pose"] == ["pose_linear", "pose_lstm", "pose_transformer"]
    # The suite's own RGB models (tests register stand-ins of their own in the same process).
    rgb = [get_model(n).order for n in list_models()
           if get_model(n).input == "clip" and get_model(n).builder.__module__.startswith("models.")]  # fmt: skip
    for name, display, frames in (("pose_linear", "Pose-Linear", 20), ("pose_lstm", "Pose-LSTM", 50),
                                  ("pose_transformer", "Pose-Transformer", 50)):  # fmt: skip
        spec = get_model(name)
        assert (spec.input, spec.framework, spec.display, spec.frames, spec.size) == ("keypoints", "torch", display, frames, None)
        assert spec.order > max(rgb)
        assert spec.store_name(100) == "wlasl100_pose" and spec.store_name("${subset}") == "wlasl${subset}_pose"
    assert get_model("x3d_s").store_name(300) == "wlasl300_224"
    assert {o.name for o in get_model("pose_lstm").options} == {"hidden", "layers", "bidirectional"}
    assert {o.name for o in get_model("pose_transformer").options} == {"dim", "heads", "layers", "feedforward"}
    assert get_model("pose_linear").options == ()


def test_the_transformer_warms_up_unless_the_run_says_otherwise(tmp_path):
    """``warmup_epochs`` unset takes the registry's (5 for pose_transformer, 0 elsewhere); a value given is kept."""
    from models.train import resolve
    from utils.core.config import config_from_dict

    def warmup(name, **train):
        cfg = config_from_dict({"model": {"name": name}, "data": {"root": str(tmp_path)}, "train": train,
                                "results": str(tmp_path)})  # fmt: skip
        return resolve(cfg).train.warmup_epochs

    assert (warmup("pose_transformer"), warmup("pose_lstm"), warmup("pose_linear")) == (5, 0, 0)
    assert warmup("pose_transformer", warmup_epochs=0) == 0 and warmup("pose_lstm", warmup_epochs=2) == 2


@pytest.mark.parametrize(
    "kw, match",
    [({"size": 224}, "not pixels"), ({"pretrained": "w.pt"}, "no pretrained"), ({"freeze": 2}, "nothing|no backbone"),
     ({"num_classes": 1}, "num_classes >= 2")],
)  # fmt: skip
def test_builders_refuse_what_a_pose_model_cannot_do(kw, match):
    with pytest.raises(ValueError, match=match):
        get_model("pose_lstm").build(**{"num_classes": 3, "frames": 8, **kw})
    with pytest.raises(ValueError, match="divisible"):
        get_model("pose_transformer").build(num_classes=3, frames=8, dim=30, heads=4)


def test_builders_take_the_rgb_arguments_unset_and_refuse_unknown_ones():
    # The engines pass every family the RGB builders' arguments; unset, a pose builder accepts them.
    model = get_model("pose_linear").build(num_classes=3, frames=8, size=None, freeze=0, unfreeze_last=None,
                                           pretrained=None, pretrained_partial=True)  # fmt: skip
    assert model.num_classes == 3
    with pytest.raises(TypeError, match=r"pose_lstm .*unknown \['depth'\]"):
        get_model("pose_lstm").build(num_classes=3, frames=8, depth=2)


def test_transformer_refuses_another_clip_length():
    model = get_model("pose_transformer").build(num_classes=3, frames=8, **TINY["pose_transformer"])
    with pytest.raises(ValueError, match="built for 8 frames.*received 6"):
        model(torch.zeros(1, 6, NUM_KEYPOINTS, 4))
    with pytest.raises(ValueError, match=r"\(batch, frames, 99, 4\)"):
        model(torch.zeros(1, 8, NUM_KEYPOINTS, 3))


def _random_pose(rng, frames=6, body=True):
    x = np.zeros((2, frames, NUM_KEYPOINTS, 4), np.float32)
    x[..., :2] = rng.uniform(100, 700, (2, frames, NUM_KEYPOINTS, 2))
    x[..., 2] = rng.uniform(0.5, 1, (2, frames, NUM_KEYPOINTS))
    present = rng.random((2, frames, 4)) < 0.8
    present[..., 0] = body
    from wlasl.loader_pose import PART_OF

    x[..., 3] = present[..., PART_OF]
    return x


@pytest.mark.parametrize("body", [True, False], ids=["shoulders", "no-body fallback"])
def test_normalisation_is_invariant_to_moving_and_scaling_the_whole_body(body):
    from models._torch_pose import keypoint_features

    rng = np.random.default_rng(1)
    x = _random_pose(rng, body=body)
    moved = x.copy()
    moved[..., :2] = x[..., :2] * 2.7 + np.array([-310.0, 95.0], np.float32)
    a, b = keypoint_features(torch.from_numpy(x)), keypoint_features(torch.from_numpy(moved))
    assert torch.allclose(a, b, atol=1e-4)
    # ...but not to a rotation, which changes the pose.
    rotated = x.copy()
    rotated[..., 0], rotated[..., 1] = x[..., 1], -x[..., 0]
    assert not torch.allclose(a, keypoint_features(torch.from_numpy(rotated)), atol=1e-2)
    model = get_model("pose_lstm").build(num_classes=3, frames=6, **TINY["pose_lstm"]).eval()
    with torch.no_grad():
        assert torch.allclose(model(torch.from_numpy(x)), model(torch.from_numpy(moved)), atol=1e-5)


def test_shoulders_set_centre_and_scale_and_missing_parts_are_zero():
    from models._torch_pose import FEATURES, keypoint_features

    x = _random_pose(np.random.default_rng(2), frames=3)
    x[..., 11, :2], x[..., 12, :2] = (500.0, 300.0), (300.0, 300.0)  # shoulders 200 px apart around (400, 300)
    x[:, :, 11:13, 3] = 1
    x[0, :, part_slices()["left_hand"], 3] = 1
    x[0, 1, part_slices()["left_hand"], 3] = 0  # the left hand is missing in one frame, whatever it holds
    f = keypoint_features(torch.from_numpy(x))
    assert f.shape == (2, 3, FEATURES)
    xy = f[..., : 2 * NUM_KEYPOINTS].reshape(2, 3, NUM_KEYPOINTS, 2)
    assert torch.allclose(xy[0, 0, 11], torch.tensor([0.5, 0.0])) and torch.allclose(xy[0, 0, 12], torch.tensor([-0.5, 0.0]))
    assert (xy[0, 1, part_slices()["left_hand"]] == 0).all()
    flag = 3 * NUM_KEYPOINTS + 1  # the left hand's presence flag, after x, y and c of every keypoint
    assert f[0, 1, flag].item() == 0.0 and f[0, 0, flag].item() == 1.0
    shape = f[..., FEATURES - 84 : FEATURES - 42]  # the left hand's shape
    assert (shape[0, 1] == 0).all() and shape[0, 0].abs().sum() > 0


def test_hand_shape_features_ignore_where_the_hand_is_and_its_size_but_not_its_shape():
    """The hand's own scale: moving or scaling one hand (not the body) leaves its shape features unchanged."""
    from models._torch_pose import FEATURES, keypoint_features

    x = _random_pose(np.random.default_rng(5), frames=4)
    x[..., part_slices()["right_hand"], 3] = 1
    hand = part_slices()["right_hand"]
    moved = x.copy()
    wrist = x[:, :, hand.start : hand.start + 1, :2]
    moved[:, :, hand, :2] = (x[:, :, hand, :2] - wrist) * 0.4 + wrist + np.array([55.0, -20.0], np.float32)
    a, b = keypoint_features(torch.from_numpy(x)), keypoint_features(torch.from_numpy(moved))
    shape = slice(FEATURES - 42, FEATURES)
    assert torch.allclose(a[..., shape], b[..., shape], atol=1e-4)
    assert not torch.allclose(a[..., : 2 * NUM_KEYPOINTS], b[..., : 2 * NUM_KEYPOINTS], atol=1e-3)  # the body view moved
    bent = x.copy()
    bent[:, :, hand.start + 8, :2] += 30.0  # the index fingertip bends
    assert not torch.allclose(a[..., shape], keypoint_features(torch.from_numpy(bent))[..., shape], atol=1e-2)


def test_augmentation_is_reproducible_from_seed_epoch_and_index(pose_store):
    store = KeypointStore(pose_store)
    entries = store.split("train")

    def view(seed, epoch, index, **kw):
        return KeypointDataset(store, entries, frames=FRAMES, train=True, seed=seed, **kw)[(index, epoch)][0]["clips"]

    a = view(0, 3, 5)
    assert torch.equal(a, view(0, 3, 5)) and a.shape == (FRAMES, NUM_KEYPOINTS, 4) and a.dtype == torch.float32
    assert not torch.equal(a, view(0, 4, 5)) and not torch.equal(a, view(1, 3, 5))
    # Evaluation is the same view every time: all frames, a centred grid, no augmentation.
    ev = KeypointDataset(store, entries, frames=FRAMES, train=False)
    assert torch.equal(ev[(5, 0)][0], ev[(5, 9)][0])
    # A resumed epoch starts at its next batch with exactly the batches the uninterrupted run had.
    cfg = _cfg(pose_store, "unused", "pose_lstm").replace(model={"frames": FRAMES})
    loader = make_loaders(store, cfg).train
    loader.sampler.set_epoch(2)
    whole = [x["clips"] for x, _ in loader]
    loader.sampler.set_epoch(2, 1)
    resumed = [x["clips"] for x, _ in loader]
    assert len(resumed) == len(whole) - 1 and all(torch.equal(p, q) for p, q in zip(resumed, whole[1:]))


def test_hand_swap_only_with_flip_and_mirrors_left_and_right():
    assert (MIRROR[MIRROR] == np.arange(NUM_KEYPOINTS)).all()  # an involution
    s = part_slices()
    assert (MIRROR[s["left_hand"]] == np.arange(NUM_KEYPOINTS)[s["right_hand"]]).all()
    assert MIRROR[11] == 12 and MIRROR[0] == 0  # shoulders swap, the nose stays
    points = np.zeros((4, NUM_KEYPOINTS, 3), np.float16)
    points[:, s["right_hand"], 0] = 0.25  # only the right hand is there, on the image's left
    present = np.zeros((4, 4), bool)
    present[:, 2] = True
    swapped = kept = 0
    for index in range(20):
        rng = np.random.default_rng((0, 0, index))
        out = sample_keypoints(points, present, 4, width=100, height=100, rng=rng, hand_swap=True)
        plain = sample_keypoints(points, present, 4, width=100, height=100, rng=np.random.default_rng((0, 0, index)))
        assert plain[:, s["right_hand"], 3].all() and not plain[:, s["left_hand"], 3].any()  # never without --flip
        if out[:, s["left_hand"], 3].all():
            swapped += 1
            assert not out[:, s["right_hand"], 3].any() and (out[:, s["left_hand"], 0] < 0).all()
        else:
            kept += 1
    assert swapped and kept  # about half each


def test_stores_of_the_other_kind_and_bad_rows_are_refused(pose_store, tmp_path):
    with pytest.raises(StoreError, match="keypoints store but x3d_xs reads clip.*wlasl<N>_224"):
        open_store(get_model("x3d_xs"), pose_store)
    clips = tmp_path / "wlasl2_64"  # a clip store's store.json carries no kind
    clips.mkdir()
    (clips / "store.json").write_text(json.dumps({"frames": 8, "size": 64, "num_classes": 2}))
    with pytest.raises(StoreError, match="clip store but pose_lstm reads keypoints.*wlasl<N>_pose"):
        open_store(get_model("pose_lstm"), clips)
    bad = make_synthetic_keypoints(tmp_path / "bad", glosses=2, per_gloss=5)
    lines = (bad / "manifest.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",1280,720,", ",0,720,")
    (bad / "manifest.csv").write_text("\n".join(lines) + "\n")
    cfg = _cfg(bad, tmp_path, "pose_lstm").replace(data={"batch_size": 2})
    with pytest.raises(StoreError, match=r"manifest.csv: video_id \d+: width and height expected > 0.*received 0x720"):
        run(cfg)
    lines[2] = lines[2].replace(",0,720,", ",x,720,")
    (bad / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match="line 3 .*expected integers"):
        KeypointStore(bad)
    meta = json.loads((bad / "store.json").read_text())
    (bad / "store.json").write_text(json.dumps({**meta, "num_classes": 5}))
    with pytest.raises(StoreError, match="labels.txt: expected 5 lines"):
        KeypointStore(bad)


def test_train_cli_offers_the_pose_options(capsys):
    from utils.train_cli import train_parser

    p = train_parser("pose")
    args = p.parse_args(["--variant", "transformer", "--data", "d", "--dim", "64", "--heads", "4"])
    assert args.variant == "transformer"
    help_text = p.format_help()
    assert "--hidden" in help_text and "--layers" in help_text and "--feedforward" in help_text and "linear" in help_text
