"""What real WLASL files bring, made here: non-UTF-8 tags, rotation, variable frame rate, mpeg4, odd sizes.

Each trait was seen on genuine WLASL videos (docs/preprocessing.md). The
files are written by PyAV/FFmpeg in the real container layout; where the
trait is a byte pattern (a tag that is not UTF-8), the bytes are patched in
the container's own atom, exactly where the real files carry them.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import SHARED_REAL

from wlasl.video import decode_frames, open_video, probe

DECODERS = ["pyav", "opencv"]


def _frames(n, h, w):
    """Frame i: a white bar on the left third and a grey level 20 + 4 i, so orientation and order both show."""
    for i in range(n):
        img = np.full((h, w, 3), 20 + 4 * i, np.uint8)
        img[:, : w // 3] = 255
        yield img


def _write(path, *, codec="libx264", size=(64, 48), n=24, rate=25, rotation=None, pts=None, tag=None):
    import av

    w, h = size
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"preset": "ultrafast", "g": "8"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        if tag is not None:
            s.metadata["handler_name"] = tag
        if pts is not None:
            s.time_base = Fraction(1, 1000)
            s.codec_context.time_base = Fraction(1, 1000)
        for i, img in enumerate(_frames(n, h, w)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _level(img) -> float:
    """The grey level of the part of the frame away from the bar (names the frame)."""
    return float(np.median(img[..., 1]))


def test_a_tag_that_is_not_utf8_opens_with_every_reader(tmp_path):
    path = _write(tmp_path / "tag.mp4", tag="QQQQQQQQ")
    data = path.read_bytes()
    assert data.count(b"QQQQQQQQ") == 1
    # The bytes of a Latin-1/GBK handler name, as in real WLASL files (0xe6 first: not a UTF-8 start).
    path.write_bytes(data.replace(b"QQQQQQQQ", b"\xe6\x98\xe6\x98\xb3\xe6\x98\xe6"))
    for decoder in DECODERS:
        dec = decode_frames(path, [0, 5], decoders=(decoder,))
        assert dec.decoder == decoder and sorted(dec.frames) == [0, 5]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_files_read_upright_and_alike_in_both_readers(tmp_path, rotation):
    path = _write(tmp_path / f"rot{rotation}.mp4", size=(64, 32), rotation=rotation)
    expected = np.rot90(next(_frames(1, 32, 64)), k=rotation // 90)
    for decoder in DECODERS:
        with open_video(path, decoders=(decoder,)) as video:
            assert (video.info.width, video.info.height) == (expected.shape[1], expected.shape[0]), decoder
        dec = decode_frames(path, [0], decoders=(decoder,))
        got = dec.frames[0].astype(int)
        assert got.shape == expected.shape, decoder
        assert np.abs(got - expected).mean() < 6, f"{decoder}: frame not turned upright for rotation {rotation}"
    # A crop is taken in the upright frame, and both readers agree on it.
    box = (0, 8, expected.shape[1], 8 + expected.shape[1]) if rotation % 180 else (0, 0, 32, 32)
    a = decode_frames(path, [3], crop=box, size=16, decoders=("pyav",)).frames[3].astype(int)
    b = decode_frames(path, [3], crop=box, size=16, decoders=("opencv",)).frames[3].astype(int)
    assert np.abs(a - b).mean() < 6


def test_variable_frame_rate_keeps_presentation_order(tmp_path):
    # Irregular gaps (33, 40, 25 ms ...), as phone and screen recordings have.
    gaps = [33, 40, 25, 50, 33, 33, 67, 20] * 3
    pts = np.concatenate([[0], np.cumsum(gaps)])[:24].tolist()
    path = _write(tmp_path / "vfr.mp4", pts=pts)
    for decoder in DECODERS:
        for wanted in ([0, 7, 13, 23], [20, 21, 22, 23]):
            dec = decode_frames(path, wanted, decoders=(decoder,))
            levels = [_level(dec.frames[i]) for i in wanted]
            assert levels == pytest.approx([20 + 4 * i for i in wanted], abs=3), decoder


def test_mpeg4_part2_with_an_odd_size(tmp_path):
    # 70x38: not a multiple of 16 (real WLASL has 656x370, 736x414); mpeg4 part 2 as in a few real files.
    path = _write(tmp_path / "mpeg4.mp4", codec="mpeg4", size=(70, 38), n=12)
    info = probe(path)
    assert (info.width, info.height, info.frame_count) == (70, 38, 12)
    box = (3, 1, 39, 37)  # odd offsets
    a = decode_frames(path, [0, 11], crop=box, size=16, decoders=("pyav",))
    b = decode_frames(path, [0, 11], crop=box, size=16, decoders=("opencv",))
    for i in (0, 11):
        assert a.frames[i].shape == (16, 16, 3)
        assert np.abs(a.frames[i].astype(int) - b.frames[i].astype(int)).mean() < 6


def test_an_unexpected_error_in_one_reader_goes_to_the_next(tmp_path, monkeypatch):
    """Not only DecodeError: whatever a reader raises at open or while decoding, the next reader tries."""
    import wlasl.video as video

    path = _write(tmp_path / "ok.mp4")

    class Broken:
        def __init__(self, path, threads):
            raise UnicodeDecodeError("utf-8", b"\xe6", 0, 1, "invalid continuation byte")

    monkeypatch.setitem(video._READERS, "pyav", Broken)
    dec = decode_frames(path, [2])
    assert dec.decoder == "opencv" and list(dec.frames) == [2]


@pytest.mark.skipif(not (SHARED_REAL / "videos").is_dir(), reason="real WLASL videos (../shared/data/wlasl_real) not present")
def test_the_real_file_with_a_non_utf8_tag_opens_in_pyav():
    """00634 (WLASL 'accident') carries a stream tag PyAV cannot decode as UTF-8."""
    path = SHARED_REAL / "videos" / "00634.mp4"
    info = probe(path)
    side = min(info.width, info.height)
    dec = decode_frames(path, [0, 10], crop=(0, 0, side, side), size=32)
    assert info.decoder == dec.decoder == "pyav" and dec.frames[10].shape == (32, 32, 3)
