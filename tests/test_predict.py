"""main/predict.py: a raw video is cut like the clip store (same code), so it gets the stored clip's logits."""

import csv
import json

import numpy as np
import pytest
from conftest import SHARED_WLASL
from export_helpers import FRAMES, SIZE, toy_run_with_onnx

from main.predict import main
from models.evaluation import read_scores
from models.export import export_run, predict_video
from models.export.contract import model_input
from models.export.predict import video_clip
from models.export.runtime import FrameworkRunner
from models.restore import restore_run
from wlasl.prepare import PrepareConfig, run_prepare


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A finished run of the tests' tiny PyTorch family (cutting the video does not depend on the network)."""
    with toy_run_with_onnx(tmp_path_factory.mktemp("predict")) as made:
        yield made


def _manifest(store):
    with (store / "manifest.csv").open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] == "test"]


def _args(row) -> list[str]:
    bbox = ",".join(row["bbox"].split())
    return ["--bbox", bbox, "--start", row["frame_start"], "--end", row["frame_end"]]


def test_predict_gives_the_logits_evaluation_gave_the_stored_clip(toy, capsys):
    scores = read_scores(toy["run"], "test")
    for row in _manifest(toy["store"])[:2]:
        video = toy["videos"] / f"{row['video_id']}.mp4"
        geometry = json.loads((toy["store"] / "store.json").read_text())
        made = video_clip(video, geometry, bbox=[int(v) for v in row["bbox"].split()],
                          start=int(row["frame_start"]), end=int(row["frame_end"]))  # fmt: skip
        np.testing.assert_array_equal(made.clip, np.load(toy["store"] / row["path"]))  # same bytes as the store
        assert main([str(video), "--run", str(toy["run"]), *_args(row), "--json", "--top", "3"]) == 0
        out = json.loads(capsys.readouterr().out)
        want = scores["logits"][list(scores["video_id"]).index(row["video_id"])]
        np.testing.assert_allclose(out["logits"], want, atol=1e-5)
        assert out["top"][0]["label"] == int(np.argmax(want)) and len(out["top"]) == 3
        assert sum(t["prob"] for t in out["top"]) == pytest.approx(1.0)  # 3 classes: all of them
        assert out["crop"] == [int(v) for v in row["crop"].split()]


def test_predict_through_an_export_agrees_with_the_run(toy, capsys):
    row = _manifest(toy["store"])[0]
    video = str(toy["videos"] / f"{row['video_id']}.mp4")
    via_run = predict_video(video, toy["run"], bbox=[int(v) for v in row["bbox"].split()])
    via_onnx = predict_video(video, toy["run"], export="onnx_float32", bbox=[int(v) for v in row["bbox"].split()])
    np.testing.assert_allclose(via_onnx.logits, via_run.logits, atol=1e-5)
    assert via_onnx.source == "export:onnx_float32" and via_onnx.top[0]["gloss"] == via_run.top[0]["gloss"]
    assert main([video, "--run", str(toy["run"]), "--export", "onnx_float32", "--top", "2"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(video) and text[1].startswith(" 1. ") and len(text) == 3


@pytest.mark.parametrize(
    "case, expected",
    [
        ("garbage", "error: unreadable video"),
        ("missing", "error: video not found"),
        ("bbox_outside", "does not fit the 96x72 video"),
        ("bbox_text", "--bbox expected x0,y0,x1,y1"),
        ("no_model", "is not a finished run directory (no checkpoints/state.json)"),
        ("no_run", "is not a run directory (no config.json)"),
        ("no_export", "no export at"),
        ("stream_without_stream_model", "has no streaming model"),
    ],
)
def test_bad_input_is_one_clear_line(toy, tmp_path, capsys, case, expected):
    video = next(toy["videos"].glob("*.mp4"))
    run = toy["run"]
    extra = []
    if case == "garbage":
        video = tmp_path / "garbage.mp4"
        video.write_bytes(b"not a video at all" * 100)
    elif case == "missing":
        video = tmp_path / "nope.mp4"
    elif case == "bbox_outside":
        extra = ["--bbox", "200,200,300,300"]
    elif case == "bbox_text":
        extra = ["--bbox", "1,2,3"]
    elif case == "no_model":
        run = tmp_path / "run"
        run.mkdir()
        (run / "config.json").write_text((toy["run"] / "config.json").read_text())
    elif case == "no_run":
        run = tmp_path / "empty"
        run.mkdir()
    elif case == "no_export":
        extra = ["--export", "tflite_float32"]
    elif case == "stream_without_stream_model":
        extra = ["--export", "onnx_float32", "--stream"]
    assert main([str(video), "--run", str(run), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and expected in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err


@pytest.mark.skipif(not (SHARED_WLASL / "videos").is_dir(), reason="real WLASL sample data (../shared/data/wlasl) not present")
def test_predict_on_a_real_wlasl_clip_matches_evaluating_its_stored_clip(toy, tmp_path, capsys):
    """Preprocess the real sample videos with the run's store geometry, then predict the raw file."""
    out = tmp_path / "real_store"
    run_prepare(PrepareConfig(metadata=SHARED_WLASL / "WLASL100_v0.3.json", nslt=SHARED_WLASL / "nslt_100.json",
                              videos=SHARED_WLASL / "videos", out=out, frames=FRAMES, size=SIZE), progress=False)  # fmt: skip
    with (out / "manifest.csv").open(newline="") as f:
        rows = {r["video_id"]: r for r in csv.DictReader(f)}
    assert {"69241", "07069"} <= set(rows)
    restored = restore_run(toy["run"])
    runner = FrameworkRunner(restored)
    for vid, row in rows.items():
        stored = np.load(out / row["path"])
        want = runner.logits(model_input(stored, FRAMES, SIZE))[0]  # evaluating the stored clip
        assert main([str(SHARED_WLASL / "videos" / f"{vid}.mp4"), "--run", str(toy["run"]), *_args(row), "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        np.testing.assert_allclose(got["logits"], want, atol=1e-5)
        assert got["top"][0]["label"] == int(np.argmax(want))
        assert got["crop"] == [int(v) for v in row["crop"].split()]


def test_exporting_again_replaces_the_export_whole(toy):
    exports = toy["run"] / "exports"
    before = (exports / "onnx_float32" / "metrics.json").stat().st_mtime_ns
    export_run(toy["run"], "onnx", log=lambda _: None)
    assert (exports / "onnx_float32" / "metrics.json").stat().st_mtime_ns > before
    assert not [p.name for p in exports.iterdir() if p.name.startswith(".")]  # no temp or old folder left


def test_export_cli_prints_the_figures_or_one_error_line(toy, capsys):
    from main.export import main as export_main

    assert export_main([str(toy["run"]), "--format", "onnx", "--name", "cli", "--int8", "--calibration", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(str(toy["run"] / "exports" / "cli")) and "onnx int8" in out and "test top-1" in out
    assert export_main([str(toy["run"]), "--format", "tflite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "what works instead: --format onnx" in err[-1]
    assert not (toy["run"] / "exports" / "tflite_float32").exists()
