"""Video decode modes and backends: PyAV and decord give the same frame indices and near-identical
frames; PyAV's planned decode (seeks + skipped non-reference frames) gives exactly the frames a
full sequential decode gives; --keyframes takes keyframes, the nearest to each sample moment."""

import os

import numpy as np
import pytest
from helpers.media import make_video

from vmr.extract.decode import DecodeFailure, PixelSpec, decode_video
from vmr.extract.sampling import nearest_keyframes, sample_frame_indices

av = pytest.importorskip("av")
SPEC = PixelSpec(resize=48, crop=40)
SETTINGS = [(1.0, 32), (2.0, 32), (1.0, 5), (0.3, 32), (7.0, 4)]  # (fps, max_frames)


def make_h264(path, n_frames=350, fps=25, keyint=100, size=(128, 72), bframes=3, seed=0,
              codec="libx264") -> str:
    """An H.264 (or, codec="libx265", HEVC) clip with B-frames (non-reference ones among them)
    and a keyframe every `keyint` frames: smooth colours plus a moving square, the frame number
    drawn as bars."""
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    w, h = size
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 1, w)[None, :, None] * rng.integers(60, 200, 3)[None, None, :]
    base = np.broadcast_to(base, (h, w, 3)).astype(np.uint8)
    out = av.open(str(path), "w")
    s = out.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    if codec == "libx264":
        s.options = {"preset": "veryfast", "g": str(keyint), "keyint_min": str(keyint),
                     "sc_threshold": "0", "bframes": str(bframes)}
    else:
        s.options = {"preset": "ultrafast", "x265-params": f"keyint={keyint}:min-keyint="
                     f"{keyint}:scenecut=0:bframes={bframes}:b-pyramid=1:log-level=error"}
    for i in range(n_frames):
        f = base.copy()
        x = (i * 3) % (w - 16)
        f[h // 2 - 8:h // 2 + 8, x:x + 16] = (255, 255 - (i % 200), 40)
        for b in range(9):  # the frame number in binary, as bright / dark bars
            f[:6, 4 + b * 12:12 + b * 12] = 255 if (i >> b) & 1 else 0
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    return str(path)


def packet_index(path):
    """(presentation timestamps sorted, keyframe indices in that order, frame start times,
    duration) from the packets, independently of vmr; times as decord computes them."""
    with av.open(path) as c:
        st = c.streams.video[0]
        rows = sorted((p.pts, p.is_keyframe, p.duration) for p in c.demux(st) if p.size)
        tb, start = float(st.time_base), st.start_time or 0
    times = [np.float32((r[0] - start) * tb) for r in rows]
    end = np.float32((rows[-1][0] + rows[-1][2] - start) * tb)
    return ([r[0] for r in rows], [i for i, r in enumerate(rows) if r[1]], [float(t) for t in times],
            float(end - times[0]))


def full_decode(path, wanted):
    """The wanted frames from a plain decode of every frame, nothing skipped, no seeks."""
    from vmr.extract.pixels import center_crop
    from vmr.extract.video_av import _rgb

    pts = packet_index(path)[0]
    want = {pts[i]: i for i in wanted}
    got = {}
    with av.open(path) as c:
        for f in c.decode(c.streams.video[0]):
            if f.pts in want:
                got[want[f.pts]] = _rgb(f, SPEC)
    return center_crop(np.stack([got[i] for i in wanted]), SPEC.crop)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "h264-long-gop": make_h264(d / "long.mp4", keyint=100),
        "h264-short-gop": make_h264(d / "short.mp4", n_frames=120, keyint=10, seed=1),
        "h264-no-bframes": make_h264(d / "nob.mp4", n_frames=90, keyint=250, bframes=0, seed=2),
        "mp4v": make_video(d / "m.mp4", n_frames=60, fps=6.0, size=(80, 60), seed=3),
        "hevc": make_h264(d / "hevc.mp4", n_frames=150, keyint=50, seed=4, codec="libx265"),
    }


def test_clips_have_what_the_modes_rely_on(clips):
    with av.open(clips["h264-long-gop"]) as c:
        types = {int(f.pict_type) for f in c.decode(c.streams.video[0])}
    assert types == {1, 2, 3}  # av.video.frame.PictureType I, P and B
    assert packet_index(clips["h264-long-gop"])[1] == [0, 100, 200, 300]
    assert packet_index(clips["mp4v"])[1][:3] == [0, 12, 24]  # OpenCV's mp4v: a GOP of 12
    assert packet_index(clips["h264-short-gop"])[1] == list(range(0, 120, 10))


@pytest.mark.parametrize("kind", ["h264-long-gop", "h264-short-gop", "h264-no-bframes", "mp4v"])
def test_both_decoders_same_indices_near_identical_frames(clips, kind):
    pytest.importorskip("decord")
    for fps, mf in SETTINGS:
        a, ia = decode_video(clips[kind], SPEC, fps, mf, "decord", with_indices=True)
        b, ib = decode_video(clips[kind], SPEC, fps, mf, "pyav", with_indices=True)
        assert ia == ib and a.shape == b.shape == (len(ia), 40, 40, 3)
        # same frames; only the two FFmpeg versions' bilinear scalers differ a little
        assert np.abs(a.astype(int) - b).mean() < 2.0, (kind, fps, mf)
        for x, y in zip(a, b):
            assert np.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.98


@pytest.mark.parametrize("kind", ["h264-long-gop", "h264-short-gop", "h264-no-bframes", "mp4v",
                                  "hevc"])
@pytest.mark.parametrize("threads", [1, 2])
def test_planned_decode_equals_full_decode_bit_for_bit(clips, kind, threads):
    """Seeks and skipped non-reference frames change nothing: same indices as the sampling rule
    on the packets' timestamps, same pixels as decoding every frame."""
    _, _, times, duration = packet_index(clips[kind])
    for fps, mf in SETTINGS:
        frames, idx = decode_video(clips[kind], SPEC, fps, mf, "pyav", threads=threads,
                                   with_indices=True)
        assert idx == sample_frame_indices(times, duration, fps, mf)
        assert np.array_equal(frames, full_decode(clips[kind], idx)), (kind, fps, mf)


def test_open_gop_hevc(clips):
    """x265's default open GOPs (CRA keyframes with leading pictures): PyAV's seeks and skips
    still give exactly the fully decoded frames; decord picks the same indices but its frames
    after a CRA keyframe drift from the true ones by a few grey levels (its seek counts
    keyframes in decoding order)."""
    pytest.importorskip("decord")
    assert packet_index(clips["hevc"])[1] == [0, 50, 100]  # display order: frames 0, 50, 100
    a, ia = decode_video(clips["hevc"], SPEC, 2.0, 32, "decord", with_indices=True)
    b, ib = decode_video(clips["hevc"], SPEC, 2.0, 32, "pyav", with_indices=True)
    assert ia == ib
    full = full_decode(clips["hevc"], ia)
    assert np.array_equal(b, full)
    assert np.abs(a[:8].astype(int) - full[:8]).mean() < 1.0  # before the CRA keyframe at 100
    assert np.abs(a.astype(int) - full).mean() < 3.0


def test_plan_skips_work(clips, monkeypatch):
    """Long GOPs: sequential passes that jump to a keyframe only when the frames before it are
    not wanted (76..99 here), and the decoder outputs (so decodes) well under the frames
    up to the last wanted one, since non-reference frames nobody wants are skipped. Short GOPs:
    seeks to the keyframes before the wanted frames. No fallback pass is needed."""
    from vmr.extract import video_av

    seen, outputs = [], [0]
    real_runs, real_take = video_av._decode_runs, video_av._take

    def runs_spy(container, stream, index, runs, spec, skip, got):
        seen.append((runs, skip))
        return real_runs(container, stream, index, runs, spec, skip, got)

    def take_spy(frames, need, got, spec):
        outputs[0] += len(frames)
        return real_take(frames, need, got, spec)

    monkeypatch.setattr(video_av, "_decode_runs", runs_spy)
    monkeypatch.setattr(video_av, "_take", take_spy)
    _, idx = decode_video(clips["h264-long-gop"], SPEC, 1.0, 32, "pyav", with_indices=True)
    assert idx == list(range(0, 350, 25)) and len(seen) == 1
    runs, skip = seen[0]
    assert skip == "NONREF" and [r[0] for r in runs] == [None, 100, 200, 300]
    assert [r[1] for r in runs][:2] == [[0, 25, 50, 75], [100, 125, 150, 175]]
    assert outputs[0] < 0.75 * (idx[-1] + 1)
    seen.clear()
    _, idx = decode_video(clips["h264-short-gop"], SPEC, 0.5, 32, "pyav", with_indices=True)
    assert idx == [0, 50, 100] and len(seen) == 1
    assert [r[0] for r in seen[0][0]] == [None, 50, 100]  # seeking is cheaper than decoding on
    seen.clear()
    _, idx = decode_video(clips["mp4v"], SPEC, 1.0, 32, "pyav", with_indices=True)
    assert seen[0][1] is None  # MPEG-4 part 2: every frame is decoded


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_keyframes_mode_takes_the_nearest_keyframes(clips, decoder):
    if decoder == "decord":
        pytest.importorskip("decord")
    path = clips["h264-long-gop"]
    keys = packet_index(path)[1]
    for fps, mf, expect in [(1.0, 32, [0, 100, 200, 300]), (1.0, 3, [0, 100, 200]),
                            (0.1, 32, [0, 200])]:  # 10 s = frame 250: a tie, the earlier
        frames, idx = decode_video(path, SPEC, fps, mf, decoder, keyframes=True,
                                   with_indices=True)
        assert idx == expect and set(idx) <= set(keys)
        if decoder == "pyav":  # exactly those frames
            assert np.array_equal(frames, full_decode(path, idx))
        else:
            assert np.abs(frames.astype(int) - full_decode(path, idx)).mean() < 2.0
    # frames are decodable only from a keyframe: the exact mode's frames differ from these
    exact, eidx = decode_video(path, SPEC, 1.0, 32, decoder, with_indices=True)
    assert len(eidx) == 14 and set(idx) <= set(eidx)


def test_keyframe_choice_is_nearest_in_time():
    times = [i / 10 for i in range(100)]  # 10 s at 10 fps, keyframes at 0, 3.0 s and 8.0 s
    keys = [0, 30, 80]
    # moments 0..9 s: 0,1 -> 0; 2,3,4,5 -> 30 (1.5 s tie goes to the earlier); 6..9 -> 80
    assert nearest_keyframes(times, 10.0, keys, 1.0, 32) == [0, 30, 80]
    assert nearest_keyframes(times, 10.0, keys, 1.0, 2) == [0, 30]  # moments 0 and 5 s
    assert nearest_keyframes(times, 10.0, [], 1.0, 32) == [0]
    assert nearest_keyframes(times, 0.0, keys, 1.0, 4) == [0, 30, 80]  # untimed: by index


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_broken_files_give_the_same_reasons(tmp_path, decoder):
    if decoder == "decord":
        pytest.importorskip("decord")
    good = make_video(tmp_path / "g.mp4", n_frames=20, seed=5)
    data = open(good, "rb").read()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.mp4").write_text("not a video\n" * 30)
    for name, reason in [("trunc.mp4", "cannot open video"), ("text.mp4", "cannot open video")]:
        for keyframes in (False, True):
            with pytest.raises(DecodeFailure, match=reason):
                decode_video(str(tmp_path / name), SPEC, 1.0, 32, decoder, keyframes)
    with pytest.raises(DecodeFailure, match="missing file"):
        decode_video(str(tmp_path / "gone.mp4"), SPEC, 1.0, 32, decoder)


def test_decoder_choice_errors_are_one_line(monkeypatch):
    from importlib import util

    from vmr.errors import VmrError
    from vmr.extract import decode

    decode.resolve_decoder.cache_clear()
    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda n, *a: None if n == "decord" else real(n, *a))
    try:
        assert decode.resolve_decoder("auto") == "pyav"
        with pytest.raises(VmrError, match=r"--decoder decord: the package 'decord' is not "
                                            r"installed \(wheels exist for Linux x86-64 only\)"):
            decode.resolve_decoder("decord")
        monkeypatch.setattr(util, "find_spec", lambda n, *a: None)
        decode.resolve_decoder.cache_clear()
        with pytest.raises(VmrError, match="no video decoder is installed: pip install av"):
            decode.resolve_decoder("auto")
        with pytest.raises(VmrError, match="expected one of auto, pyav, decord"):
            decode.resolve_decoder("ffmpeg")
    finally:
        decode.resolve_decoder.cache_clear()


def test_stream_without_timestamps_or_seeking(tmp_path):
    """A raw H.264 elementary stream: no timestamps, no seeking. PyAV counts frames at the
    stream's rate and decodes in one pass from a fresh open (decord cannot open it at all)."""
    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV build has no H.264 encoder")
    path = str(tmp_path / "raw.h264")
    out = av.open(path, "w", format="h264")
    s = out.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    for i in range(60):  # 2.4 s at 25 fps; each frame a flat grey level 4 * i
        f = np.full((48, 64, 3), 4 * i, np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    frames, idx = decode_video(path, SPEC, 1.0, 32, "pyav", with_indices=True)
    assert idx == [0, 25, 50]
    assert np.abs(frames[:, 20, 20, 0].astype(int) - [0, 100, 200]).max() <= 4
    frames, idx = decode_video(path, SPEC, 1.0, 32, "pyav", keyframes=True, with_indices=True)
    assert idx == [0] and frames.shape == (1, 40, 40, 3)


def test_memory_stays_flat_over_many_videos(clips):
    """Decoding the same clip again and again in one worker does not grow its memory."""
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc")
    for _ in range(10):
        decode_video(clips["h264-long-gop"], SPEC, 1.0, 32, "pyav")
    before = rss_mb()
    for _ in range(60):
        decode_video(clips["h264-long-gop"], SPEC, 1.0, 32, "pyav")
        decode_video(clips["h264-short-gop"], SPEC, 1.0, 32, "pyav", keyframes=True)
    assert rss_mb() - before < 8
