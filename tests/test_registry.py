"""ModelSpec is the one home of what the suite knows about a model: every consumer reads it.

A throwaway family registered here (a tiny PyTorch net) must show up in the
SLURM job files, sweeps, tuning, the report's names and order and the entry
scripts' parsers, and train end to end, without editing any of them.
"""

from __future__ import annotations

import pytest

import models
from models.registry import (
    KINETICS_MEAN,
    KINETICS_STD,
    families,
    get_model,
    list_models,
    register_model,
    unregister_model,
)
from tests.torch_helpers import build_toy
from tests.torch_helpers import toy_family as toy_models

torch = pytest.importorskip("torch")


@pytest.fixture
def toy_family():
    """Two variants of a family no module of the suite knows, removed again afterwards."""
    with toy_models() as names:
        yield names


def test_a_new_family_reaches_every_consumer(toy_family, tmp_path):
    from utils.cluster.profile import profile_from_dict
    from utils.cluster.render import render_all
    from utils.experiment import make_plan, sweep_experiment
    from utils.reporting.runs import display_name, model_sort_key
    from utils.train_cli import train_parser
    from utils.tuning.cli import tune_parser
    from utils.tuning.space import family_space, tuned_model

    assert "toy" in families() and list_models("toy_*") == toy_family
    files = render_all(profile_from_dict({}))
    assert {"toy_small.slurm", "toy_big.slurm", "tune_toy.slurm", "preprocess_48.slurm"} <= set(files)
    assert "main/train_toy.py --variant big" in files["toy_big.slurm"]
    assert "--variant big" in files["tune_toy.slurm"]  # its ModelSpec.tune_default
    plan = make_plan(sweep_experiment(["toy_small"], 1, name="toy", results=str(tmp_path), subset=3, data_root="data"))
    assert list(plan.runs) == ["toy_small-wlasl3_48-s0"] and plan.outputs["store:s0_wlasl3_48"] == "data/wlasl3_48"
    assert tuned_model("toy").variant == "big" and family_space("toy")["batch_size"] == {"kind": "choice", "values": [2]}
    assert display_name("toy_big") == "Toy-Big" and model_sort_key("toy_small") < model_sort_key("movinet_a0")
    args = train_parser("toy").parse_args(["--variant", "small", "--data", "d", "--width", "6"])
    assert args.variant == "small" and "--stream" not in train_parser("toy").format_help()
    assert "--width" in tune_parser("toy").format_help()


def test_a_new_family_trains_end_to_end(toy_family, tmp_path):
    from tests.torch_helpers import make_store
    from utils.core.records import read_record
    from utils.train_cli import main

    store = make_store(tmp_path / "s")
    argv = ["--variant", "small", "--data", str(store), "--frames", "8", "--size", "32", "--results", str(tmp_path),
            "--epochs", "1", "--batch-size", "2", "--workers", "0", "--width", "6", "--run-id", "toy"]  # fmt: skip
    assert main("toy", argv) == 0
    record = read_record(tmp_path / "runs" / "toy" / "metrics.json")
    assert record.status == "completed" and record.model == "toy_small"
    assert record.config["model"]["options"] == {"width": 6}


def test_unknown_options_and_models_are_refused_with_the_valid_names(toy_family):
    from models.train import resolve
    from utils.core.config import config_from_dict

    base = {"data": {"root": "d"}}
    with pytest.raises(KeyError, match="no builder option 'depth'; its options: width"):
        resolve(config_from_dict({**base, "model": {"name": "toy_small", "options": {"depth": 3}}}))
    with pytest.raises(TypeError, match="option width expected int"):
        resolve(config_from_dict({**base, "model": {"name": "toy_small", "options": {"width": "six"}}}))
    with pytest.raises(ValueError, match="no streaming variant"):
        resolve(config_from_dict({**base, "model": {"name": "toy_small", "stream": True}}))
    with pytest.raises(KeyError, match="Did you mean toy_small"):
        get_model("toy_smal")
    with pytest.raises(ValueError, match="registered twice"):
        register_model("toy_small", family="toy", framework="torch")(build_toy)


# Upstream input statistics, on [0, 1] RGB. I3D: the Keras release takes [-1, 1];
# MoViNet: [0, 1]; S3D: torchvision's Kinetics statistics; X3D: 0.45/0.225 on every
# channel (PyTorch Hub's X3D page, PySlowFast's _C.DATA.MEAN/STD).
UPSTREAM = {
    "i3d": ((0.5,) * 3, (0.5,) * 3),
    "cnn2d": ((0.5,) * 3, (0.5,) * 3),  # keras-applications MobileNetV2: [-1, 1]
    "movinet": ((0.0,) * 3, (1.0,) * 3),
    "s3d": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
    "x3d": ((0.45,) * 3, (0.225,) * 3),
    # ViViT: Scenic's zero-centred [-1, 1] (models/vivit.py says why not the released processor's [-3, 1]).
    "vivit": ((0.5,) * 3, (0.5,) * 3),
    # VideoMAE: the released checkpoints' preprocessor_config.json; V-JEPA 2: the library's VJEPA2VideoProcessor.
    "videomae": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "vjepa2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@pytest.mark.parametrize("name", [n for n in list_models() if get_model(n).input == "clip"])
def test_each_family_normalises_with_its_upstream_statistics(name):
    spec = get_model(name)
    mean, std = UPSTREAM[spec.family]
    assert spec.mean == pytest.approx(mean) and spec.std == pytest.approx(std)
    if spec.family == "s3d":
        assert (spec.mean, spec.std) == (KINETICS_MEAN, KINETICS_STD)


@pytest.mark.parametrize("name", ["s3d", "x3d_xs"])
def test_torch_builders_apply_the_spec_statistics(name):
    model = get_model(name).build(num_classes=3, frames=8, size=32)
    x = torch.full((1, 8, 32, 32, 3), 200, dtype=torch.uint8)
    got = model.input(x)[0, :, 0, 0, 0]
    mean, std = torch.tensor(get_model(name).mean), torch.tensor(get_model(name).std)
    assert torch.allclose(got, (200 / 255 - mean) / std, atol=1e-5)


def test_keras_builders_apply_the_spec_statistics():
    import numpy as np

    from utils.core.tf_env import tf_keras

    model = get_model("movinet_a0").build(num_classes=3, frames=2, size=32, conv_type="2plus1d")
    assert np.allclose(model._scale, 1 / 255) and np.allclose(model._offset, 0)
    i3d = get_model("i3d").build(num_classes=3, frames=8, size=32)
    rescale = i3d.get_layer("to_pm1")
    probe = tf_keras.Model(i3d.input, rescale.output)
    out = probe(np.full((1, 8, 32, 32, 3), 200, np.uint8)).numpy()[0, 0, 0, 0]
    assert np.allclose(out, (200 / 255 - 0.5) / 0.5, atol=1e-5)


def test_unfreeze_last_trains_only_the_last_k_backbone_layers_and_the_head():
    model = get_model("x3d_xs").build(num_classes=3, frames=8, size=32, unfreeze_last=3)
    trainable = [n for n, p in model.net.named_parameters() if p.requires_grad]
    backbone_layers = {n.rsplit(".", 1)[0] for n in trainable if not n.startswith("blocks.5.proj")}
    assert len(backbone_layers) == 3  # the last three layers with weights, e.g. the head's pre-projection conv and norm
    assert any(n.startswith("blocks.5.proj") for n in trainable)  # the classifier always trains
    movinet = get_model("movinet_a0").build(num_classes=3, frames=2, size=32, conv_type="2plus1d", unfreeze_last=5)
    layers = movinet.backbone.layers
    assert all(not layer.trainable for layer in layers[:-5]) and all(layer.trainable for layer in layers[-5:])
    assert movinet.head.trainable
    with pytest.raises(ValueError, match="unfreeze_last expected 1.."):
        get_model("x3d_xs").build(num_classes=3, frames=8, size=32, unfreeze_last=10_000)


def test_consumers_see_the_registry_whatever_the_import_order():
    # The job list used to be a snapshot taken when the job-list module was imported.
    from utils.cluster.profile import profile_from_dict
    from utils.cluster.render import render_all

    register_model("late_one", family="late", framework="torch", order=99)(build_toy)
    try:
        assert "late_one.slurm" in render_all(profile_from_dict({}))
    finally:
        unregister_model("late_one")
    assert "late_one.slurm" not in render_all(profile_from_dict({}))
    assert models.list_models() == list_models()
