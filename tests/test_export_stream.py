"""A stream MoViNet run -> clip TFLite + streaming TFLite (one frame + states), checked frame by frame."""

from pathlib import Path

import numpy as np
import pytest
from export_helpers import FRAMES, SIZE, make_store, read_export, train_run

from models.export import export_run, open_export


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_stream")
    store = make_store(root)
    # a0 with (2+1)D convs: the cheapest real MoViNet on CPU (the released stream configuration).
    return train_run(store, root / "results", "mv", model="movinet_a0", stream=True, options={"conv_type": "2plus1d"}, dry_run=True)


@pytest.fixture(scope="module")
def exported(stream_run):
    return export_run(stream_run, "tflite", log=lambda _: None)


def test_stream_run_exports_a_clip_model_and_a_streaming_model(stream_run, exported):
    contract, metrics = read_export(stream_run, "tflite_float32")
    assert contract["files"] == {"model": "model.tflite", "stream": "stream.tflite"}
    assert metrics["max_abs_logit_diff"] < 1e-4 and metrics["agreement"] == 1.0
    stream = contract["stream"]
    assert stream["image"]["shape"] == [1, 1, SIZE, SIZE, 3] and stream["image"]["dtype"] == "uint8"
    assert stream["inputs"][0] == "image" and stream["outputs"][0] == "logits"
    assert stream["inputs"][1:] == stream["outputs"][1:] == sorted(stream["states"])
    # After the last frame the streaming file gives what the clip model gives for the whole clip,
    # and each frame's running logits match the TensorFlow streaming graph it was converted from.
    s = metrics["stream"]
    assert s["frames_per_clip"] == FRAMES
    assert s["max_abs_logit_diff_vs_clip_model"] < 1e-4 and s["agreement_with_clip_model"] == 1.0
    assert s["max_abs_logit_diff_per_frame_vs_tf_stream"] < 1e-4
    assert s["size_bytes"] == (exported / "stream.tflite").stat().st_size and s["latency_ms_per_frame"] > 0


def test_streaming_states_carry_the_past(exported):
    """The running logits change from frame to frame, and a frame's logits depend on the frames before it."""
    runner = open_export(exported, stream=True)
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (1, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    running = list(runner.frames(clip))
    assert len(running) == FRAMES and not np.allclose(running[0], running[-1])
    other = clip.copy()
    other[:, 0] = 255 - other[:, 0]  # change only the first frame
    assert not np.allclose(list(runner.frames(other))[-1], running[-1])
    np.testing.assert_allclose(runner.logits(clip), open_export(exported).logits(clip), atol=1e-4)


def test_predict_stream_prints_the_running_prediction(stream_run, exported, capsys):
    import csv
    import json

    from main.predict import main
    from models.export import predict_video

    store = Path(json.loads((stream_run / "config.json").read_text())["data"]["root"])
    with (store / "manifest.csv").open(newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["split"] == "test")
    video = store.parent / "raw" / "videos" / f"{row['video_id']}.mp4"
    bbox = ",".join(row["bbox"].split())
    assert main([str(video), "--run", str(stream_run), "--export", "tflite_float32", "--stream", "--bbox", bbox]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:FRAMES]] == [f"frame {t:>3}" for t in range(1, FRAMES + 1)]
    streamed = predict_video(video, stream_run, export="tflite_float32", stream=True, bbox=[int(v) for v in row["bbox"].split()])
    whole = predict_video(video, stream_run, export="tflite_float32", bbox=[int(v) for v in row["bbox"].split()])
    np.testing.assert_allclose(streamed.logits, whole.logits, atol=1e-4)
    assert streamed.stream[-1]["gloss"] == whole.top[0]["gloss"] and len(streamed.stream) == FRAMES
