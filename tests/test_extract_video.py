"""`vmr extract` on video and image items: broken files become recorded failures (a hanging
decode is killed), settings are checked against the cache, the cache reads back."""

import os

import numpy as np
import pytest
from helpers.media import make_image, make_video, read_group, tiny_open_clip, write_dataset

from vmr.cache.read import read_modality
from vmr.errors import VmrError
from vmr.extract.runner import ExtractOptions, run_extract


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    cfg, ckpt = tiny_open_clip(tmp_path_factory.mktemp("clip"))
    return f"open_clip:{cfg}:{ckpt}"


def extract(data, model, modality="video", **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("batch_size", 4)
    return run_extract(ExtractOptions(data=data, modality=modality, model=model, device="cpu",
                                      **kw))


@pytest.fixture
def broken(tmp_path):
    """Six good clips of different lengths and every kind of bad file."""
    m = tmp_path / "media"
    m.mkdir()
    good = [make_video(m / f"g{k}.mp4", n_frames=3 + 4 * k, fps=4.0, seed=k) for k in range(6)]
    data = open(good[5], "rb").read()
    (m / "trunc.mp4").write_bytes(data[: len(data) // 2])
    moov = data.find(b"moov") - 4
    body = bytearray(data)
    body[60:moov] = b"\0" * (moov - 60)  # frames wiped: opens, fails to decode
    (m / "wiped.mp4").write_bytes(bytes(body))
    (m / "empty.mp4").write_bytes(b"")
    (m / "text.mp4").write_text("not a video at all\n" * 20)
    ids = [f"v{k}" for k in range(6)] + ["trunc", "wiped", "empty", "garbage", "missing", "none"]
    paths = good + [str(m / "trunc.mp4"), str(m / "wiped.mp4"), str(m / "empty.mp4"),
                    str(m / "text.mp4"), str(m / "gone.mp4"), None]
    return write_dataset(tmp_path / "ds", ids, video=paths), ids


def test_broken_videos_are_recorded_failures(broken, clip):
    data, ids = broken
    out = extract(data, clip, fps=2.0)
    cache = os.path.join(data, "features.h5")
    got_ids, feats, present, done, failures, attrs = read_group(cache, "video")
    assert got_ids == ids
    assert present.tolist() == [True] * 6 + [False] * 6
    assert done.all()
    reasons = dict(failures)
    assert set(reasons) == {"trunc", "wiped", "empty", "garbage", "missing"}  # "none": no file
    assert reasons["trunc"].startswith("cannot open video")
    assert reasons["wiped"].startswith("decode error")
    assert reasons["empty"].startswith("empty file")
    assert reasons["missing"].startswith("missing file")
    assert feats.dtype == np.float16 and feats.shape == (12, 16)
    assert np.abs(feats[:6]).sum(axis=1).min() > 0 and not feats[6:].any()
    assert attrs["fps"] == 2.0 and attrs["max_frames"] == 32 and attrs["dim"] == 16
    assert attrs["weights"].startswith("sha256:") and attrs["pooling"] == "mean"
    assert "6 items encoded, 5 failed" in out and "failures 5" in out
    f32, p, a = read_modality(cache, ids, "video")
    assert f32.dtype == np.float32 and p.sum() == 6 and a["encoder"] == attrs["encoder"]
    assert not os.path.exists(cache + ".partial-video")
    # clips of different lengths give different vectors
    assert len({f.tobytes() for f in feats[:6]}) == 6


def test_hanging_decode_is_killed_after_timeout(tmp_path, clip):
    m = tmp_path / "m"
    m.mkdir()
    fifo = m / "hang.mp4"
    os.mkfifo(fifo)  # opening it for reading blocks forever in native code
    paths = [make_video(m / "a.mp4", seed=1), str(fifo), make_video(m / "b.mp4", seed=2)]
    data = write_dataset(tmp_path / "ds", ["a", "hang", "b"], video=paths)
    extract(data, clip, timeout=2.0)
    _, _, present, done, failures, _ = read_group(os.path.join(data, "features.h5"), "video")
    assert present.tolist() == [True, False, True] and done.all()
    assert failures == [("hang", "timed out after 2 s")]


def test_settings_mismatch_needs_overwrite(tmp_path, clip):
    m = tmp_path / "m"
    m.mkdir()
    paths = [make_video(m / f"{k}.mp4", n_frames=12, seed=k) for k in range(3)]
    data = write_dataset(tmp_path / "ds", ["a", "b", "c"], video=paths)
    extract(data, clip)
    assert "nothing to do" in extract(data, clip)
    with pytest.raises(VmrError, match=r"other settings \(fps 1\.0 -> 2\.0\).*--overwrite"):
        extract(data, clip, fps=2.0)
    with pytest.raises(VmrError, match=r"dtype 'float16' -> 'float32'"):
        extract(data, clip, dtype="float32")
    extract(data, clip, fps=2.0, overwrite=True)
    _, feats, _, _, _, attrs = read_group(os.path.join(data, "features.h5"), "video")
    assert attrs["fps"] == 2.0
    # a cache made for other item ids is refused
    other = write_dataset(tmp_path / "other", ["a", "b", "x"], video=paths)
    with pytest.raises(VmrError, match=r"another dataset: item 3 is 'c' in the cache but 'x'"):
        extract(other, clip, cache=os.path.join(data, "features.h5"))


def test_images_and_a_broken_one(tmp_path, clip):
    m = tmp_path / "m"
    m.mkdir()
    (m / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    paths = [make_image(m / "a.png", seed=1), make_image(m / "b.jpg", (30, 90), seed=2),
             str(m / "bad.png")]
    data = write_dataset(tmp_path / "ds", ["a", "b", "bad"], image=paths)
    extract(data, clip, modality="image", workers=0, dtype="float32")
    _, feats, present, _, failures, attrs = read_group(os.path.join(data, "features.h5"), "image")
    assert present.tolist() == [True, True, False] and feats.dtype == np.float32
    assert failures[0][0] == "bad" and failures[0][1].startswith("cannot decode image")
    assert attrs["fps"] == 0.0 and attrs["pooling"] == "none"


def test_cli_errors_are_one_line(tmp_path):
    from helpers.media import vmr

    p = vmr("extract", "--data", tmp_path / "nope", "--modality", "video", check=False)
    assert p.returncode == 1 and p.stderr.startswith("error: dataset directory")
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    data = write_dataset(tmp_path / "ds", ["a"], text=["x"])
    p = vmr("extract", "--data", data, "--modality", "text", "--shard", "0/2", check=False)
    assert p.returncode == 1 and "numbered from 1" in p.stderr
    p = vmr("extract", "--data", data, "--modality", "video", check=False)
    assert p.returncode == 1
    assert p.stderr.startswith(f"error: no item of {data} has video content")


def test_decoders_and_keyframes_through_the_runner(tmp_path, clip):
    """--decoder pyav / decord give (nearly) the same vectors; --keyframes is recorded in the
    cache (pooling 'mean-keyframes'), so mixing it with exact features needs --overwrite."""
    from test_decode_modes import make_h264

    m = tmp_path / "m"
    m.mkdir()
    paths = [make_h264(m / f"{k}.mp4", n_frames=150 + 50 * k, keyint=60, seed=k) for k in range(3)]
    data = write_dataset(tmp_path / "ds", ["a", "b", "c"], video=paths)
    feats = {}
    for dec in ("pyav", "decord"):
        cache = str(tmp_path / f"{dec}.h5")
        extract(data, clip, cache=cache, decoder=dec, dtype="float32")
        _, feats[dec], present, _, _, attrs = read_group(cache, "video")
        assert present.all() and attrs["decoder"] == dec and attrs["pooling"] == "mean"
    a, b = feats["pyav"], feats["decord"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999
    cache = str(tmp_path / "pyav.h5")
    with pytest.raises(VmrError, match=r"pooling 'mean' -> 'mean-keyframes'.*--overwrite"):
        extract(data, clip, cache=cache, keyframes=True, dtype="float32")
    extract(data, clip, cache=cache, keyframes=True, dtype="float32", overwrite=True,
            decode_threads=2)
    _, kf, present, _, _, attrs = read_group(cache, "video")
    assert present.all() and attrs["pooling"] == "mean-keyframes"
    assert not np.array_equal(kf, a)  # other frames (keyframes 0, 60, 120, ...)


def test_cli_decode_options(tmp_path, clip):
    from helpers.media import vmr

    p = vmr("extract", "--help")
    assert "--decoder [auto|pyav|decord]" in p.stdout and "--keyframes" in p.stdout
    assert "--decode-threads" in p.stdout
    m = tmp_path / "m"
    m.mkdir()
    data = write_dataset(tmp_path / "ds", ["a"], video=[make_video(m / "a.mp4", seed=1)])
    p = vmr("extract", "--data", data, "--modality", "video", "--model", clip, "--keyframes",
            "--decoder", "pyav", "--workers", "1", "--device", "cpu", "--batch-size", "4")
    assert "1 items encoded" in p.stdout
    p = vmr("extract", "--data", data, "--modality", "video", "--decoder", "ffmpeg", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr      # a usage error: one line
    assert p.stderr.strip().startswith("error: ") and len(p.stderr.strip().splitlines()) == 1
