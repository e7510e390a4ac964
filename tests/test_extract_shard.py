"""--shard I/N and `vmr cache merge`: merged shards equal an unsharded run bit for bit; overlaps,
gaps and disagreeing shards are refused."""

import os
import shutil

import h5py
import numpy as np
import pytest
from helpers.media import make_video, read_group, tiny_open_clip, vmr, write_dataset

from vmr.cache.merge import merge_shards
from vmr.cache.read import read_modality
from vmr.errors import VmrError
from vmr.extract.runner import ExtractOptions, run_extract
from vmr.extract.shard import parse_shard, shard_path, take, text_units

TEXTS = ["red lipstick", "", "nail polish top coat, glossy and long lasting", "shampoo",
         "moisturising cream for very dry skin with shea butter and aloe", "eye liner", None,
         "hair dryer 1800 W", "perfume", "lip balm with SPF 15", "face mask", "foundation"] * 2


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    cfg, ckpt = tiny_open_clip(root)
    m = root / "m"
    m.mkdir()
    n = len(TEXTS)
    videos = [make_video(m / f"{k}.mp4", n_frames=4 + 3 * (k % 5), seed=k) for k in range(n)]
    videos[3] = str(m / "missing.mp4")
    ids = [f"item-{k}" for k in range(n)]
    data = write_dataset(root / "ds", ids, text=TEXTS, video=videos)
    return root, data, ids, f"open_clip:{cfg}:{ckpt}"


def run(data, modality, model, cache, shard=None, **kw):
    kw.setdefault("batch_size", 4)
    return run_extract(ExtractOptions(data=data, modality=modality, model=model, cache=cache,
                                      shard=shard, workers=1, device="cpu", **kw))


def assert_equal_groups(a_path, b_path, modality):
    a, b = read_group(a_path, modality), read_group(b_path, modality)
    assert a[0] == b[0]
    assert np.array_equal(a[1], b[1])
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3]) and b[3].all()
    assert a[4] == b[4]
    assert {k: a[5][k] for k in ("encoder", "weights", "dim", "dtype", "fps", "pooling")} == \
        {k: b[5][k] for k in ("encoder", "weights", "dim", "dtype", "fps", "pooling")}
    fps = []
    for path in (a_path, b_path):
        with h5py.File(path, "r") as f:
            fps.append(f[modality]["fingerprints"].asstr()[...].tolist())
    assert fps[0] == fps[1] and all(fps[1])  # the content fingerprints travel with the rows


@pytest.mark.parametrize("modality", ["video", "text"])
def test_three_shards_merge_to_the_unsharded_cache(ds, modality):
    root, data, ids, clip = ds
    model = clip if modality == "video" else "minilm"
    full = str(root / f"full-{modality}.h5")
    run(data, modality, model, full)
    cache = str(root / f"sharded-{modality}.h5")
    shards = []
    for i in (1, 2, 3):
        run(data, modality, model, cache, shard=f"{i}/3")
        shards.append(shard_path(cache, i, 3))
        assert os.path.exists(shards[-1])
    with pytest.raises(VmrError, match="is shard 1/3 .* merge the shards"):
        read_modality(shards[0], ids, modality)
    out = str(root / f"merged-{modality}.h5")
    p = vmr("cache", "merge", *shards, "--out", out)
    assert f"{modality}: 3 shards" in p.stdout
    assert_equal_groups(full, out, modality)
    feats, present, _ = read_modality(out, ids, modality)
    assert present.sum() == len(ids) - (1 if modality == "video" else 4)

    # overlap: a shard given twice under another name
    dup = str(root / f"dup-{modality}.h5")
    shutil.copy(shards[0], dup)
    with pytest.raises(VmrError, match=r"shards overlap: item .* were two shards given the same"):
        merge_shards(shards + [dup], str(root / "x.h5"))
    # gap: a shard missing
    with pytest.raises(VmrError, match=r"uncovered .*missing shard\(s\): 2/3"):
        merge_shards([shards[0], shards[2]], str(root / "x.h5"))
    assert not os.path.exists(root / "x.h5")


def test_shards_made_with_other_settings_are_refused(ds):
    root, data, ids, clip = ds
    cache = str(root / "mixed.h5")
    run(data, "video", clip, cache, shard="1/2")
    run(data, "video", clip, cache, shard="2/2", fps=2.0)
    with pytest.raises(VmrError, match=r"different settings: fps 1\.0 -> 2\.0"):
        merge_shards([shard_path(cache, 1, 2), shard_path(cache, 2, 2)], str(root / "m.h5"))
    cache = str(root / "mixed-text.h5")
    run(data, "text", "minilm", cache, shard="1/2", batch_size=4)
    run(data, "text", "minilm", cache, shard="2/2", batch_size=3)
    with pytest.raises(VmrError, match="same --batch-size"):
        merge_shards([shard_path(cache, 1, 2), shard_path(cache, 2, 2)], str(root / "m.h5"))


def test_merge_keeps_other_modalities_of_out(ds):
    root, data, ids, clip = ds
    out = str(root / "both.h5")
    run(data, "text", "minilm", out)
    cache = str(root / "v.h5")
    for i in (1, 2):
        run(data, "video", clip, cache, shard=f"{i}/2")
    merge_shards([shard_path(cache, 1, 2), shard_path(cache, 2, 2)], out)
    assert read_modality(out, ids, "text")[0].shape == (len(ids), 384)
    assert read_modality(out, ids, "video")[0].shape == (len(ids), 16)
    with pytest.raises(VmrError, match="already holds video"):
        merge_shards([shard_path(cache, 1, 2), shard_path(cache, 2, 2)], out)


def test_shard_specs(monkeypatch):
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "1/0", "a/b", "1-4", "1/2/3"):
        with pytest.raises(VmrError):
            parse_shard(bad)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert parse_shard("auto") == (4, 8)
    monkeypatch.delenv("RANK")
    with pytest.raises(VmrError, match="RANK and WORLD_SIZE"):
        parse_shard("auto")
    assert shard_path("/x/features.h5", 2, 4) == "/x/features.shard-2-of-4.h5"
    assert shard_path("/x/cache", 1, 2) == "/x/cache.shard-1-of-2.h5"
    units = [[r] for r in range(10)]
    assert take(units, (1, 3)) == [[0], [3], [6], [9]] and take(units, (3, 3)) == [[2], [5], [8]]
    u = text_units(["ccc", "a", None, "bb", "dddd"], 2)
    assert u == [[2, 1], [3, 0], [4]]  # by length, ties in dataset order
