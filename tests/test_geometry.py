import numpy as np
import pytest

from wlasl.geometry import resolve_range, sample_indices, square_crop


def test_resolve_range_one_based_and_minus_one():
    r = resolve_range(1, -1, 75)
    assert (r.first, r.last, r.clamped, r.length) == (0, 74, False, 75)
    r = resolve_range(5, 40, 75)
    assert (r.first, r.last, r.clamped) == (4, 39, False)


def test_resolve_range_clamps_end_past_file_and_rejects_start_past_file():
    r = resolve_range(3, 200, 60)  # frame_end past the real end: WLASL trap
    assert (r.first, r.last, r.clamped) == (2, 59, True)
    r = resolve_range(1, 61, 60)  # one past the end
    assert (r.last, r.clamped) == (59, True)
    with pytest.raises(ValueError, match="frame_start 61 is past the end of the video \\(60 frames\\)"):
        resolve_range(61, -1, 60)
    with pytest.raises(ValueError, match="no frames"):
        resolve_range(1, -1, 0)


def test_sample_indices_uniform_over_long_range():
    idx = sample_indices(10, 109, 20)  # 100 frames -> bins of 5, centres
    assert len(idx) == 20 and idx.min() >= 10 and idx.max() <= 109
    assert np.all(np.diff(idx) == 5)
    # Uniform: bins are centred, so the slack at both ends is equal.
    assert idx[0] - 10 == 109 - idx[-1] or abs((idx[0] - 10) - (109 - idx[-1])) <= 1


def test_sample_indices_exact_and_short_ranges_repeat_evenly():
    assert list(sample_indices(0, 19, 20)) == list(range(20))
    idx = sample_indices(4, 8, 20)  # 5 frames -> each repeated 4 times
    assert sorted(set(idx)) == [4, 5, 6, 7, 8]
    assert all(np.count_nonzero(idx == v) == 4 for v in range(4, 9))
    assert np.all(np.diff(idx) >= 0)  # order is kept: time runs forwards
    assert list(sample_indices(7, 7, 3)) == [7, 7, 7]
    with pytest.raises(ValueError):
        sample_indices(5, 4, 3)


def test_square_crop_inside_frame_with_margin():
    # 100x200 bbox centred in a 1280x720 frame: side 200 * 1.2 = 240.
    x0, y0, x1, y1 = square_crop((590, 260, 690, 460), 1280, 720, margin=0.1)
    assert (x1 - x0, y1 - y0) == (240, 240)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (640, 360)


def test_square_crop_shifts_into_frame_at_edges_and_caps_side():
    # Box touching the left/top edge: shifted, not shrunk.
    x0, y0, x1, y1 = square_crop((0, 0, 50, 50), 320, 240, margin=0.2)
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 70
    # Box taller than the frame (WLASL boxes overrun): capped at the short side.
    x0, y0, x1, y1 = square_crop((385, 37, 885, 800), 1280, 720, margin=0.1)
    assert y0 == 0 and y1 == 720 and x1 - x0 == 720 and 0 <= x0 and x1 <= 1280
    # Box past the right edge: clipped to the frame first.
    x0, y0, x1, y1 = square_crop((300, 100, 400, 200), 320, 240, margin=0.0)
    assert x1 == 320 and x1 - x0 == 100


def test_square_crop_rejects_zero_area_and_outside_frame():
    with pytest.raises(ValueError, match="zero-area bbox"):
        square_crop((10, 10, 10, 50), 320, 240)
    with pytest.raises(ValueError, match="outside the 320x240 frame"):
        square_crop((400, 10, 500, 50), 320, 240)


def test_step_indices_centred_every_step_th_frame():
    from wlasl.geometry import step_indices

    # 20 frames every 2nd frame (the seed thesis) span 39 frames; a 45-frame
    # range leaves 6 spare frames, 3 before and 3 after.
    idx, fell_back = step_indices(0, 44, 20, 2)
    assert not fell_back and len(idx) == 20 and np.all(np.diff(idx) == 2)
    assert (idx[0], idx[-1]) == (3, 41)
    # An odd surplus: the extra frame goes after the window; offsets follow `first`.
    idx, _ = step_indices(10, 50, 5, 3)  # 41 frames, span 13, surplus 28
    assert list(idx) == [24, 27, 30, 33, 36]
    idx, _ = step_indices(10, 23, 5, 3)  # 14 frames, span 13, surplus 1
    assert list(idx) == [10, 13, 16, 19, 22]
    # Exactly the span: every step-th frame from first to last.
    idx, fell_back = step_indices(5, 43, 20, 2)
    assert not fell_back and (idx[0], idx[-1]) == (5, 43)


def test_step_indices_falls_back_to_uniform_and_step_one_is_uniform():
    from wlasl.geometry import step_indices

    idx, fell_back = step_indices(0, 37, 20, 2)  # 38 frames < 39
    assert fell_back and list(idx) == list(sample_indices(0, 37, 20))
    idx, fell_back = step_indices(3, 80, 20, 1)
    assert not fell_back and list(idx) == list(sample_indices(3, 80, 20))
    with pytest.raises(ValueError, match="frame step expected >= 1, received 0"):
        step_indices(0, 10, 4, 0)
    with pytest.raises(ValueError, match="empty range"):
        step_indices(5, 4, 2, 2)
