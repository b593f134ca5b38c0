"""Faults and bad input on the preprocessing stage (issues 11 and 12), each reproduced first."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, prepare_cfg

from wlasl.clip_store import ClipStore, StoreError
from wlasl.prepare import run_prepare
from wlasl.synthetic import make_synthetic, write_mp4

PREPROCESS = [sys.executable, str(REPO / "main" / "preprocess.py")]


def _edit_metadata(data, edit):
    meta = json.loads(data["metadata"].read_text())
    edit(meta)
    data["metadata"].write_text(json.dumps(meta))


def _cli(data, out, *extra, timeout=120):
    cmd = PREPROCESS + ["--metadata", str(data["metadata"]), "--videos", str(data["videos"]), "--out", str(out)]
    cmd += ["--frames", "4", "--size", "16", "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# ---- 12.1: a worker killed by the OOM killer ------------------------------------------------


def _open_videos(pid: int) -> set[str]:
    """Names of the .mp4 files process ``pid`` holds open (from /proc, fast enough to poll)."""
    names = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.endswith(".mp4"):
                names.add(os.path.basename(target))
    except OSError:
        pass
    return names


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN
        import psutil

        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    except OSError:
        return []


def test_sigkilled_worker_ends_the_run_names_the_instance_and_a_rerun_finishes(tmp_path):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=5, broken=False, seed=11)
    # One long, noisy video: decoding it keeps a worker busy long enough to be caught holding it.
    long_id = "80001"
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(7)]
    write_mp4(data["videos"] / f"{long_id}.mp4", (noise[i % 7] for i in range(2000)), fps=30)

    def add(meta):
        inst = dict(meta[1]["instances"][0], video_id=long_id, bbox=[0, 0, 96, 96], frame_start=1, frame_end=-1)
        meta[1]["instances"].append(inst)

    _edit_metadata(data, add)
    out = tmp_path / "store"
    cmd = PREPROCESS + [
        "--metadata", str(data["metadata"]), "--videos", str(data["videos"]), "--out", str(out),
        "--frames", "8", "--size", "16", "--workers", "2", "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for pid in _children(proc.pid):
            if f"{long_id}.mp4" in _open_videos(pid):
                os.kill(pid, signal.SIGKILL)  # what the OOM killer does
                victim = pid
                break
    assert victim is not None, "never caught a worker holding the long video"
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run hangs after a worker was killed")
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert long_id in stderr and f"pid {victim}" in stderr and "rerun" in stderr
    shard = json.loads((out / "reports" / "shard-0-of-1.json").read_text())
    assert [o["video_id"] for o in shard["outcomes"] if o["state"] == "lost"] == [long_id]
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["lost"] == [long_id] and report["written"] == 10
    # The rerun finishes the work (the other clips are kept).
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["written"] == 11 and report["lost"] == []


# ---- 12.2: files get the mode the umask gives -------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_get_the_umask_mode(tmp_path, umask, mode):
    from utils.core.files import atomic_save_npy, atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_save_npy(tmp_path / "b.npy", np.zeros(3, np.uint8))
        data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=5, broken=False, seed=1)
        run_prepare(prepare_cfg(data, tmp_path / "store", frames=4, size=16), progress=False)
    finally:
        os.umask(old)
    files = [tmp_path / "a.txt", tmp_path / "b.npy"] + [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(mode)}, modes


# ---- 12.4 / 12.5: one bad instance is a recorded skip; the run goes on ------------------------


def test_unsafe_or_too_long_video_ids_are_skips_and_nothing_escapes(tmp_path):
    data = make_synthetic(tmp_path / "work" / "raw", glosses=2, per_gloss=5, broken=False, seed=2)
    good = data["videos"] / "90000.mp4"
    # Files an unchecked id would reach: ../../ESCAPED.mp4 two levels above videos/, and an absolute path.
    (tmp_path / "work" / "ESCAPED.mp4").write_bytes(good.read_bytes())
    absolute = tmp_path / "abs_target"
    (tmp_path / "abs_target.mp4").write_bytes(good.read_bytes())
    hostile = {"../../ESCAPED": "not a safe file name", str(absolute): "not a safe file name",
               ".hidden": "not a safe file name", "x" * 300: "too long for a file name"}

    def add(meta):
        base = meta[0]["instances"][0]
        meta[0]["instances"] += [dict(base, video_id=v) for v in hostile]

    _edit_metadata(data, add)
    out = tmp_path / "work" / "out" / "store"
    res = _cli(data, out)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    report = json.loads((out / "prepare_report.json").read_text())
    skips = {s["video_id"]: s for s in report["skips"]}
    for vid, why in hostile.items():
        assert skips[vid]["reason"] == "video_id" and why in skips[vid]["detail"]
        assert "entry 0 (gloss" in skips[vid]["detail"]
    assert report["written"] == 10 and report["skipped_by_reason"]["video_id"] == 4
    # Nothing was written outside the store.
    outside = [p for p in tmp_path.rglob("*.npy") if out not in p.parents]
    assert outside == [] and not (tmp_path / "abs_target.npy").exists()


@pytest.mark.parametrize("bad", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_bbox_is_a_skip_naming_the_instance(tmp_path, bad):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=5, broken=False, seed=3)
    victim = json.loads(data["metadata"].read_text())[1]["instances"][2]["video_id"]
    text = data["metadata"].read_text()
    # json.dumps cannot write these; WLASL-like files in the wild can (Python's json reads them).
    start = text.index(f'"video_id": "{victim}"')
    bbox_at = text.rindex('"bbox": [', 0, start)
    end = text.index("]", bbox_at)
    text = text[:bbox_at] + f'"bbox": [{bad}, 0, 50, 50' + text[end:]
    data["metadata"].write_text(text)
    report = run_prepare(prepare_cfg(data, tmp_path / "out"), progress=False)
    skip = next(s for s in report["skips"] if s["video_id"] == victim)
    assert skip["reason"] == "bbox" and "finite" in skip["detail"] and "entry 1 (gloss" in skip["detail"]
    assert report["written"] == 9


def test_out_under_a_file_or_a_file_is_a_one_line_error(tmp_path):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=3, broken=False, seed=4)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for out in (blocker / "store", blocker):
        res = _cli(data, out)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and "--out" in lines[0] and "directory" in lines[0], res.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: no permission error to provoke")
def test_out_without_write_permission_is_a_one_line_error(tmp_path):
    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=3, broken=False, seed=4)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    res = _cli(data, locked / "store")
    assert res.returncode == 2 and "Traceback" not in res.stderr and str(locked / "store") in res.stderr


def test_store_missing_hint_fits_the_store_it_names(tmp_path):
    with pytest.raises(StoreError) as e:
        ClipStore(tmp_path / "data" / "wlasl100_172")
    assert "--subset 100" in str(e.value) and "--size 172" in str(e.value) and "--size 224" not in str(e.value)
    with pytest.raises(StoreError) as e:
        ClipStore(tmp_path / "mystore")
    msg = str(e.value)
    assert "--subset N" in msg and "--size SIZE" in msg and "172 for MoViNet" in msg and str(tmp_path / "mystore") in msg


# ---- 12.7: a rerun cleans a killed writer's temporary files at once ---------------------------


def test_rerun_removes_dead_writers_temps_at_once_and_keeps_live_ones(tmp_path):
    from utils.core.files import atomic_write_text

    data = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=5, broken=False, seed=5)
    out = tmp_path / "store"
    run_prepare(prepare_cfg(data, out), progress=False)
    clips = out / "clips"
    # A writer killed with -9 mid-write (a real process, really killed).
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); from utils.core import files\n"
        "with files._atomic_file(sys.argv[2]) as f:\n"
        "    f.write(b'half a clip'); f.flush(); os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(REPO), str(clips / "90003.npy")], check=False)
    dead = [p for p in clips.glob(".*.tmp")]
    assert len(dead) == 1, "the killed writer should leave its temp file"
    # Temp names carry the writer's host and pid: .<name>~<host>~<pid>~<random>.tmp
    parts = dead[0].name.split("~")
    assert len(parts) == 4 and parts[1] and int(parts[2]) > 0, dead[0].name
    host = parts[1]
    # A live writer on this host, another host's fresh temp, and an old one.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live = clips / f".90004.npy~{host}~{sleeper.pid}~0a1b2c3d.tmp"
    fresh_elsewhere = clips / ".90005.npy~otherhost~123~0a1b2c3d.tmp"
    old_elsewhere = clips / ".90006.npy~otherhost~124~0a1b2c3d.tmp"
    old_style = clips / ".90007.npy.k2j3h4.tmp"  # made by mkstemp before this change
    for p in (live, fresh_elsewhere, old_elsewhere, old_style):
        p.write_bytes(b"x")
    for p in (old_elsewhere, old_style):
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    try:
        run_prepare(prepare_cfg(data, out), progress=False)
        left = {p.name for p in clips.glob(".*.tmp")}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert left == {live.name, fresh_elsewhere.name}
    atomic_write_text(tmp_path / "t.txt", "x")  # and normal writes leave nothing behind
    assert not list(tmp_path.glob(".*.tmp"))


# ---- 11.6: the data is what the model is told it is -------------------------------------------


@pytest.fixture
def store_copy(tiny_store, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_store, out)
    return out


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.joinpath("labels.txt").write_text("".join(f"{g}\n" for g in _labels(s)[:2])),
         r"labels.txt: expected 3 lines \(num_classes in store.json\), received 2"),
        (lambda s: s.joinpath("labels.txt").write_text("".join(f"{g}\n" for g in _labels(s) + ["extra"])),
         r"labels.txt: expected 3 lines .* received 4"),
        (lambda s: _edit_row(s, label="3"), r"manifest.csv: line 2 \(video_id \d+\): label 3 expected 0..2"),
        (lambda s: _edit_row(s, gloss="wrong"), r"manifest.csv: line 2 .*gloss 'wrong' expected 'motion"),
    ],
    ids=["labels-short", "labels-long", "label-out-of-range", "gloss-mismatch"],
)
def test_store_refuses_labels_that_disagree(store_copy, edit, match):
    edit(store_copy)
    with pytest.raises(StoreError, match=match):
        ClipStore(store_copy)


def _labels(store):
    return store.joinpath("labels.txt").read_text().splitlines()


def _edit_row(store, **changes):
    import csv

    path = store / "manifest.csv"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows, fields = list(reader), reader.fieldnames
    rows[0].update(changes)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize(
    "array",
    [np.zeros((8, 32, 32), np.uint8), np.zeros((8, 16, 16, 3), np.uint8), np.zeros((8, 32, 32, 3), np.float32)],
    ids=["no-channel-axis", "16x16", "float32"],
)
def test_load_refuses_a_clip_of_the_wrong_shape_or_dtype(store_copy, array):
    store = ClipStore(store_copy)
    entry = store.entries[0]
    np.save(entry.path, array)
    for mmap in (True, False):
        with pytest.raises(StoreError, match=rf"{entry.path}: expected a uint8 clip of shape \(8, 32, 32, 3\)"):
            store.load(entry, mmap=mmap)
    entry.path.write_bytes(entry.path.read_bytes()[:20])
    with pytest.raises(StoreError, match=rf"{entry.path}: cannot read the clip"):
        store.load(entry)
