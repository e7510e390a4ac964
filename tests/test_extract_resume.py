"""Crash safety: a run killed with SIGKILL (or stopped with Ctrl-C) and run again ends with the
same cache as an uninterrupted run; the cache file is readable at every moment; a write that
fails (file too large / disk full) leaves the previous cache intact."""

import os
import random
import resource
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from helpers.media import PY, REPO, make_video, read_group, tiny_open_clip, write_dataset

from vmr.extract.importer import import_features
from vmr.extract.runner import ExtractOptions, run_extract

N = 48


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cfg, ckpt = tiny_open_clip(root)
    m = root / "media"
    m.mkdir()
    paths = [make_video(m / f"{k}.mp4", n_frames=4 + (k % 7) * 3, fps=4.0, seed=k)
             for k in range(N)]
    paths[7] = str(m / "missing.mp4")
    ids = [f"{k:03d}" for k in range(N)]
    data = write_dataset(root / "ds", ids, video=paths)
    feats = np.random.default_rng(0).normal(size=(N, 24)).astype(np.float32)
    np.save(root / "text.npy", feats)
    (root / "ids.txt").write_text("\n".join(ids) + "\n")
    model = f"open_clip:{cfg}:{ckpt}"
    ref = str(root / "ref.h5")
    run_extract(ExtractOptions(data=data, modality="video", model=model, cache=ref, workers=1,
                               batch_size=4, device="cpu"))
    return root, data, model, ref


def fresh_cache(root, data, name):
    """A cache that already holds another modality (imported text features)."""
    cache = str(root / name)
    import_features(data=data, modality="text", features=str(root / "text.npy"),
                    ids=str(root / "ids.txt"), cache=cache)
    return cache


def start(data, model, cache, **popen):
    args = [PY, "-m", "vmr", "extract", "--data", data, "--modality", "video", "--model", model,
            "--cache", cache, "--workers", "1", "--batch-size", "4", "--device", "cpu"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen(args, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def parts(cache):
    d = cache + ".partial-video"
    return len([f for f in os.listdir(d) if f.endswith(".npz")]) if os.path.isdir(d) else 0


def wait_parts(proc, cache, at_least, limit=120.0):
    t = time.monotonic()
    while parts(cache) < at_least:
        assert proc.poll() is None, f"ended before it was interrupted: {proc.stderr.read()}"
        assert time.monotonic() - t < limit, "no progress"
        time.sleep(0.01)


def assert_readable_with_text(cache):
    with h5py.File(cache, "r") as f:  # never unreadable, other modalities kept
        assert f["text"]["features"].shape == (N, 24)


def assert_same(ref, cache):
    a, b = read_group(ref, "video"), read_group(cache, "video")
    assert a[0] == b[0]  # item ids
    assert np.array_equal(a[1], b[1])  # the very same vectors, bit for bit
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])  # present, done
    assert a[4] == b[4] and a[4][0][0] == "007"  # failures
    for k in ("encoder", "weights", "dim", "dtype", "fps", "max_frames"):
        assert a[5][k] == b[5][k]


def test_kill_9_mid_run_then_rerun_equals_uninterrupted(setup):
    root, data, model, ref = setup
    cache = fresh_cache(root, data, "work.h5")
    p = start(data, model, cache)
    wait_parts(p, cache, 3)
    p.kill()  # SIGKILL: no cleanup of any kind
    p.communicate()
    assert_readable_with_text(cache)
    with h5py.File(cache, "r") as f:
        assert "video" not in f  # it really was killed mid-run
    assert 0 < parts(cache) < N
    d = cache + ".partial-video"
    saved = sum(len(np.load(os.path.join(d, f))["ids"]) for f in os.listdir(d)
                if f.endswith(".npz"))

    out = run_extract(ExtractOptions(data=data, modality="video", model=model, cache=cache,
                                     workers=1, batch_size=4, device="cpu"))
    assert_same(ref, cache)
    assert_readable_with_text(cache)
    assert not os.path.exists(cache + ".partial-video")
    encoded = int(out.split(" items encoded")[0].split()[-1])
    assert saved > 0 and encoded == N - 1 - saved  # nothing committed was encoded again


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resumes(setup):
    root, data, model, ref = setup
    cache = fresh_cache(root, data, "ctrlc.h5")
    p = start(data, model, cache)
    wait_parts(p, cache, 2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert_readable_with_text(cache)
    assert parts(cache) >= 2
    run_extract(ExtractOptions(data=data, modality="video", model=model, cache=cache, workers=1,
                               batch_size=4, device="cpu"))
    assert_same(ref, cache)


@pytest.mark.slow
def test_killed_at_random_moments(setup):
    root, data, model, ref = setup
    cache = fresh_cache(root, data, "random.h5")
    rng = random.Random(0)
    for _ in range(12):
        p = start(data, model, cache)
        time.sleep(rng.uniform(0.5, 8.0))
        p.kill()
        p.communicate()
        assert_readable_with_text(cache)
        if os.path.exists(cache) and "video" in h5py.File(cache, "r"):
            break
    run_extract(ExtractOptions(data=data, modality="video", model=model, cache=cache, workers=1,
                               batch_size=4, device="cpu"))
    assert_same(ref, cache)


def test_write_failure_leaves_previous_cache_intact(setup):
    from vmr.errors import VmrError

    root, data, model, ref = setup
    cache = fresh_cache(root, data, "full.h5")
    before = open(cache, "rb").read()
    # files may not grow past the old cache's size: progress parts fit, the new cache does not
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 200, hard))
    try:
        with pytest.raises(VmrError) as e:
            run_extract(ExtractOptions(data=data, modality="video", model=model, cache=cache,
                                       workers=1, batch_size=4, device="cpu"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    msg = str(e.value)
    assert msg.startswith(f"cannot write cache {cache}: file too large")
    assert msg.endswith("the previous cache is unchanged")
    assert open(cache, "rb").read() == before
    assert not [f for f in os.listdir(root) if ".tmp-" in f]
    # with room again, the same command finishes from the saved progress without re-encoding
    out = run_extract(ExtractOptions(data=data, modality="video", model=model, cache=cache,
                                     workers=1, batch_size=4, device="cpu"))
    assert out.startswith("video: 0 items encoded")
    assert_same(ref, cache)
