import numpy as np
import pytest

from wlasl.synthetic import write_mp4
from wlasl.video import DecodeError, decode_frames, probe


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    """40 frames of distinct brightness."""
    frames = [np.full((48, 64, 3), 6 * i, np.uint8) for i in range(40)]
    path = tmp_path_factory.mktemp("video") / "counter.mp4"
    write_mp4(path, frames, fps=30)
    return path


@pytest.fixture(scope="module")
def reference(counter_video):
    """Every frame, read sequentially with no seeking: the ground truth."""
    import cv2

    cap = cv2.VideoCapture(str(counter_video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


def test_probe_reports_real_fps_and_size(counter_video):
    info = probe(counter_video)
    assert (info.frame_count, info.width, info.height) == (40, 64, 48)
    assert info.fps == pytest.approx(30.0)


def test_decodes_exactly_the_wanted_frames_even_after_seeking(counter_video, reference):
    # Frames after keyframe 12 and 24, plus repeats and unsorted input.
    wanted = [30, 17, 17, 25, 39]
    dec = decode_frames(counter_video, wanted)
    assert sorted(dec.frames) == [17, 25, 30, 39]
    for i, frame in dec.frames.items():
        assert np.array_equal(frame, reference[i]), f"frame {i} differs from sequential decoding"
    # The frames really differ, so an off-by-one seek could not pass.
    assert not np.array_equal(reference[16], reference[17])
    assert dec.decoded_until == 39


def test_plan_callable_gets_declared_count(counter_video, reference):
    seen = []
    dec = decode_frames(counter_video, lambda count: seen.append(count) or [count - 1])
    assert seen == [40] and np.array_equal(dec.frames[39], reference[39])


def test_stops_after_the_last_wanted_frame(counter_video):
    dec = decode_frames(counter_video, [3, 5])
    assert dec.decoded_until == 5  # nothing past the range is decoded


def test_truncated_file_gives_the_frames_it_holds(counter_video, tmp_path):
    data = counter_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    dec = decode_frames(cut, [0, 39])
    # The index (moov) is at the front, so the file opens and declares 40
    # frames, but decoding stops where the data does.
    assert dec.frame_count == 40
    assert 0 in dec.frames and 10 < dec.decoded_until < 39 and 39 not in dec.frames


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 10])
def test_empty_or_garbage_raise_decode_error(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(DecodeError):
        decode_frames(bad, [0])


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="video not found"):
        decode_frames(tmp_path / "nope.mp4", [0])


def test_pyav_fallback_matches_opencv(counter_video, monkeypatch):
    """The fallback (used when OpenCV cannot open a file) gives the same frames."""
    import wlasl.video as video

    wanted = [0, 13, 27]
    primary = decode_frames(counter_video, wanted)

    def refuse(path, wanted):
        raise video.DecodeError("OpenCV refused (simulated)")

    monkeypatch.setattr(video, "_decode_opencv", refuse)
    fallback = decode_frames(counter_video, wanted)
    assert fallback.decoder == "pyav" and sorted(fallback.frames) == wanted
    for i in wanted:
        diff = np.abs(fallback.frames[i].astype(int) - primary.frames[i].astype(int)).mean()
        assert diff < 2.0, f"frame {i}: PyAV and OpenCV differ by {diff:.2f} grey levels on average"
    assert fallback.fps == pytest.approx(30.0) and (fallback.width, fallback.height) == (64, 48)
