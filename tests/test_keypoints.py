"""The keypoint stage (issue 16 part 1): store layout, synthetic store, extraction in the pose environment.

Tests that run MediaPipe need the pose environment (.venv-pose, `make
pose-setup`); they skip without it unless SLR_REQUIRE_POSE=1 (CI sets it).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, SHARED_WLASL

from wlasl.clip_store import StoreError
from wlasl.keypoint_store import NUM_KEYPOINTS, PARTS, KeypointStore, part_slices
from wlasl.synthetic import make_synthetic
from wlasl.synthetic_pose import make_synthetic_keypoints

EXTRACT = [sys.executable, str(REPO / "main" / "extract_keypoints.py")]
POSE_PY = REPO / ".venv-pose" / "bin" / "python"
needs_pose = pytest.mark.skipif(
    not POSE_PY.is_file() and os.environ.get("SLR_REQUIRE_POSE") != "1",
    reason="no pose environment (.venv-pose): run `make pose-setup`; SLR_REQUIRE_POSE=1 turns this skip into a failure",
)


@pytest.fixture(scope="module")
def pose_store(tmp_path_factory):
    return KeypointStore(make_synthetic_keypoints(tmp_path_factory.mktemp("pose") / "kp", glosses=4, per_gloss=6, seed=1))


def test_synthetic_store_reads_back_with_the_layout(pose_store):
    assert pose_store.num_classes == 4 and len(pose_store) == 24 and NUM_KEYPOINTS == 33 + 21 + 21 + 24
    assert {s: len(pose_store.split(s)) for s in ("train", "val", "test")} == {"train": 16, "val": 4, "test": 4}
    clip = pose_store.load(pose_store.entries[0])
    t = clip.points.shape[0]
    assert clip.points.dtype == np.float16 and clip.points.shape == (t, NUM_KEYPOINTS, 3) and 24 <= t <= 40
    assert clip.present.shape == (t, len(PARTS)) and clip.present[:, 0].all()
    # A missing hand is zeros with a False flag, as the extraction writes it.
    hand = part_slices()["right_hand"]
    gone = ~clip.present[:, 2]
    assert np.all(clip.points[gone][:, hand] == 0) and np.all(clip.points[~gone][:, hand, 2] == 1)


def test_synthetic_classes_differ_only_in_time(pose_store):
    """Every class visits the same hand positions; the order in time tells them apart."""
    wrist = part_slices()["right_hand"].start
    by_label = {}
    for e in pose_store.entries:
        clip = pose_store.load(e)
        xy = clip.points[clip.present[:, 2], wrist, :2].astype(np.float32)
        by_label.setdefault(e.label, []).append(xy)
    means = np.array([np.mean([xy.mean(0) for xy in v], 0) for _, v in sorted(by_label.items())])
    spans = np.array([np.mean([np.ptp(xy, 0) for xy in v], 0) for _, v in sorted(by_label.items())])
    # Same average position and the same extent of travel in every class...
    assert np.abs(means - means.mean(0)).max() < 0.03 and np.abs(spans - spans.mean(0)).max() < 0.05
    # ...but forwards (0) ends where backwards (1) starts.
    drift = {k: np.mean([xy[-1, 0] - xy[0, 0] for xy in v]) for k, v in by_label.items()}
    assert drift[0] > 0.1 and drift[1] < -0.1 and abs(drift[2]) < 0.05 and abs(drift[3]) < 0.05


def test_keypoint_store_refuses_wrong_files(pose_store, tmp_path):
    entry = pose_store.entries[0]
    bad = tmp_path / "bad.npz"
    np.savez(bad, points=np.zeros((5, 10, 3), np.float16), present=np.zeros((5, 4), bool), frames=np.arange(5))
    with pytest.raises(StoreError, match=rf"{bad}: expected points float16 \(T, {NUM_KEYPOINTS}, 3\)"):
        pose_store.load(bad)
    with pytest.raises(StoreError, match="no keypoint store at .*main/extract_keypoints.py"):
        KeypointStore(tmp_path / "none")
    assert pose_store.load(entry).frames.dtype == np.int32


def test_missing_pose_environment_says_how_to_make_it(tmp_path):
    env = dict(os.environ, SLR_POSE_VENV=str(tmp_path / "no-venv"))
    args = ["--metadata", "m.json", "--videos", str(tmp_path), "--out", str(tmp_path / "o")]
    res = subprocess.run(EXTRACT + args, capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{tmp_path / 'no-venv'}/bin/python does not exist" in res.stderr and "make pose-setup" in res.stderr
    assert "requirements-pose.txt" in res.stderr
    # --help and usage errors need no pose environment.
    res = subprocess.run(EXTRACT + ["--help"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "--max-frames" in res.stdout and ".venv-pose" in res.stdout


def test_pose_env_code_imports_only_what_the_pose_env_has():
    """wlasl.keypoints and its imports must load without PyAV, TensorFlow, torch or pandas."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('av', 'tensorflow', 'torch', 'pandas', 'keras', 'models'):\n"
        "            raise ImportError(f'{name} is not in the pose environment')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import wlasl.keypoints, wlasl.keypoint_store, wlasl.video\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('wlasl', 'utils')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert all(m.startswith(("wlasl", "utils.core", "utils")) for m in eval(res.stdout))


@needs_pose
@pytest.mark.skipif(not (SHARED_WLASL / "videos").is_dir(), reason="real WLASL sample data (../shared/data/wlasl) not present")
def test_extraction_on_real_clips_finds_the_signer_and_hands(tmp_path):
    out = tmp_path / "wlasl100_pose"
    cmd = EXTRACT + [
        "--metadata", str(SHARED_WLASL / "WLASL100_v0.3.json"), "--nslt", str(SHARED_WLASL / "nslt_100.json"),
        "--videos", str(SHARED_WLASL / "videos"), "--out", str(out), "--no-progress", "--max-frames", "30",
    ]
    # Started with the main interpreter: the script re-runs itself in .venv-pose.
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "written 2 / 2038 keypoint clips (2036 skipped" in res.stdout
    report = json.loads((out / "keypoints_report.json").read_text())
    # 07069 has 30 frames, all taken; 69241's 75 are capped to 30 sampled uniformly.
    assert report["frames_total"] == 60 and report["frames_no_person"] <= 1 and report["capped"] == ["69241"]
    assert report["frames_no_hands"] <= 0.5 * 60  # hands in most frames
    store = KeypointStore(out)
    assert store.num_classes == 100 and {e.video_id for e in store.entries} == {"69241", "07069"}
    rows = {r["video_id"]: r for r in store.rows}
    assert rows["69241"]["frames"] == "30" and rows["69241"]["status"] == "capped" and rows["07069"]["status"] == "ok"
    assert (rows["69241"]["width"], rows["69241"]["height"]) == ("1280", "720") and rows["69241"]["frame_end"] == "75"
    clip = store.load(next(e for e in store.entries if e.video_id == "69241"))
    assert clip.frames[0] == 1 and clip.frames[-1] == 73 and np.all(np.diff(clip.frames) >= 2)
    body = clip.points[:, part_slices()["body"]].astype(np.float32)
    # The signer stands in the middle of the frame: nose x near the bbox centre (635 / 1280).
    assert 0.35 < np.median(body[:, 0, 0]) < 0.65 and clip.present[:, 0].all()
    hands = clip.present[:, 1] | clip.present[:, 2]
    assert hands.mean() > 0.5


@needs_pose
def test_extraction_resumes_after_kill9_to_the_same_store(tmp_path):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=4, broken=True, seed=7)
    base = ["--metadata", str(data["metadata"]), "--videos", str(data["videos"]), "--max-frames", "4", "--no-progress"]
    clean = tmp_path / "clean"
    res = subprocess.run(EXTRACT + base + ["--out", str(clean)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(EXTRACT + base + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "rows").is_dir() and len(os.listdir(out / "rows")) >= 2:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # the re-run replaced this process (exec): the extraction itself dies
    proc.wait()
    done = {p.name for p in (out / "rows").glob("*.json")}
    assert 2 <= len(done) < 6, "the kill should land mid-run"
    res = subprocess.run(EXTRACT + base + ["--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (out / "manifest.csv").read_text() == (clean / "manifest.csv").read_text()
    report = json.loads((out / "keypoints_report.json").read_text())
    assert report["written"] == 6 and {s["reason"] for s in report["skips"]} == {"missing", "corrupt"}
    for row in KeypointStore(out).entries:
        a, b = np.load(row.path), np.load(clean / "keypoints" / row.path.name)
        for key in ("points", "present", "frames"):
            assert np.array_equal(a[key], b[key]), (row.video_id, key)
    assert not [p for p in out.rglob("*.tmp")]
