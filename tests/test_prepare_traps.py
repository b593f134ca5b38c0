"""Traps of real WLASL data in the data stages (issue 22), each reproduced first.

- one instance's unexpected exception ends the whole stage (seen on real files: a
  UnicodeDecodeError after 41 clips, a WorkerError traceback with --workers 2);
- a bbox measured on another rendition of the video (68011: for 854x480, the file
  is 636x360) is cut silently at the wrong place;
- byte-identical videos listed under two ids in two splits (57948/57949) leak
  training clips into val or test without a word.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO, prepare_cfg

from wlasl.geometry import fit_bbox, square_crop
from wlasl.keypoints import STAGE as KEYPOINT_STAGE
from wlasl.prepare import run_prepare
from wlasl.stage import Outcome, exit_status, open_out, run_stage
from wlasl.synthetic import make_synthetic

# ---- an unexpected exception in one instance -------------------------------------------------

_SABOTAGED = """
import sys
sys.path.insert(0, {repo!r})
import wlasl.prepare as prepare
real = prepare.make_clip

def make_clip(video, inst, cfg):
    if inst.video_id == {victim!r}:
        raise KeyError("a surprise no reader expected")
    return real(video, inst, cfg)

prepare.make_clip = make_clip
sys.argv[0] = {script!r}
import runpy
runpy.run_path({script!r}, run_name="__main__")
"""


def _run(script, data, out, *extra):
    cmd = [sys.executable, str(script), "--metadata", str(data["metadata"]), "--videos", str(data["videos"]),
           "--out", str(out), "--frames", "4", "--size", "16", "--no-progress", *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unexpected_exception_is_a_recorded_error_skip_and_the_stage_goes_on(tmp_path, workers):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=5, broken=False, seed=21)
    victim = json.loads(data["metadata"].read_text())[0]["instances"][3]["video_id"]
    sabotaged = tmp_path / "sabotaged_preprocess.py"
    script = str(REPO / "main" / "preprocess.py")
    sabotaged.write_text(textwrap.dedent(_SABOTAGED.format(repo=str(REPO), victim=victim, script=script)))
    out = tmp_path / "store"
    res = _run(sabotaged, data, out, "--workers", workers)
    assert res.returncode == 4, res.stderr
    assert "Traceback" not in res.stderr and "WorkerError" not in res.stderr
    assert victim in res.stderr and "KeyError" in res.stderr and "Rerun" in res.stderr
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["written"] == 9 and report["errors"] == [victim] and report["complete"] is False
    skip = next(s for s in report["skips"] if s["video_id"] == victim)
    assert skip["reason"] == "error" and skip["detail"].startswith("KeyError: 'a surprise no reader expected'")
    assert "error" in res.stdout  # the summary lists the skip by reason
    # A rerun (the surprise gone) retries exactly that instance and completes the store.
    again = _run(REPO / "main" / "preprocess.py", data, out, "--workers", workers)
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["written"] == 10 and report["errors"] == [] and report["complete"] is True


def test_error_skips_outrank_strict_and_are_named(tmp_path):
    report = {"skips": [{"video_id": "7", "reason": "error", "detail": "OSError: boom"}], "skipped": 1,
              "run": {"report": "store/prepare_report.json", "lost": []}}  # fmt: skip
    assert exit_status(report, strict=True) == 4
    assert exit_status({**report, "skips": [], "skipped": 1}, strict=True) == 1
    assert exit_status({**report, "skips": [], "skipped": 1}, strict=False) == 0


def _boom(inst):
    if inst.video_id.endswith("1"):
        raise ZeroDivisionError("division by zero")
    return Outcome(inst.video_id, "skipped", "missing", "no file")


def test_the_keypoint_stage_follows_the_same_rule(tmp_path):
    """The runner both stages share catches the exception (the keypoint stage needs MediaPipe only to do work)."""
    from wlasl.stage import select_instances

    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=3, broken=False, seed=22)
    _, chosen = select_instances(data["metadata"], None, None)
    open_out(tmp_path / "kp", KEYPOINT_STAGE)
    report = run_stage(KEYPOINT_STAGE, out=tmp_path / "kp", chosen=chosen, work=_boom, progress=False)
    errors = [s for s in report["skips"] if s["reason"] == "error"]
    assert [s["video_id"] for s in errors] == [i.video_id for i in chosen if i.video_id.endswith("1")]
    assert errors[0]["detail"].startswith("ZeroDivisionError: division by zero (at test_prepare_traps.py:")
    assert report["complete"] is False and report["skipped_by_reason"]["missing"] == len(chosen) - len(errors)


# ---- a bbox that does not fit the decoded frame ----------------------------------------------


def test_bbox_rule_inside_clamped_rescaled_or_refused():
    assert fit_bbox((10, 20, 300, 350), 640, 360).status == ""
    # Up to 5% over the edge: a detector box touching the border; clamped.
    fit = fit_bbox((10, 20, 660, 370), 640, 360)
    assert fit.status == "bbox_clamped" and square_crop(fit.bbox, 640, 360)[3] <= 360
    # 68011: a bbox measured on the 854x480 rendition of a 636x360 file.
    fit = fit_bbox((190, 30, 690, 480), 636, 360)
    assert fit.status == "bbox_rescaled" and "848x480 rendition" in fit.detail  # 636 x 480/360
    assert fit.bbox == pytest.approx((142.5, 22.5, 517.5, 360.0))
    # 17086 (real, 'dog'): [417, 61, 834, 720] in a 736x414 file: measured on 1280x720.
    fit = fit_bbox((417, 61, 834, 720), 736, 414)
    assert fit.status == "bbox_rescaled" and "1280x720" in fit.detail
    assert fit.bbox[3] == pytest.approx(414.0) and fit.bbox[0] == pytest.approx(417 * 414 / 720)
    # Far past any rendition (x reaches 10x the width at the same height): refused, with the numbers.
    with pytest.raises(ValueError, match=r"outside the 640x360 frame.*rendition"):
        fit_bbox((100, 10, 6400, 300), 640, 360)
    with pytest.raises(ValueError, match="zero-area"):
        fit_bbox((5, 5, 5, 9), 640, 360)


def test_a_bbox_from_a_larger_rendition_is_rescaled_recorded_and_cut_on_the_signer(tmp_path):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=3, broken=False, seed=23, width=160, height=120)
    meta = json.loads(data["metadata"].read_text())
    inst = meta[0]["instances"][2]
    victim, true_box = inst["video_id"], list(inst["bbox"])
    # Write the bbox as measured on the 320x240 rendition of this 160x120 file (x2).
    inst["bbox"] = [v * 2 for v in true_box]
    data["metadata"].write_text(json.dumps(meta))
    report = run_prepare(prepare_cfg(data, tmp_path / "a", frames=4, size=32), progress=False)
    assert report["bbox_rescaled"] == [victim]
    rows = {r["video_id"]: r for r in _manifest(tmp_path / "a")}
    assert "bbox_rescaled" in rows[victim]["status"].split("+")
    # The crop is the one the true bbox gives (the rendition's scale found exactly).
    expected = square_crop(tuple(true_box), 160, 120, 0.1)
    assert tuple(int(v) for v in rows[victim]["crop"].split()) == expected


def _manifest(store):
    import csv

    with (store / "manifest.csv").open() as f:
        return list(csv.DictReader(f))


# ---- byte-identical videos in two splits -----------------------------------------------------


def _with_leak(tmp_path):
    """A train video listed again under a new id in val and in test, as WLASL's repeated URLs do."""
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=5, broken=False, seed=24)
    meta = json.loads(data["metadata"].read_text())
    train = next(i for i in meta[1]["instances"] if i["split"] == "train")
    copies = {"95001": "val", "95002": "test"}
    for vid, split in copies.items():
        shutil.copy(data["videos"] / f"{train['video_id']}.mp4", data["videos"] / f"{vid}.mp4")
        meta[1]["instances"].append(dict(train, video_id=vid, split=split))
    data["metadata"].write_text(json.dumps(meta))
    return data, train["video_id"], copies


def test_split_leakage_is_reported_and_can_be_dropped_from_val_and_test(tmp_path):
    data, original, copies = _with_leak(tmp_path)
    report = run_prepare(prepare_cfg(data, tmp_path / "kept", frames=4, size=16), progress=False)
    assert report["written"] == 12 and len(report["split_leakage"]) == 1
    group = report["split_leakage"][0]
    assert [(v["video_id"], v["split"]) for v in group["videos"]] == [(original, "train"), ("95001", "val"), ("95002", "test")]
    rows = _manifest(tmp_path / "kept")
    assert len({r["sha256"] for r in rows}) == 10 and all(len(r["sha256"]) == 64 for r in rows)

    out = tmp_path / "dropped"
    cfg = prepare_cfg(data, out, frames=4, size=16, drop_duplicates=True)
    report = run_prepare(cfg, progress=False)
    assert report["written"] == 10 and report["skipped_by_reason"]["duplicate"] == 2
    assert {s["video_id"] for s in report["skips"] if s["reason"] == "duplicate"} == set(copies)
    assert original in report["skips"][0]["detail"] and report["duplicates_dropped"] is True
    assert {r["video_id"] for r in _manifest(out)}.isdisjoint(copies)
    # The leak stays listed, and the store remembers the choice: a run without the flag is refused.
    assert len(report["split_leakage"]) == 1
    from wlasl.clip_store import StoreError

    with pytest.raises(StoreError, match="drop_duplicates"):
        run_prepare(prepare_cfg(data, out, frames=4, size=16), progress=False)


def test_the_clip_and_keypoint_manifests_share_the_source_hash_column():
    from wlasl.clip_store import MANIFEST_COLUMNS
    from wlasl.keypoint_store import KEYPOINT_COLUMNS

    assert "sha256" in MANIFEST_COLUMNS and "sha256" in KEYPOINT_COLUMNS
    assert np.array_equal(MANIFEST_COLUMNS[:12], KEYPOINT_COLUMNS[:12])
