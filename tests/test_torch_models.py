"""PyTorch models: every registered one builds for num_classes; files of another backbone are refused.

Loading the upstream release layouts is tested in tests/test_pretrained.py.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import models.s3d  # noqa: E402,F401  (registers s3d)
import models.x3d  # noqa: E402,F401  (registers x3d_*)
from models.registry import get_model, list_models  # noqa: E402

TORCH_MODELS = [n for n in list_models(framework="torch") if get_model(n).input == "clip"]  # pose models: test_pose.py
TINY = {"frames": 8, "size": 32, "dropout": 0.5, "freeze": 0, "pretrained": None}
# The video transformers at their released size would be ViT-B/L (86-300 M weights): tiny encoders
# through their builder options (ModelSpec.options) here; tests/test_video_transformers.py covers them.
TINY_ENCODER = {"hidden_size": 32, "layers": 2, "heads": 2, "intermediate_size": 64, "patch_size": 8, "tubelet": 2}


def build(name: str, **kw):
    torch.manual_seed(0)
    options = TINY_ENCODER if get_model(name).family in ("vivit", "videomae", "vjepa2") else {}
    return get_model(name).build(**{"num_classes": 3, **TINY, **options, **kw})


def test_the_torch_families_are_registered():
    assert {"s3d", "x3d_xs", "x3d_s", "x3d_m", "x3d_l"} <= set(TORCH_MODELS)
    for name in TORCH_MODELS:
        spec = get_model(name)
        assert (spec.frames, spec.size) == (20, 224)
        assert spec.mean != (0.0, 0.0, 0.0) and spec.std != (1.0, 1.0, 1.0)


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_output_has_num_classes_columns(name):
    # The seed project's X3D kept a 400-class output: the head itself must change.
    model = build(name, num_classes=7).eval()
    clips = torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = model(clips)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_x3d_projection_is_the_replaced_head_and_gives_logits():
    model = build("x3d_xs", num_classes=5)
    assert model.net.blocks[-1].proj.out_features == 5
    assert model.net.blocks[-1].activation is None  # logits, not softmax
    assert not hasattr(model.net, "fc")


def test_input_module_normalises_uint8_on_device():
    model = build("x3d_xs")
    clips = torch.full((1, 8, 32, 32, 3), 255, dtype=torch.uint8)
    x = model.input(clips)
    assert x.shape == (1, 3, 8, 32, 32) and x.dtype == torch.float32
    mean, std = get_model("x3d_xs").mean, get_model("x3d_xs").std
    assert x[0, 0, 0, 0, 0].item() == pytest.approx((1.0 - mean[0]) / std[0], rel=1e-5)
    with pytest.raises(ValueError, match="frames, height, width, 3"):
        model.input(torch.zeros((1, 3, 8, 32, 32), dtype=torch.uint8))


@pytest.mark.parametrize("name,frames,size,match", [("s3d", 4, 32, "frames >= 8"), ("x3d_xs", 8, 16, "size >= 32")])
def test_too_small_clips_name_the_numbers(name, frames, size, match):
    with pytest.raises(ValueError, match=match):
        build(name, frames=frames, size=size)


def test_freeze_keeps_leading_blocks_fixed_and_in_eval_mode():
    model = build("x3d_xs", freeze=2).train()
    stem, stage1, stage2 = model.net.blocks[:3]
    assert not any(p.requires_grad for b in (stem, stage1) for p in b.parameters())
    assert all(p.requires_grad for p in stage2.parameters())
    assert not stem.training and not stage1.training and stage2.training
    with pytest.raises(ValueError, match="freeze expected 0..5"):
        build("x3d_xs", freeze=9)


def test_a_wrong_file_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "s3d.pth"
    torch.save(build("s3d").net.state_dict(), path)
    with pytest.raises(ValueError, match=r"missing keys: blocks\.0.*unexpected keys: .*features\."):
        build("x3d_xs", pretrained=str(path))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a state dict"):
        build("x3d_xs", pretrained=str(tmp_path / "list.pth"))
    with pytest.raises(FileNotFoundError, match="not found"):
        build("x3d_xs", pretrained=str(tmp_path / "nope.pth"))


def test_another_variant_or_shape_is_refused(tmp_path):
    # X3D-L shares XS's key names for its first blocks but has more of them.
    path = tmp_path / "l.pth"
    torch.save(build("x3d_l").net.state_dict(), path)
    with pytest.raises(ValueError, match="unexpected keys: blocks"):
        build("x3d_xs", pretrained=str(path))
    state = build("x3d_xs").net.state_dict()
    key = next(k for k in state if k.endswith("weight") and state[k].dim() == 5)
    state[key] = torch.zeros(1, 1, 1, 1, 1)
    torch.save(state, path)
    with pytest.raises(ValueError, match=f"shape mismatches .*{key}"):
        build("x3d_xs", pretrained=str(path))


def test_torchvision_imports_through_the_compat_module():
    from models._torchvision_compat import import_torchvision

    tv = import_torchvision()
    assert import_torchvision() is tv
    assert hasattr(tv.models.video, "s3d")
