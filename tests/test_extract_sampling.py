"""Frame sampling arithmetic and video decoding of generated clips."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmr.extract.sampling import frame_times, sample_frame_indices


def sample(n, native, fps=1.0, max_frames=32):
    times, duration = frame_times(n, native)
    return sample_frame_indices(times, duration, fps, max_frames)


def test_video_shorter_than_one_sampling_interval_gives_one_frame():
    assert sample(3, 30.0) == [0]  # 0.1 s at 1 fps
    assert sample(1, 25.0) == [0]
    assert sample(10, 30.0, fps=2.0) == [0]  # 0.33 s < 0.5 s


def test_one_frame_per_second_from_zero():
    assert sample(100, 25.0) == [0, 25, 50, 75]  # exactly 4 s -> t = 0, 1, 2, 3
    assert sample(101, 25.0) == [0, 25, 50, 75, 100]  # 4.04 s -> t = 4 is inside
    assert sample(250, 25.0, fps=0.5) == [0, 50, 100, 150, 200]


def test_odd_and_ntsc_frame_rates():
    assert sample(50, 7.5) == [0, 7, 15, 22, 30, 37, 45]  # 6.67 s -> 7 frames, floor(t * 7.5)
    idx = sample(300, 29.97)  # 10.01 s -> t = 0..10
    assert len(idx) == 11 and idx[-1] == 299 and idx[1] == 29


def test_long_video_is_capped_and_evenly_spread():
    idx = sample(3600, 30.0, max_frames=32)  # 120 s
    assert len(idx) == 32 and idx[0] == 0
    gaps = {b - a for a, b in zip(idx, idx[1:])}
    assert gaps <= {112, 113}  # 120 s / 32 = 3.75 s = 112.5 frames
    assert idx[-1] == 3487  # t = 31 * 3.75 = 116.25 s


def test_variable_frame_rate_uses_timestamps():
    # frames at 0, 0.1, 0.2 (10 fps), then one frame every 0.5 s until 4 s
    times = [0.0, 0.1, 0.2] + [0.5 * k for k in range(1, 8)]
    idx = sample_frame_indices(times, 4.0, fps=1.0, max_frames=32)
    # t = 0, 1, 2, 3 -> frames starting at 0.0, 1.0, 2.0, 3.0
    assert idx == [0, times.index(1.0), times.index(2.0), times.index(3.0)]


def test_fps_above_native_rate_does_not_repeat_frames():
    assert sample(4, 2.0, fps=10.0) == [0, 1, 2, 3]


def test_unknown_timing_spreads_by_index():
    assert sample_frame_indices(list(range(100)), 0.0, 1.0, 4) == [0, 25, 50, 75]
    assert sample_frame_indices([], 5.0) == []
    with pytest.raises(ValueError):
        sample_frame_indices([0.0], 1.0, fps=0)


def test_decode_generated_videos(tmp_path):
    from helpers.media import make_video

    from vmr.extract.decode import DecodeFailure, PixelSpec, decode_video

    spec = PixelSpec(resize=40, crop=32)
    short = decode_video(make_video(tmp_path / "s.mp4", n_frames=2, fps=30), spec, 1.0, 32)
    assert short.shape == (1, 32, 32, 3)
    odd = decode_video(make_video(tmp_path / "o.mp4", n_frames=50, fps=7.5, size=(90, 50)),
                       spec, 1.0, 32)
    assert odd.shape == (7, 32, 32, 3) and odd.dtype.name == "uint8"
    assert len({f.tobytes() for f in odd}) > 1  # different moments, different pixels
    capped = decode_video(make_video(tmp_path / "l.mp4", n_frames=60, fps=4), spec, 1.0, 5)
    assert capped.shape[0] == 5
    with pytest.raises(DecodeFailure, match="missing file"):
        decode_video(str(tmp_path / "nope.mp4"), spec, 1.0, 32)


def test_sample_times_are_the_rule_every_mode_shares():
    from vmr.extract.sampling import sample_times

    assert sample_times(4.0, 1.0, 32) == [0.0, 1.0, 2.0, 3.0]
    assert sample_times(0.1, 1.0, 32) == [0.0]
    assert sample_times(120.0, 1.0, 4) == [0.0, 30.0, 60.0, 90.0]
    # the frame indices are the frames on screen at exactly these moments
    times, dur = frame_times(3600, 30.0)
    assert sample_frame_indices(times, dur, 1.0, 4) == [0, 900, 1800, 2700]


def test_plan_reads_seeks_only_where_it_is_cheaper():
    from vmr.extract.sampling import plan_cost, plan_reads

    # one keyframe every 250 frames, a sample every 25: decode on within a group of pictures,
    # jump to the next keyframe after its last sample (226..249 are not needed)
    runs = plan_reads(list(range(0, 1000, 25)), [0, 250, 500, 750])
    assert [r[0] for r in runs] == [None, 250, 500, 750]
    assert runs[1][1] == list(range(250, 500, 25))
    # keyframes every 12 frames, samples every 24: each sample is reached by a seek
    runs = plan_reads([0, 24, 48, 72], list(range(0, 96, 12)))
    assert runs == [(None, [0]), (24, [24]), (48, [48]), (72, [72])]
    # a keyframe only 3 frames past the position is not worth a seek (cost 4)
    assert plan_reads([0, 5], [0, 4]) == [(None, [0, 5])]
    # samples inside one group of pictures: one pass, no seek
    assert plan_reads([10, 60, 110], [0]) == [(None, [10, 60, 110])]
    assert plan_cost([(None, [10, 60, 110])]) == 111
    assert plan_cost([(None, [0]), (24, [24])]) == 1 + 4 + 1
    assert plan_reads([], [0]) == []


@given(st.lists(st.integers(0, 2000), min_size=1, max_size=40, unique=True),
       st.lists(st.integers(1, 2000), max_size=30))
def test_plan_never_costs_more_than_either_whole_video_strategy(wanted, keys):
    """The per-gap rule is never worse than one sequential pass, nor than seeking to the
    keyframe before every wanted frame, and reads every wanted frame once, in order, from a
    keyframe at or before it."""
    from vmr.extract.sampling import (SEEK_COST_FRAMES, keyframe_at_or_before, plan_cost,
                                      plan_reads)

    wanted = sorted(wanted)
    keys = sorted(set(keys) | {0})
    runs = plan_reads(wanted, keys)
    assert [w for _, ws in runs for w in ws] == wanted
    for seek_to, ws in runs:
        assert seek_to is None or (seek_to in keys and seek_to <= ws[0])
    sequential = wanted[-1] + 1
    seek_each, pos = 0, 0
    for w in wanted:  # seek to each wanted frame's keyframe, unless the decoder is already past it
        k = keyframe_at_or_before(keys, w)
        seek_each += SEEK_COST_FRAMES + w - k + 1 if k > pos else w - pos + 1
        pos = w + 1
    assert plan_cost(runs) <= sequential
    assert plan_cost(runs) <= seek_each
