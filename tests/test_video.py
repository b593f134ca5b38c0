import numpy as np
import pytest
from conftest import SHARED_WLASL

from wlasl.synthetic import _signer_frames, write_mp4
from wlasl.video import DecodeError, decode_frames, probe

DECODERS = ["pyav", "opencv"]


def _counter(path, preset):
    """80 frames, frame i a flat grey of level 10 + 3 * i, keyframe every 12."""
    write_mp4(path, (np.full((48, 64, 3), 10 + 3 * i, np.uint8) for i in range(80)), fps=30, preset=preset)
    return path


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    """No B-frames (x264 ultrafast)."""
    return _counter(tmp_path_factory.mktemp("video") / "counter.mp4", "ultrafast")


@pytest.fixture(scope="module")
def bframe_video(tmp_path_factory):
    """With B-frames and CABAC (x264 veryfast), as web video: decode order != presentation order."""
    return _counter(tmp_path_factory.mktemp("video") / "counter_b.mp4", "veryfast")


def _level(frame) -> float:
    return float(frame.astype(np.float32).mean())


def test_probe_reports_real_fps_and_size(counter_video):
    info = probe(counter_video)
    assert (info.frame_count, info.width, info.height) == (80, 64, 48)
    assert info.fps == pytest.approx(30.0)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("video", ["counter_video", "bframe_video"])
@pytest.mark.parametrize("wanted", [[30, 17, 17, 25, 39], [50, 41, 41, 63, 79]], ids=["no-seek", "seek"])
def test_decodes_exactly_the_wanted_frames_even_after_seeking(request, decoder, video, wanted):
    # Unsorted, with repeats; the second set starts past SEEK_MIN_FRAMES and
    # between keyframes (36, 48), so an inexact seek would shift frames.
    from wlasl.video import SEEK_MIN_FRAMES

    path = request.getfixturevalue(video)
    assert min(wanted) < SEEK_MIN_FRAMES or min(wanted) % 12 != 0
    # Ground truth: every frame, read from frame 0 with no seeking. Frame i
    # is grey 10 + 3 * i, so the brightness names the frame and neighbours differ.
    sequential = decode_frames(path, range(80), decoders=(decoder,)).frames
    levels = [_level(sequential[i]) for i in range(80)]
    assert all(abs(level - 10 - 3 * i) < 4 for i, level in enumerate(levels)) and np.all(np.diff(levels) > 1.5)
    dec = decode_frames(path, wanted, decoders=(decoder,))
    assert dec.decoder == decoder and sorted(dec.frames) == sorted(set(wanted))
    for i, frame in dec.frames.items():
        assert np.array_equal(frame, sequential[i]), f"frame {i} reads {_level(frame):.1f}, expected {levels[i]:.1f}"
    assert dec.decoded_until == max(wanted)


def test_plan_callable_gets_declared_count(counter_video):
    seen = []
    dec = decode_frames(counter_video, lambda count: seen.append(count) or [count - 1])
    assert seen == [80] and list(dec.frames) == [79] and abs(_level(dec.frames[79]) - 10 - 3 * 79) < 4


@pytest.mark.parametrize("decoder", DECODERS)
def test_stops_after_the_last_wanted_frame(counter_video, decoder):
    dec = decode_frames(counter_video, [3, 5], decoders=(decoder,))
    assert dec.decoded_until == 5  # nothing past the range is decoded


@pytest.mark.parametrize("decoder", DECODERS)
def test_truncated_file_gives_the_frames_it_holds(counter_video, tmp_path, decoder):
    data = counter_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    dec = decode_frames(cut, [0, 79], decoders=(decoder,))
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


def test_callable_refusals_propagate_unchanged(counter_video):
    class Refused(Exception):
        pass

    def crop(width, height):
        raise Refused(f"{width}x{height}")

    with pytest.raises(Refused, match="64x48"):
        decode_frames(counter_video, [0], crop=crop, size=16)


@pytest.fixture(scope="module")
def signer_video(tmp_path_factory):
    """A textured 640x360 signer (3 frames): detail for the resize to get wrong."""
    frames = _signer_frames(np.random.default_rng(3), 640, 360, 3, 0)
    path = tmp_path_factory.mktemp("video") / "signer.mp4"
    write_mp4(path, frames, fps=25, preset="veryfast", crf=20)
    return path


def _reference(path, indices, box, size):
    """The careful resize: BT.601 float conversion of the decoded planes, float INTER_AREA of the crop."""
    import av
    import cv2

    x0, y0, x1, y1 = box
    out = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i not in indices:
                continue
            h, w = frame.height, frame.width
            yuv = frame.to_ndarray(format="yuv420p").astype(np.float32)  # (h * 3/2, w): Y, then U, V
            y = yuv[:h]
            u = cv2.resize(yuv[h : h + h // 4].reshape(h // 2, w // 2), (w, h), interpolation=cv2.INTER_LINEAR)
            v = cv2.resize(yuv[h + h // 4 :].reshape(h // 2, w // 2), (w, h), interpolation=cv2.INTER_LINEAR)
            y, u, v = 1.164383 * (y - 16), u - 128, v - 128
            rgb = np.stack([y + 1.596027 * v, y - 0.391762 * u - 0.812968 * v, y + 2.017232 * u], -1)
            crop = np.clip(rgb, 0, 255)[y0:y1, x0:x1]
            out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _mae(got, ref) -> float:
    return float(np.mean([np.abs(got[i].astype(np.float32) - ref[i]).mean() for i in ref]))


@pytest.mark.parametrize("box", [(140, 20, 480, 360), (141, 19, 444, 322)], ids=["even", "odd-offsets"])
def test_fast_crop_scale_matches_a_careful_reference(signer_video, box):
    # ~3.5x and ~4.7x down: the ratios of 720p/1080p crops to 224 (or 172).
    ref = _reference(signer_video, {0, 2}, box, 72)
    fast = decode_frames(signer_video, [0, 2], crop=box, size=72, decoders=("pyav",))
    assert fast.frames[0].shape == (72, 72, 3) and fast.frames[0].dtype == np.uint8
    assert _mae(fast.frames, ref) < 1.5
    # The OpenCV fallback (full-frame BGR, INTER_AREA) stays close too.
    slow = decode_frames(signer_video, [0, 2], crop=box, size=72, decoders=("opencv",))
    assert slow.decoder == "opencv" and _mae(slow.frames, ref) < 2.5
    # And the content is really there (a black or shifted image would not pass).
    shifted = {i: np.roll(ref[i], 6, axis=1) for i in ref}
    assert _mae(fast.frames, shifted) > 3 * _mae(fast.frames, ref)


@pytest.mark.skipif(not (SHARED_WLASL / "videos").is_dir(), reason="real WLASL sample data (../shared/data/wlasl) not present")
def test_fast_crop_scale_on_a_real_720p_clip():
    path = SHARED_WLASL / "videos" / "69241.mp4"
    box = (275, 0, 995, 720)  # its bbox [385, 37, 885, 720] with 10% margin, capped at the height
    ref = _reference(path, {0, 40}, box, 224)
    fast = decode_frames(path, [0, 40], crop=box, size=224)
    assert fast.decoder == "pyav" and _mae(fast.frames, ref) < 1.5


def test_pyav_failure_falls_back_to_opencv(counter_video, monkeypatch):
    """When PyAV cannot open a file, OpenCV decodes it, to the same frames."""
    import wlasl.video as video

    wanted = [0, 13, 27]
    primary = decode_frames(counter_video, wanted, crop=(8, 0, 56, 48), size=24)

    class Refuse:
        def __init__(self, path, threads):
            raise video.DecodeError("PyAV refused (simulated)")

    monkeypatch.setitem(video._READERS, "pyav", Refuse)
    fallback = decode_frames(counter_video, wanted, crop=(8, 0, 56, 48), size=24)
    assert primary.decoder == "pyav" and fallback.decoder == "opencv" and sorted(fallback.frames) == wanted
    for i in wanted:
        diff = np.abs(fallback.frames[i].astype(int) - primary.frames[i].astype(int)).mean()
        assert diff < 2.0, f"frame {i}: OpenCV and PyAV differ by {diff:.2f} grey levels on average"
    assert fallback.fps == pytest.approx(30.0) and (fallback.width, fallback.height) == (64, 48)


def test_no_decodable_frame_falls_back_then_raises_the_first_error(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 4000)
    with pytest.raises(DecodeError, match="PyAV cannot open"):
        decode_frames(bad, [0])


@pytest.mark.parametrize("wanted", [[5, 17, 30], [41, 50, 63]], ids=["no-seek", "seek"])
def test_threaded_decoding_gives_the_same_frames(bframe_video, wanted):
    # Frame threads reorder work inside FFmpeg; the frames and their numbers
    # must not change. (With PyAV's Python log callback enabled this setup
    # deadlocked: the reader leaves logging at PyAV's default.)
    one = decode_frames(bframe_video, wanted, crop=(8, 4, 48, 44), size=16)
    two = decode_frames(bframe_video, wanted, crop=(8, 4, 48, 44), size=16, threads=2)
    assert two.decoder == "pyav" and sorted(two.frames) == wanted
    for i in wanted:
        assert np.array_equal(one.frames[i], two.frames[i])
