import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, SHARED_WLASL, prepare_cfg

from wlasl.clip_store import MANIFEST_COLUMNS, ClipStore, StoreError
from wlasl.metadata import load_wlasl
from wlasl.prepare import parse_shard, run_prepare
from wlasl.synthetic import make_synthetic

PREPROCESS = [sys.executable, str(REPO / "main" / "preprocess.py")]


def _manifest(store):
    with open(store / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_end_to_end_synthetic_to_reader(synthetic, tiny_store):
    store = ClipStore(tiny_store)
    glosses, instances = load_wlasl(synthetic["metadata"])
    assert store.labels == glosses and store.num_classes == 3
    assert (store.frames, store.size) == (8, 32)
    # Every instance but the missing and the corrupt one became a clip.
    expected = {i.video_id for i in instances} - {synthetic["missing"], synthetic["corrupt"]}
    assert {e.video_id for e in store.entries} == expected
    by_id = {i.video_id: i for i in instances}
    for entry in store.entries:
        clip = store.load(entry)
        assert isinstance(clip, np.memmap) and clip.dtype == np.uint8 and clip.shape == (8, 32, 32, 3)
        assert entry.label == by_id[entry.video_id].label and entry.split == by_id[entry.video_id].split
    assert {s: len(store.split(s)) for s in ("train", "val", "test")} == {"train": 10, "val": 6, "test": 6}
    assert list(_manifest(tiny_store)[0]) == list(MANIFEST_COLUMNS)


def test_report_lists_skips_with_reasons_and_records_traps(synthetic, tiny_store):
    report = json.loads((tiny_store / "prepare_report.json").read_text())
    reasons = {s["video_id"]: s["reason"] for s in report["skips"]}
    assert reasons == {synthetic["missing"]: "missing", synthetic["corrupt"]: "corrupt"}
    assert report["requested"] == 24 and report["written"] == 22 and report["complete"]
    rows = {r["video_id"]: r for r in _manifest(tiny_store)}
    meta = {i["video_id"]: i for g in json.loads(synthetic["metadata"].read_text()) for i in g["instances"]}
    # frame_end one past the end is clamped and recorded; -1 runs to the last frame.
    clamped = [v for v, m in meta.items() if v in rows and m["frame_end"] > int(rows[v]["frame_count"])]
    assert clamped and sorted(clamped) == report["clamped"]
    # (The synthetic bboxes overrun the frame by up to 8 px, as detector boxes do: noted bbox_clamped.)
    def notes(v):
        return set(rows[v]["status"].split("+")) - {"bbox_clamped"}

    for v in clamped:
        assert notes(v) == {"clamped"} and rows[v]["frame_end"] == rows[v]["frame_count"]
    for v, m in meta.items():
        if v in rows and m["frame_end"] == -1:
            assert rows[v]["frame_end"] == rows[v]["frame_count"] and notes(v) <= {"ok"}
    overrun = [v for v, m in meta.items() if v in rows and (m["bbox"][2] > 160 or m["bbox"][3] > 120)]
    assert overrun and sorted(overrun) == report["bbox_clamped"]
    # The real fps (30) is recorded, not the nominal 25.
    assert {rows[v]["fps_real"] for v in rows} == {"25.0", "30.0"}
    assert {rows[v]["fps_nominal"] for v in rows} == {"25.0"}


def test_clip_content_follows_the_motion(synthetic, tiny_store):
    # The blob is the brightest thing in the crop: its path must move across
    # the clip (not 8 copies of one frame), and opposite classes move opposite ways.
    store = ClipStore(tiny_store)

    def drift(entry):
        clip = store.load(entry, mmap=False).astype(np.float32).sum(-1)
        xs = [np.unravel_index(np.argmax(f), f.shape)[1] for f in clip]
        return xs[-1] - xs[0]

    forward = [drift(e) for e in store.entries if e.label == 0]
    backward = [drift(e) for e in store.entries if e.label == 1]
    assert np.median(forward) > 5 and np.median(backward) < -5


def test_padding_when_range_shorter_than_frames(synthetic, tmp_path):
    out = tmp_path / "long"
    report = run_prepare(prepare_cfg(synthetic, out, frames=40), progress=False)
    assert report["written"] == 22 and len(report["padded"]) == 22
    clip = np.load(out / "clips" / f"{report['padded'][0]}.npy")
    # Repeated frames, not black padding: consecutive duplicates exist.
    assert any(np.array_equal(clip[t], clip[t + 1]) for t in range(39))
    assert clip.reshape(40, -1).mean(axis=1).min() > 10


def test_bad_bbox_and_range_are_recorded_skips(tmp_path):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=6, broken=False, seed=3)
    meta = json.loads(data["metadata"].read_text())
    outside, zero, late = (meta[0]["instances"][i] for i in range(3))
    outside["bbox"] = [500, 500, 600, 600]  # frame is 160x120
    zero["bbox"] = [10, 10, 10, 80]
    late["frame_start"], late["frame_end"] = 999, -1
    data["metadata"].write_text(json.dumps(meta))
    report = run_prepare(prepare_cfg(data, tmp_path / "out"), progress=False)
    reasons = {s["video_id"]: (s["reason"], s["detail"]) for s in report["skips"]}
    assert reasons[outside["video_id"]][0] == "bbox" and "outside the 160x120 frame" in reasons[outside["video_id"]][1]
    assert reasons[zero["video_id"]][0] == "bbox" and "zero-area" in reasons[zero["video_id"]][1]
    assert reasons[late["video_id"]][0] == "frame_range" and "past the end" in reasons[late["video_id"]][1]
    assert report["written"] == 12 - 3


def test_truncated_video_is_resampled_over_what_decodes(tmp_path):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=5, broken=False, seed=4)
    meta = json.loads(data["metadata"].read_text())
    victim = meta[1]["instances"][0]
    path = data["videos"] / f"{victim['video_id']}.mp4"
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * 0.6)])
    report = run_prepare(prepare_cfg(data, tmp_path / "out"), progress=False)
    assert report["short_file"] == [victim["video_id"]]
    row = next(r for r in _manifest(tmp_path / "out") if r["video_id"] == victim["video_id"])
    assert "short_file" in row["status"] and np.load(tmp_path / "out" / row["path"]).shape == (8, 32, 32, 3)


def test_rerun_skips_finished_clips_and_keeps_manifest(synthetic, tiny_store, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_store, out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    report = run_prepare(prepare_cfg(synthetic, out), progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    assert before == after  # nothing rewritten
    assert report["written"] == 22
    assert (out / "manifest.csv").read_text() == (tiny_store / "manifest.csv").read_text()


def test_killed_run_leaves_no_partial_clip_and_resumes_to_same_manifest(tmp_path):
    data = make_synthetic(tmp_path / "raw", glosses=3, per_gloss=16, width=320, height=240, seed=5)
    out = tmp_path / "killed"
    cmd = PREPROCESS + [
        "--metadata", str(data["metadata"]), "--videos", str(data["videos"]),
        "--out", str(out), "--frames", "16", "--size", "64", "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "rows").is_dir() and sum(n.endswith(".json") for n in os.listdir(out / "rows")) >= 5:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list((out / "rows").glob("*.json"))
    assert 5 <= len(done) < 46, "the kill should land mid-run"
    # Whatever is under a real name is whole.
    for row in done:
        assert np.load(out / "clips" / f"{row.stem}.npy").shape == (16, 64, 64, 3)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clean = tmp_path / "clean"
    run_prepare(prepare_cfg(data, clean, frames=16, size=64), progress=False)
    assert (out / "manifest.csv").read_text() == (clean / "manifest.csv").read_text()
    assert len(_manifest(out)) == 46
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_shards_union_equals_one_run(synthetic, tiny_store, tmp_path):
    out = tmp_path / "sharded"
    reports = [run_prepare(prepare_cfg(synthetic, out, shard=(i, 3)), progress=False) for i in (2, 0, 1)]
    assert [r["complete"] for r in reports] == [False, False, True]
    assert (out / "manifest.csv").read_text() == (tiny_store / "manifest.csv").read_text()
    assert reports[-1]["skipped_by_reason"] == {
        "missing": 1, "corrupt": 1, "bbox": 0, "frame_range": 0, "video_id": 0, "error": 0, "duplicate": 0
    }  # fmt: skip


def test_workers_give_the_same_store(synthetic, tiny_store, tmp_path):
    out = tmp_path / "parallel"
    run_prepare(prepare_cfg(synthetic, out, workers=2), progress=False)
    assert (out / "manifest.csv").read_text() == (tiny_store / "manifest.csv").read_text()
    for row in _manifest(out):
        assert np.array_equal(np.load(out / row["path"]), np.load(tiny_store / row["path"]))


def test_shard_defaults_from_slurm_array():
    assert parse_shard(None, {}) == (0, 1)
    assert parse_shard("2/8", {}) == (2, 8)
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert parse_shard(None, env) == (2, 4)
    with pytest.raises(ValueError, match="i/n such as 0/4"):
        parse_shard("2-8", {})


def test_an_item_is_settled_before_its_work_for_every_stage(tmp_path):
    """wlasl.stage's pending_item/pending_instance: the unsafe-id, cached and missing-video rules both stages share."""
    from wlasl.metadata import Instance
    from wlasl.prepare import PrepareConfig
    from wlasl.stage import Outcome, check_videos, pending_instance, pending_item, source_fields

    videos = tmp_path / "videos"
    videos.mkdir()
    cfg = PrepareConfig(metadata=tmp_path / "m.json", videos=videos, out=tmp_path / "store")
    inst = Instance(video_id="00001", gloss="book", label=0, split="train", signer_id=3, bbox=(0, 0, 10, 10),
                    frame_start=1, frame_end=-1, fps_nominal=25, source="aslu")  # fmt: skip
    assert pending_instance(inst, cfg, "clips", ".npy") == Outcome("00001", "skipped", "missing",
                                                                   f"{videos / '00001.mp4'} does not exist")  # fmt: skip
    (videos / "00001.mp4").write_bytes(b"")
    clip, row, video = pending_instance(inst, cfg, "clips", ".npy")
    assert (clip, row, video) == (cfg.out / "clips" / "00001.npy", cfg.out / "rows" / "00001.json", videos / "00001.mp4")
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"")
    assert pending_item(cfg.out, "clips", "00001", ".npy") == (clip, row)  # no row yet: made again
    row.parent.mkdir()
    row.write_text("{}")
    assert pending_instance(inst, cfg, "clips", ".npy") == Outcome("00001", "cached")
    bad = pending_item(cfg.out, "clips", "../x", ".npy")
    assert isinstance(bad, Outcome) and (bad.state, bad.reason) == ("skipped", "video_id")
    assert list(source_fields(inst)) == list(MANIFEST_COLUMNS[:6])
    check_videos(cfg)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        check_videos(PrepareConfig(metadata=cfg.metadata, videos=tmp_path / "none", out=cfg.out))


def test_store_geometry_mismatch_is_refused(synthetic, tiny_store, tmp_path):
    out = tmp_path / "geo"
    shutil.copytree(tiny_store, out)
    with pytest.raises(StoreError, match="holds a store made with frames=8, size=32.*Use another --out"):
        run_prepare(prepare_cfg(synthetic, out, size=64), progress=False)


def test_cli_strict_summary_and_errors(synthetic, tmp_path):
    base = ["--metadata", str(synthetic["metadata"]), "--videos", str(synthetic["videos"]), "--frames", "4", "--size", "16"]
    res = subprocess.run(PREPROCESS + base + ["--out", str(tmp_path / "a"), "--strict"], capture_output=True, text=True)
    assert res.returncode == 1
    assert "written 22 / 24 clips (2 skipped" in res.stdout and "--strict" in res.stderr
    res = subprocess.run(
        PREPROCESS + ["--metadata", str(tmp_path / "none.json"), "--videos", str(tmp_path), "--out", str(tmp_path / "b")],
        capture_output=True, text=True,
    )
    assert res.returncode == 2 and "WLASL metadata not found" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run(PREPROCESS + ["--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--nslt" in res.stdout and "SLURM_ARRAY_TASK_ID" in res.stdout
    assert "--frame-step" in res.stdout and "--decode-threads" in res.stdout


def test_nslt_selects_the_official_split(synthetic, tmp_path):
    out = tmp_path / "nslt"
    cfg = prepare_cfg(synthetic, out, nslt=synthetic["nslt"])
    report = run_prepare(cfg, progress=False)
    assert report["requested"] == 24 and ClipStore(out).num_classes == 3


def test_reader_errors_name_the_fix(tmp_path, tiny_store):
    with pytest.raises(StoreError, match="no clip store at .*python main/preprocess.py"):
        ClipStore(tmp_path / "nothing")
    with pytest.raises(StoreError, match="stores 8 per clip; lower --frames"):
        ClipStore(tiny_store).check_frames(16)


@pytest.mark.skipif(not (SHARED_WLASL / "videos").is_dir(), reason="real WLASL sample data (../shared/data/wlasl) not present")
def test_real_wlasl100_with_most_videos_missing(tmp_path):
    out = tmp_path / "wlasl100"
    cmd = PREPROCESS + [
        "--metadata", str(SHARED_WLASL / "WLASL100_v0.3.json"), "--nslt", str(SHARED_WLASL / "nslt_100.json"),
        "--videos", str(SHARED_WLASL / "videos"), "--subset", "100", "--frames", "20", "--size", "112",
        "--out", str(out), "--no-progress",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "written 2 / 2038 clips (2036 skipped" in res.stdout
    rows = {r["video_id"]: r for r in _manifest(out)}
    assert set(rows) == {"69241", "07069"}
    assert rows["69241"]["fps_real"] == "29.97" and rows["07069"]["fps_real"] == "23.976"
    assert rows["69241"]["frame_end"] == "75" and rows["07069"]["frame_end"] == "30"
    assert rows["69241"]["crop"].split()[1] == "0"  # the box reaches the frame bottom: square capped at 720
    store = ClipStore(out)
    assert store.num_classes == 100 and store.load(store.entries[0]).shape == (20, 112, 112, 3)


def test_frame_step_takes_every_sth_frame_centred_and_records_fallbacks(synthetic, tmp_path):
    from wlasl.geometry import square_crop
    from wlasl.video import decode_frames

    out = tmp_path / "step"
    # 6 frames every 4th frame span 21; the synthetic ranges are 16-33 frames,
    # so some fit and the shorter ones fall back to uniform sampling.
    report = run_prepare(prepare_cfg(synthetic, out, frames=6, frame_step=4), progress=False)
    assert json.loads((out / "store.json").read_text())["frame_step"] == 4
    rows = _manifest(out)
    assert {r["frame_step"] for r in rows} == {"4"}
    lengths = {r["video_id"]: int(r["frame_end"]) - int(r["frame_start"]) + 1 for r in rows}
    fell_back = sorted(v for v, n in lengths.items() if n < 21)
    assert report["step_fallback"] == fell_back and 0 < len(fell_back) < len(rows)
    for r in rows:
        assert ("step_fallback" in r["status"]) == (r["video_id"] in fell_back)
    # The clip holds exactly frames first + offset + 4k of the source, centred.
    row = max(rows, key=lambda r: lengths[r["video_id"]])
    first, n = int(row["frame_start"]) - 1, lengths[row["video_id"]]
    expected = first + (n - 21) // 2 + 4 * np.arange(6)
    box = tuple(int(v) for v in row["crop"].split())
    bbox = tuple(int(v) for v in row["bbox"].split())
    assert box == square_crop(bbox, 160, 120, 0.1)
    ref = decode_frames(synthetic["videos"] / f"{row['video_id']}.mp4", expected, crop=box, size=32).frames
    assert np.array_equal(np.load(out / row["path"]), np.stack([ref[int(i)] for i in expected]))
    # A store is made one way: another step is another store.
    with pytest.raises(StoreError, match="frame_step=4.*frame_step=2"):
        run_prepare(prepare_cfg(synthetic, out, frames=6, frame_step=2), progress=False)
