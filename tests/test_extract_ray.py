"""`vmr extract --engine ray` on a local Ray (ray.init on this machine, 2 CPUs, a small object
store): the same cache as the local engine, bit for bit; a rerun and a resumed job encode only what
is left. Skipped where Ray is not installed (`pip install 'vmr[ray]'`)."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from helpers import ENV, PY, REPO
from helpers.media import make_video, read_group, tiny_open_clip, write_dataset

from vmr.errors import VmrError
from vmr.extract.runner import ExtractOptions, run_extract

TEXTS = ["red lipstick", "", "nail polish top coat, glossy and long lasting", "shampoo",
         "moisturising cream for very dry skin with shea butter and aloe", "eye liner", None,
         "hair dryer 1800 W", "perfume", "lip balm with SPF 15", "face mask", "foundation"]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=200 << 20, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    cfg, ckpt = tiny_open_clip(root)
    m = root / "m"
    m.mkdir()
    n = len(TEXTS)
    videos = [make_video(m / f"{k}.mp4", n_frames=3 + 5 * (k % 4), seed=k) for k in range(n)]
    videos[4] = str(m / "missing.mp4")
    (m / "broken.mp4").write_bytes(b"not a video")
    videos[7] = str(m / "broken.mp4")
    videos[9] = None
    ids = [f"item-{k:02d}" for k in range(n)]
    data = write_dataset(root / "ds", ids, text=TEXTS, video=videos)
    return root, data, ids, f"open_clip:{cfg}:{ckpt}"


def run(data, modality, model, cache, **kw):
    kw.setdefault("batch_size", 4)
    return run_extract(ExtractOptions(data=data, modality=modality, model=model, cache=cache,
                                      workers=1, device="cpu", **kw))


def assert_same_cache(a_path, b_path, modality):
    a, b = read_group(a_path, modality), read_group(b_path, modality)
    assert a[0] == b[0]
    assert a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1])  # bit for bit
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
    assert a[4] == b[4]  # the same failures, same reasons
    keys = ("encoder", "weights", "dim", "dtype", "fps", "max_frames", "pooling", "batch_size")
    assert {k: a[5][k] for k in keys} == {k: b[5][k] for k in keys}
    assert (a[5]["engine"], b[5]["engine"]) == ("local", "ray")


@pytest.fixture(scope="module")
def local_video(ds):
    root, data, ids, clip = ds
    local = str(root / "local-video.h5")
    run(data, "video", clip, local)
    return local


def test_ray_resumes_and_gives_the_local_cache_bit_for_bit(local_ray, ds, local_video,
                                                           monkeypatch):
    """A Ray job killed after its 3rd saved batch, resumed on Ray: only what was left is encoded,
    and the cache equals the local engine's bit for bit (rows, failures, fingerprints)."""
    root, data, ids, clip = ds
    cache = str(root / "ray-video.h5")
    from vmr.extract.progress import Progress

    real, calls = Progress.commit, []

    def dying_commit(self, *a, **kw):
        calls.append(1)
        real(self, *a, **kw)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "commit", dying_commit)
    monkeypatch.setattr("vmr.extract.ray_jobs.COMMIT_EVERY_S", 0.0)  # a file per batch
    with pytest.raises(KeyboardInterrupt):
        run(data, "video", clip, cache, engine="ray")
    monkeypatch.setattr(Progress, "commit", real)
    saved = Progress(cache + ".partial-video")
    done_before = len(saved.done()[0])
    assert 0 < done_before < len(ids) - 1
    out = run(data, "video", clip, cache, engine="ray")
    assert "engine ray: 1 node(s), 1 CPU encoder(s)" in out
    n_encoded = int(out.split(" items encoded")[0].split()[-1])
    n_failed = int(out.split(" failed in this run")[0].split()[-1])
    assert n_encoded + n_failed == len(ids) - 1 - done_before  # only what was left
    assert_same_cache(local_video, cache, "video")
    fails = dict(read_group(cache, "video")[4])
    assert set(fails) == {"item-04", "item-07"}  # missing and broken; item-09 has no video
    again = run(data, "video", clip, cache, engine="ray")  # a rerun finds everything done
    assert "nothing to do" in again


def test_ray_options_are_checked(ds):
    root, data, ids, clip = ds
    with pytest.raises(VmrError, match="--shard with --engine ray"):
        run(data, "text", "minilm", str(root / "x.h5"), engine="ray", shard="1/2")
    with pytest.raises(VmrError, match="need --engine ray"):
        run(data, "text", "minilm", str(root / "x.h5"), ray_address="localhost:1")
    with pytest.raises(VmrError, match="--engine 'spark'"):
        run(data, "text", "minilm", str(root / "x.h5"), engine="spark")


def test_without_ray_the_error_names_the_extra(ds, monkeypatch):
    import sys

    root, data, ids, clip = ds
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(VmrError, match=r"pip install 'vmr\[ray\]'"):
        run(data, "text", "minilm", str(root / "y.h5"), engine="ray")


# ---------------------------------------------------------------------------- slow: a cluster
def _ray_workers(cluster, title: str) -> list[int]:
    """Pids of this cluster's worker processes whose title starts with `title`."""
    ours = {p.process.pid for node in cluster.list_all_nodes()
            for _, procs in node.all_processes.items() for p in procs}
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if cmd.startswith(title) and ppid in ours:
            found.append(int(d))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["video", "text"])
def test_two_node_cluster_with_a_killed_worker_gives_the_local_cache(tmp_path, modality):
    """A head and one more node on this machine; the CLI joins them with --ray-address; one
    encoder actor is SIGKILLed once the first batch is saved; the cache equals a local run."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    n = 60 if modality == "video" else 240
    m = tmp_path / "m"
    m.mkdir()
    texts = [(f"item {k} " + "lipstick shampoo perfume " * (k % 9)) if k % 17 else ""
             for k in range(n)]
    videos = ([make_video(m / f"{k}.mp4", n_frames=2 + 3 * (k % 7), seed=k) for k in range(n)]
              if modality == "video" else None)
    ids = [f"{k:04d}" for k in range(n)]
    data = write_dataset(tmp_path / "ds", ids, text=texts, video=videos)
    model = "minilm"
    if modality == "video":
        cfg, ckpt = tiny_open_clip(tmp_path)
        model = f"open_clip:{cfg}:{ckpt}"
    local, on_ray = str(tmp_path / "local.h5"), str(tmp_path / "ray.h5")
    run(data, modality, model, local, batch_size=8)

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 100 << 20, "include_dashboard": False})
    cluster.add_node(num_cpus=2, object_store_memory=100 << 20)
    try:
        cmd = [PY, "-m", "vmr", "extract", "--data", data, "--modality", modality, "--model",
               model, "--cache", on_ray, "--batch-size", "8", "--device", "cpu",
               "--engine", "ray", "--ray-address", cluster.address]
        p = subprocess.Popen(cmd, env=ENV, cwd=str(REPO), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        partial = on_ray + f".partial-{modality}"
        killed = None
        deadline = time.monotonic() + 600
        while p.poll() is None and time.monotonic() < deadline:
            parts = [f for f in os.listdir(partial) if f.startswith("part-")] \
                if os.path.isdir(partial) else []
            actors = _ray_workers(cluster, "ray::EncoderActor")
            if parts and len(actors) == 2 and killed is None:
                killed = actors[-1]
                os.kill(killed, signal.SIGKILL)
                assert not os.path.exists(on_ray)  # mid-run: nothing published yet
            time.sleep(0.2)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-3000:]
        assert killed is not None, "the run ended before a worker could be killed"
        assert "engine ray: 2 node(s), 2 CPU encoder(s)" in out
    finally:
        cluster.shutdown()
    assert_same_cache(local, on_ray, modality)
    assert read_group(on_ray, modality)[3].all()
