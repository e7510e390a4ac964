"""Concurrent writers of one cache (vmr/cache/lock.py): a second extraction of the same cache and
modality stops at once naming the first one's pid; different modalities run side by side and
both land in the file; publishing never marks a row present without its vector.

The extractions are real `vmr extract` processes. To hold one of them in the middle of its run
for as long as the test needs, the dataset's last video is a fifo: opening it blocks in native
code until the test opens the fifo for writing (then the decode fails, a recorded failure)."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from helpers.media import (PY, REPO, make_image, make_video, read_group, tiny_open_clip,
                                  write_dataset)

from vmr.cache import read as cache_read
from vmr.cache import store
from vmr.cache.lock import lock_path, modality_lock
from vmr.errors import VmrError
from vmr.extract.importer import import_features
from vmr.extract.runner import ExtractOptions, run_extract

N = 12  # real videos/images; the dataset has one more item, "hang" (the fifo)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock")
    cfg, ckpt = tiny_open_clip(root)
    model = f"open_clip:{cfg}:{ckpt}"
    m = root / "media"
    m.mkdir()
    videos = [make_video(m / f"{k}.mp4", n_frames=4 + k % 5, fps=4.0, seed=k) for k in range(N)]
    images = [make_image(m / f"{k}.png", seed=k) for k in range(N)]
    ids = [f"{k:03d}" for k in range(N)]
    # references: the same items without the fifo, extracted one at a time
    ref = write_dataset(root / "ref", ids, video=videos, image=images)
    for modality in ("video", "image"):
        run_extract(ExtractOptions(data=ref, modality=modality, model=model, workers=1,
                                   batch_size=4, device="cpu"))
    np.save(root / "text.npy", np.random.default_rng(0).normal(size=(N + 1, 8)).astype("f4"))
    (root / "ids.txt").write_text("\n".join(ids + ["hang"]) + "\n")
    return root, model, videos, images, ids, os.path.join(ref, "features.h5")


def dataset(root, name, videos, images, ids):
    """A dataset whose last item's video is a fifo; its cache already holds text features."""
    fifo = root / f"{name}.fifo"
    os.mkfifo(fifo)
    data = write_dataset(root / name, ids + ["hang"], video=videos + [str(fifo)],
                         image=images + [images[0]])
    import_features(data=data, modality="text", features=str(root / "text.npy"),
                    ids=str(root / "ids.txt"))
    return data, str(fifo)


def start(data, model, modality):
    args = [PY, "-m", "vmr", "extract", "--data", data, "--modality", modality, "--model", model,
            "--workers", "1", "--batch-size", "4", "--device", "cpu", "--timeout", "300"]
    return subprocess.Popen(args, cwd=str(REPO), env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def unblocking(fifo):
    """Keep opening the fifo for writing (and closing it) so that every reader gets EOF."""
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            with contextlib.suppress(OSError):  # ENXIO: nobody is reading it right now
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.02)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def wait_exit(procs, limit=120.0):
    """Wait until one of `procs` ends; return it."""
    t = time.monotonic()
    while time.monotonic() - t < limit:
        for p in procs:
            if p.poll() is not None:
                return p
        time.sleep(0.05)
    for p in procs:
        p.kill()
    raise AssertionError("no extraction ended")


def assert_matches_reference(cache, ref, modality):
    ids, feats, present, done, failures, attrs = read_group(cache, modality)
    r_ids, r_feats, r_present, _, _, _ = read_group(ref, modality)
    assert ids[:N] == r_ids and ids[N] == "hang"
    assert done.all()
    assert np.array_equal(present[:N], r_present) and r_present.all()
    assert np.array_equal(feats[:N], r_feats)  # the very same vectors: none lost, none zero
    assert np.abs(feats[:N].astype(np.float32)).sum(axis=1).min() > 0
    if modality == "video":
        assert not present[N] and not feats[N].any() and [i for i, _ in failures] == ["hang"]


def test_two_extractions_of_one_modality_started_together(setup):
    root, model, videos, images, ids, ref = setup
    data, fifo = dataset(root, "same", videos, images, ids)
    cache = os.path.join(data, "features.h5")
    a, b = start(data, model, "video"), start(data, model, "video")
    try:
        loser = wait_exit([a, b])  # the winner is stuck on the fifo until we let it go
        winner = b if loser is a else a
        _, err = loser.communicate()
        assert loser.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err
        assert lines[0].startswith("error: ") and f"pid {winner.pid}," in lines[0]
        assert "already being written with video features" in lines[0]
        held = json.loads(open(lock_path(cache, "video")).read())
        assert held["pid"] == winner.pid and "vmr extract" in held["command"]
        with unblocking(fifo):
            out, err = winner.communicate(timeout=240)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert winner.returncode == 0, err
    assert_matches_reference(cache, ref, "video")
    assert cache_read.read_modality(cache, ids + ["hang"], "text")[0].shape == (N + 1, 8)
    left = sorted(os.listdir(data))
    assert not [f for f in left if ".lock-" in f or ".partial-" in f or ".tmp-" in f], left


def test_different_modalities_run_side_by_side(setup):
    root, model, videos, images, ids, ref = setup
    data, fifo = dataset(root, "both", videos, images, ids)
    cache = os.path.join(data, "features.h5")
    video = start(data, model, "video")  # held on the fifo ...
    image = start(data, model, "image")  # ... while the image extraction runs and publishes
    try:
        assert wait_exit([video, image]) is image
        _, err = image.communicate()
        assert image.returncode == 0, err
        assert video.poll() is None  # still running: the two really overlapped
        assert cache_read.list_modalities(cache) == ["text", "image"]
        with unblocking(fifo):
            _, err = video.communicate(timeout=240)
    finally:
        for p in (video, image):
            if p.poll() is None:
                p.kill()
    assert video.returncode == 0, err
    assert cache_read.list_modalities(cache) == ["text", "image", "video"]  # nobody's group dropped
    assert_matches_reference(cache, ref, "video")
    assert_matches_reference(cache, ref, "image")
    assert cache_read.read_modality(cache, ids + ["hang"], "text")[0].shape == (N + 1, 8)


def test_the_lock_names_its_holder_and_leaves_nothing(tmp_path):
    cache = str(tmp_path / "c.h5")
    with modality_lock(cache, "video", "vmr extract --modality video"):
        with pytest.raises(VmrError, match=rf"already being written with video features by pid "
                                           rf"{os.getpid()}, `vmr extract --modality video`"):
            with modality_lock(cache, "video", "second"):
                pass
        with modality_lock(cache, "text", "another modality"):  # other modalities: free
            pass
    assert os.listdir(tmp_path) == []  # the lock file is removed on release
    with modality_lock(cache, "video", "again"):
        pass


def test_a_killed_holder_does_not_block_the_next_run(tmp_path):
    cache = str(tmp_path / "c.h5")
    code = ("import sys, time; from vmr.cache.lock import modality_lock\n"
            f"with modality_lock({cache!r}, 'image', 'holder'):\n"
            "    print('held', flush=True); time.sleep(600)\n")
    p = subprocess.Popen([PY, "-c", code], cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(VmrError, match=rf"by pid {p.pid}, `holder`"):
            with modality_lock(cache, "image", "me"):
                pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert os.path.exists(lock_path(cache, "image"))  # left behind by the kill ...
    with modality_lock(cache, "image", "me"):  # ... and simply reused
        pass
    assert not os.path.exists(lock_path(cache, "image"))


def test_import_refuses_while_an_extraction_holds_the_modality(tmp_path):
    data = write_dataset(tmp_path / "ds", ["a", "b"], text=["x", "y"])
    np.save(tmp_path / "f.npy", np.ones((2, 4), np.float32))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    cache = os.path.join(data, "features.h5")
    with modality_lock(cache, "text", "vmr extract --modality text"):
        with pytest.raises(VmrError, match=f"by pid {os.getpid()}"):
            import_features(data=data, modality="text", features=str(tmp_path / "f.npy"),
                            ids=str(tmp_path / "ids.txt"))
        import_features(data=data, modality="image", features=str(tmp_path / "f.npy"),
                        ids=str(tmp_path / "ids.txt"))  # another modality: fine
    assert cache_read.list_modalities(cache) == ["image"]


def test_vanished_progress_is_never_published_as_present(setup, tmp_path, monkeypatch):
    """What the unlocked runs did to each other: the progress directory deleted (by the other
    run finishing) while this run publishes. Simulated: it is deleted between the pass that
    decides which rows are present and the pass that copies their vectors."""
    from vmr.extract.progress import Progress

    root, model, videos, images, ids, ref = setup
    data = write_dataset(tmp_path / "ds", ids, video=videos)
    cache = os.path.join(data, "features.h5")
    parts, publish = Progress.parts, store.publish
    publishing = []

    def vanishing(self, with_features=False):
        if with_features and publishing:
            shutil.rmtree(self.path, ignore_errors=True)
        return parts(self, with_features)

    def flagged(*args, **kw):
        publishing.append(True)
        return publish(*args, **kw)

    monkeypatch.setattr(Progress, "parts", vanishing)
    monkeypatch.setattr(store, "publish", flagged)
    with pytest.raises(VmrError, match=r"the vectors of 12 items could not be read back .*"
                                       r"rerun the same command"):
        run_extract(ExtractOptions(data=data, modality="video", model=model, workers=1,
                                   batch_size=4, device="cpu"))
    assert not os.path.exists(cache)  # nothing published
    monkeypatch.setattr(Progress, "parts", parts)
    run_extract(ExtractOptions(data=data, modality="video", model=model, workers=1,
                               batch_size=4, device="cpu"))
    assert np.array_equal(read_group(cache, "video")[1], read_group(ref, "video")[1])
