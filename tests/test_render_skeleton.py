"""Skeleton videos (wlasl/render_skeleton.py, main/render_keypoints.py): a keypoint store drawn as a clip store.

The keypoint stores here are the synthetic ones (wlasl/synthetic_pose.py),
written in the layout main/extract_keypoints.py writes; the clip store that
comes out is read by the suite's own ClipStore and trains an RGB model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from wlasl.clip_store import MANIFEST_COLUMNS, ClipStore, StoreError
from wlasl.keypoint_store import NUM_KEYPOINTS, part_slices
from wlasl.render_skeleton import COLOURS, RenderConfig, draw_frame, run_render
from wlasl.synthetic_pose import make_synthetic_keypoints

SIZE = 64


@pytest.fixture(scope="module")
def keypoints(tmp_path_factory):
    return make_synthetic_keypoints(tmp_path_factory.mktemp("kp") / "pose", glosses=3, per_gloss=5, seed=0)


@pytest.fixture(scope="module")
def rendered(keypoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("skel") / "skeleton_64"
    report = run_render(RenderConfig(keypoints=keypoints, out=out, frames=8, size=SIZE), progress=False)
    return out, report


def _pose(present=(True, True, True, True)) -> tuple[np.ndarray, np.ndarray]:
    """One frame: every part at its own place in a square 100x100 source frame, full confidence."""
    points = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    s = part_slices()
    rng = np.random.default_rng(0)
    points[s["body"], :2] = [0.5, 0.75]
    points[s["body"], 2] = 1.0
    points[11, :2], points[12, :2] = (0.65, 0.6), (0.35, 0.6)  # shoulders
    points[s["left_hand"], :2] = rng.uniform(0.8, 0.95, (21, 2))  # bottom right of the picture
    points[s["right_hand"], :2] = rng.uniform(0.05, 0.2, (21, 2))  # top left
    n_face = s["face"].stop - s["face"].start
    points[s["face"], :2] = rng.uniform([0.4, 0.1], [0.6, 0.3], (n_face, 2))
    points[s["face"], 2] = 1.0
    points[s["left_hand"], 2] = points[s["right_hand"], 2] = 1.0
    return points, np.array(present)


def _has(img: np.ndarray, colour, box) -> bool:
    """Some pixel of ``colour`` (exactly) inside ``box`` = (x0, y0, x1, y1) of the image."""
    x0, y0, x1, y1 = box
    return bool((img[y0:y1, x0:x1] == colour).all(axis=-1).any())


def test_each_part_is_drawn_in_its_colour_where_its_keypoints_are():
    points, present = _pose()
    img = draw_frame(points, present, size=100, box=(0.0, 0.0, 100.0), width=100, height=100)
    assert img.dtype == np.uint8 and img.shape == (100, 100, 3)
    assert _has(img, COLOURS["left_hand"], (78, 78, 97, 97)) and not _has(img, COLOURS["left_hand"], (0, 0, 50, 50))
    assert _has(img, COLOURS["right_hand"], (3, 3, 22, 22)) and not _has(img, COLOURS["right_hand"], (50, 50, 100, 100))
    assert _has(img, COLOURS["face"], (38, 8, 62, 32))
    assert _has(img, COLOURS["body"], (34, 58, 66, 62))  # the shoulder line
    assert (img[0:5, 60:100] == 0).all()  # black where nothing is


def test_missing_parts_and_unsure_joints_are_not_drawn():
    points, _ = _pose()
    img = draw_frame(points, np.array([True, False, True, False]), size=100, box=(0.0, 0.0, 100.0), width=100, height=100)
    assert not _has(img, COLOURS["left_hand"], (0, 0, 100, 100)) and not _has(img, COLOURS["face"], (0, 0, 100, 100))
    assert _has(img, COLOURS["right_hand"], (0, 0, 100, 100))
    points[11, 2] = points[12, 2] = 0.1  # MediaPipe unsure of both shoulders: no shoulder line
    img = draw_frame(points, np.ones(4, bool), size=100, box=(0.0, 0.0, 100.0), width=100, height=100)
    assert not _has(img, COLOURS["body"], (30, 57, 70, 63))


def test_framing_scales_the_source_square_to_the_clip():
    points, present = _pose()
    # A 200x100 source with the picture in its right half: the same drawing as the 100x100 one.
    shifted = points.copy()
    shifted[:, 0] = (points[:, 0] * 100 + 100) / 200
    a = draw_frame(points, present, size=50, box=(0.0, 0.0, 100.0), width=100, height=100)
    b = draw_frame(shifted, present, size=50, box=(100.0, 0.0, 100.0), width=200, height=100)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_the_rendered_store_is_a_clip_store(rendered, keypoints):
    out, report = rendered
    store = ClipStore(out)
    source = json.loads((keypoints / "store.json").read_text())
    assert (store.frames, store.size, store.num_classes) == (8, SIZE, source["num_classes"])
    assert store.labels == (keypoints / "labels.txt").read_text().splitlines()
    assert len(store) == 15 and report["written"] == 15 and report["skipped"] == 0
    assert (out / "prepare_report.json").is_file()
    assert open(out / "manifest.csv").readline().strip().split(",") == list(MANIFEST_COLUMNS)
    clip = store.load(store.entries[0])
    assert clip.dtype == np.uint8 and clip.shape == (8, SIZE, SIZE, 3)
    for part in ("body", "right_hand", "face"):  # drawn in every clip of the synthetic signer
        assert (clip == COLOURS[part]).all(axis=-1).any(), part
    assert (clip == 0).all(axis=-1).mean() > 0.7  # mostly black
    assert store.rows[0]["decoder"] == "skeleton" and store.rows[0]["crop"].count(" ") == 3
    meta = json.loads((out / "store.json").read_text())
    assert meta["rendering"]["colours_rgb"]["left_hand"] == list(COLOURS["left_hand"])
    # The hand moves: frames differ, and the first and last frames differ most in the right hand's colour.
    moving = (clip[0] == COLOURS["right_hand"]).all(-1) != (clip[-1] == COLOURS["right_hand"]).all(-1)
    assert moving.sum() > 10


def test_rerun_keeps_finished_clips_and_another_geometry_is_refused(rendered, keypoints):
    out, _ = rendered
    before = (out / "clips").stat().st_mtime_ns, sorted(p.stat().st_mtime_ns for p in (out / "clips").iterdir())
    report = run_render(RenderConfig(keypoints=keypoints, out=out, frames=8, size=SIZE), progress=False)
    assert report["written"] == 15
    assert sorted(p.stat().st_mtime_ns for p in (out / "clips").iterdir()) == before[1]
    with pytest.raises(StoreError, match="holds a store made with frames=8, size=64"):
        run_render(RenderConfig(keypoints=keypoints, out=out, frames=4, size=SIZE), progress=False)


def test_short_clips_are_padded_and_noted(keypoints, tmp_path):
    report = run_render(RenderConfig(keypoints=keypoints, out=tmp_path / "long", frames=48, size=32), progress=False)
    assert report["written"] == 15 and len(report["padded"]) == 15  # synthetic clips hold 24..40 frames


def test_cli_writes_the_store_and_names_a_missing_keypoint_store(keypoints, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "main" / "render_keypoints.py"
    spec = importlib.util.spec_from_file_location("render_keypoints", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--keypoints", str(keypoints), "--out", str(tmp_path / "s"), "--frames", "4", "--size", "32",
                     "--no-progress"]) == 0  # fmt: skip
    assert "written 15 / 15 skeleton clips" in capsys.readouterr().out
    assert cli.main(["--keypoints", str(tmp_path / "none"), "--out", str(tmp_path / "t"), "--no-progress"]) == 2
    assert "no keypoint store at" in capsys.readouterr().err


@pytest.mark.slow
def test_x3d_xs_trains_on_skeleton_videos_and_the_run_is_in_the_table(tmp_path):
    """The rendered store goes through the same training entry and report as an RGB store."""
    from models.train import run
    from utils import report
    from utils.core.config import config_from_dict

    kp = make_synthetic_keypoints(tmp_path / "pose", glosses=3, per_gloss=5, seed=1)
    store = tmp_path / "wlasl3_skeleton_32"
    run_render(RenderConfig(keypoints=kp, out=store, frames=8, size=32, workers=2), progress=False)
    cfg = config_from_dict({
        "model": {"name": "x3d_xs", "frames": 8, "size": 32, "dropout": 0.0},
        "data": {"root": str(store), "batch_size": 4, "workers": 0},
        "train": {"epochs": 2, "steps_per_epoch": 2, "lr": 1e-3, "seed": 0},
        "results": str(tmp_path / "results"), "run_id": "x3d-skeleton",
    })  # fmt: skip
    record = run(cfg)
    assert record.status == "completed" and record.epochs == 2 and record.metrics["test"]["n"] == 3
    built = report.build_report(tmp_path / "results")
    row = next(r for r in built.rows if r.model == "x3d_xs")
    assert row.run_ids == ["x3d-skeleton"] and row.subset == 3
    assert "| X3D-XS " in built.table("md")
