import numpy as np
import pytest

from wlasl.synthetic import write_mp4
from wlasl.video import DecodeError, decode_frames, probe


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    """80 frames of distinct brightness, keyframe every 12."""
    frames = [np.full((48, 64, 3), 3 * i, np.uint8) for i in range(80)]
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
    assert (info.frame_count, info.width, info.height) == (80, 64, 48)
    assert info.fps == pytest.approx(30.0)


@pytest.mark.parametrize("wanted", [[30, 17, 17, 25, 39], [50, 41, 41, 63, 79]], ids=["no-seek", "seek"])
def test_decodes_exactly_the_wanted_frames_even_after_seeking(counter_video, reference, wanted):
    # Unsorted, with repeats; the second set starts past SEEK_MIN_FRAMES and
    # between keyframes (36, 48), so an inexact seek would shift frames.
    from wlasl.video import SEEK_MIN_FRAMES

    assert min(wanted) < SEEK_MIN_FRAMES or min(wanted) % 12 != 0
    dec = decode_frames(counter_video, wanted)
    assert sorted(dec.frames) == sorted(set(wanted))
    for i, frame in dec.frames.items():
        assert np.array_equal(frame, reference[i]), f"frame {i} differs from sequential decoding"
    # The frames really differ, so an off-by-one seek could not pass.
    assert not np.array_equal(reference[40], reference[41])
    assert dec.decoded_until == max(wanted)


def test_plan_callable_gets_declared_count(counter_video, reference):
    seen = []
    dec = decode_frames(counter_video, lambda count: seen.append(count) or [count - 1])
    assert seen == [80] and np.array_equal(dec.frames[79], reference[79])


def test_stops_after_the_last_wanted_frame(counter_video):
    dec = decode_frames(counter_video, [3, 5])
    assert dec.decoded_until == 5  # nothing past the range is decoded


def test_truncated_file_gives_the_frames_it_holds(counter_video, tmp_path):
    data = counter_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    dec = decode_frames(cut, [0, 79])
    # The index (moov) is at the front, so the file opens and declares 80
    # frames, but decoding stops where the data does.
    assert dec.frame_count == 80
    assert 0 in dec.frames and 10 < dec.decoded_until < 79 and 79 not in dec.frames


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
