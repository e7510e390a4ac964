"""The cache file: reader API, errors for unusable files, atomic publishing, `vmr cache info`."""

import os

import h5py
import numpy as np
import pytest
from helpers.media import read_group, vmr

from vmr.cache import read as cache_read
from vmr.cache import store
from vmr.errors import VmrError

IDS = ["007", "7", "a b", "ü"]


def group(dim=3, present=(True, True, False, True), done=None, fill=1.0, dtype="float16",
          failures=(("a b", "missing file /x.mp4"),), fingerprints=None, **attrs):
    present = np.array(present)
    done = np.ones(len(present), bool) if done is None else np.array(done)

    def write(ds):
        rows = np.flatnonzero(present).tolist()
        ds[rows] = np.full((len(rows), dim), fill, dtype)

    a = {"encoder": "enc", "weights": "sha256:00", "dim": dim, "dtype": dtype, "fps": 1.0,
         "max_frames": 32, "pooling": "mean", **store.base_attrs(), **attrs}
    return store.ModalityData(attrs=a, present=present, done=done, failures=list(failures),
                              write_features=write, dtype=dtype, dim=dim,
                              fingerprints=fingerprints)


def test_publish_and_read_back(tmp_path):
    path = str(tmp_path / "c.h5")
    store.publish(path, IDS, {"video": group()})
    store.publish(path, IDS, {"text": group(dim=5, fill=2.0)})  # adds, keeps video
    assert cache_read.list_modalities(path) == ["text", "video"]
    feats, present, attrs = cache_read.read_modality(path, IDS, "video")
    assert feats.dtype == np.float32 and feats.shape == (4, 3)
    assert present.tolist() == [True, True, False, True]
    assert (feats[present] == 1).all() and (feats[~present] == 0).all()
    assert attrs["encoder"] == "enc" and attrs["dim"] == 3 and isinstance(attrs["fps"], float)
    assert cache_read.read_modality(path, IDS, "text")[0][0, 0] == 2.0
    with h5py.File(path, "r") as f:  # plain h5py sees the documented layout
        assert list(f["item_ids"].asstr()[...]) == IDS
        assert f["video/features"].dtype == np.float16 and f["video/features"].compression is None
        assert list(f["video/failure_ids"].asstr()[...]) == ["a b"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_reader_errors(tmp_path):
    path = str(tmp_path / "c.h5")
    store.publish(path, IDS, {"video": group()})
    with pytest.raises(VmrError, match="item 2 is '7' in the cache but '07'"):
        cache_read.read_modality(path, ["007", "07", "a b", "ü"], "video")
    with pytest.raises(VmrError, match="holds 4 items but the dataset has 3"):
        cache_read.read_modality(path, IDS[:3], "video")
    with pytest.raises(VmrError, match="has no text features .*it has: video"):
        cache_read.read_modality(path, IDS, "text")
    store.publish(path, IDS, {"image": group(done=(True, False, False, True))})
    with pytest.raises(VmrError, match=r"incomplete \(2 of 4 items done\)"):
        cache_read.read_modality(path, IDS, "image")
    with pytest.raises(VmrError, match="does not exist"):
        cache_read.read_modality(str(tmp_path / "none.h5"), IDS, "video")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(VmrError, match="not a readable HDF5 file"):
        cache_read.list_modalities(str(tmp_path / "text.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(VmrError, match="not a vmr feature cache"):
        cache_read.list_modalities(str(tmp_path / "other.h5"))


def test_truncated_cache_gives_a_clear_error(tmp_path):
    path = tmp_path / "c.h5"
    store.publish(str(path), IDS, {"video": group(dim=512)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VmrError, match=r"not a readable HDF5 file \(truncated file"):
        cache_read.read_modality(str(path), IDS, "video")
    p = vmr("cache", "info", path, check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"error: cache {path} is not a readable HDF5 file")


def test_failed_publish_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "c.h5")
    store.publish(path, IDS, {"video": group()})
    before = open(path, "rb").read()
    bad = group()

    def boom(ds):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    bad.write_features = boom
    with pytest.raises(KeyboardInterrupt):
        store.publish(path, IDS, {"video": bad})
    assert open(path, "rb").read() == before
    with pytest.raises(VmrError, match="already holds video"):
        store.publish(path, IDS, {"video": group()}, replace=False)
    with pytest.raises(VmrError, match="another dataset"):
        store.publish(path, ["x", "y", "z", "w"], {"text": group()})
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_cache_info(tmp_path):
    path = str(tmp_path / "c.h5")
    fails = [(f"i{k}", f"decode error {k}") for k in range(8)]
    store.publish(path, IDS, {"video": group(failures=fails)})
    p = vmr("cache", "info", path)
    out = p.stdout
    assert "4 items" in out and "video: encoder enc (weights sha256:00), dim 3, float16" in out
    assert "present 3 / 4 (75.0%), done 4 / 4" in out
    assert "failures 8 (first 5): 'i0': decode error 0" in out and "'i5'" not in out


def test_publish_keeps_rows_and_carries_a_cache_over_to_more_items(tmp_path):
    path = str(tmp_path / "c.h5")
    fps = ["f0", "f1", "", "f3"]
    store.publish(path, IDS, {"video": group(fill=3.0, fingerprints=fps),
                              "text": group(dim=2, fill=5.0)})
    # the catalogue grew: "new" first; video keeps rows "007" and "ü" and writes "new" itself
    ids = ["new"] + IDS
    keep = np.array([False, True, False, False, True])
    data = group(present=(True, False, False, False, False), fill=7.0)
    data.keep, data.fingerprints = keep, ["g-new", "", "", "", ""]
    data.done = np.array([True, False, False, False, False]) | keep
    store.publish(path, ids, {"video": data}, remap=True)
    feats, present, done = (read_group(path, "video")[k] for k in (1, 2, 3))
    assert present.tolist() == [True, True, False, False, True] and done.tolist() == \
        [True, True, False, False, True]
    assert (feats[0] == 7).all() and (feats[1] == 3).all() and (feats[4] == 3).all()
    assert not feats[2:4].any()
    with h5py.File(path, "r") as f:
        assert f["video/fingerprints"].asstr()[...].tolist() == ["g-new", "f0", "", "", "f3"]
    t_feats, t_present, t_done = (read_group(path, "text")[k] for k in (1, 2, 3))
    assert t_done.tolist() == [False, True, True, True, True]  # carried over by id
    assert (t_feats[1] == 5).all() and not t_feats[0].any() and not t_present[0]
    # rows to keep that are gone from the cache are an error, not zeros
    data = group(present=(False,) * 5, done=(True,) * 5)
    data.keep = np.array([True] * 5)
    with pytest.raises(VmrError, match="its video features changed while this run was working"):
        store.publish(path, ids, {"video": data})
    with pytest.raises(VmrError, match="holds 5 items but the dataset has 4"):
        store.publish(path, IDS, {"video": group()}, remap=True)  # fewer items: refused
    info = cache_read.describe(path).splitlines()
    assert "  fingerprints: 3 items" in info  # video: its 3 done rows
    assert "  fingerprints: none (cache made by an older vmr): whether the features match the " \
        "items' current content is unknown" in info  # text was written without any
