"""Content fingerprints (vmr/extract/freshness.py): `extract` re-encodes exactly the rows whose
text or file changed, keeps the rows of a grown catalogue, `check_fresh` and `vmr cache info`
report stale rows; old caches without fingerprints and imported rows are not failed."""

import os

import h5py
import numpy as np
import pytest
from helpers.media import make_image, read_group, tiny_open_clip, vmr, write_dataset

from vmr.cache import read as cache_read
from vmr.errors import VmrError
from vmr.extract.freshness import check_fresh
from vmr.extract.importer import import_features
from vmr.extract.progress import Progress
from vmr.extract.runner import ExtractOptions, run_extract
from vmr.fsio import sha256_file, sha256_text

TEXTS = ["red lipstick", "nail polish top coat", "shampoo", "moisturising cream", "eye liner",
         "hair dryer", "perfume", "lip balm", "face mask", "foundation"]
IDS = [f"{k:03d}" for k in range(len(TEXTS))]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    cfg, ckpt = tiny_open_clip(tmp_path_factory.mktemp("clip"))
    return f"open_clip:{cfg}:{ckpt}"


def extract(data, modality, model, **kw):
    kw.setdefault("batch_size", 1 if modality == "text" else 2)
    return run_extract(ExtractOptions(data=data, modality=modality, model=model, workers=0,
                                      device="cpu", **kw))


def fingerprints(cache, modality):
    with h5py.File(cache, "r") as f:
        return [s for s in f[modality]["fingerprints"].asstr()[...]]


def test_text_changed_by_a_new_prepare_is_encoded_again(tmp_path):
    data = write_dataset(tmp_path / "ds", IDS, text=TEXTS)
    cache = os.path.join(data, "features.h5")
    extract(data, "text", "minilm")
    _, before, *_ = read_group(cache, "text")
    assert fingerprints(cache, "text")[0] == "text:" + sha256_text("red lipstick")
    check_fresh(data, cache, ["text"])  # fresh: no error

    new = list(TEXTS)  # "prepare --text-columns" again: three items' texts differ
    new[2], new[5], new[7] = "shampoo for dry hair", None, "lip balm SPF 15"
    write_dataset(tmp_path / "ds", IDS, text=new)
    with pytest.raises(VmrError) as e:
        check_fresh(data, cache, ["text", "video"])
    assert str(e.value) == (
        f"text features in {cache} are stale for 3 of 10 items: their text changed since they "
        "were extracted (first: item '002'); rerun "
        f"`vmr extract --data {data} --modality text` (with the options it was extracted with) "
        "to re-encode them")
    info = vmr("cache", "info", cache).stdout  # the dataset is the cache's folder
    assert "text: 3 of 10 items STALE (content changed since extraction: '002', '005', '007')" \
        in info

    out = extract(data, "text", "minilm")
    assert out.startswith("text: 2 items encoded, 1 failed in this run")  # '005': no text now
    assert "3 cached text items changed since they were extracted (first: '002')" in out
    _, after, present, done, failures, _ = read_group(cache, "text")
    assert done.all() and present.tolist() == [k != 5 for k in range(10)]
    assert failures == [("005", "empty text")]
    same = [k for k in range(10) if k not in (2, 5, 7)]
    assert np.array_equal(after[same], before[same])  # untouched rows: the very same bytes
    assert not np.array_equal(after[2], before[2]) and not after[5].any()
    fresh = str(tmp_path / "fresh.h5")
    extract(data, "text", "minilm", cache=fresh)
    np.testing.assert_allclose(after[[2, 7]].astype(np.float32),
                               read_group(fresh, "text")[1][[2, 7]].astype(np.float32),
                               atol=2e-3)
    check_fresh(data, cache, ["text"])
    assert "text: up to date (10 items checked)" in vmr("cache", "info", cache, "--data",
                                                        data).stdout
    assert "nothing to do" in extract(data, "text", "minilm")


def test_changed_touched_and_deleted_files(tmp_path, clip):
    m = tmp_path / "m"
    m.mkdir()
    paths = [make_image(m / f"{k}.png", seed=k) for k in range(6)]
    ids = IDS[:6]
    data = write_dataset(tmp_path / "ds", ids, image=paths)
    cache = os.path.join(data, "features.h5")
    extract(data, "image", clip)
    _, before, *_ = read_group(cache, "image")
    size = os.path.getsize(paths[1])
    assert fingerprints(cache, "image")[1].startswith(f"file:{size}:")

    st = os.stat(paths[1])  # touched (or copied): same bytes, another mtime -> still fresh
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    check_fresh(data, cache, ["image"])
    assert "nothing to do" in extract(data, "image", clip)

    make_image(paths[2], seed=99)  # replaced in place by another picture
    os.remove(paths[4])  # deleted
    with pytest.raises(VmrError, match=r"image features in .* stale for 2 of 6 items: their "
                                       r"image file changed .*first: item '002'"):
        check_fresh(data, cache, ["image"])
    out = extract(data, "image", clip)
    assert out.startswith("image: 1 items encoded, 1 failed in this run")
    _, after, present, done, failures, _ = read_group(cache, "image")
    assert done.all() and present.tolist() == [True] * 4 + [False, True]
    assert failures == [("004", f"missing file {paths[4]}")]
    assert np.array_equal(after[[0, 1, 3, 5]], before[[0, 1, 3, 5]])
    fresh = str(tmp_path / "fresh.h5")
    extract(data, "image", clip, cache=fresh)
    assert np.array_equal(after, read_group(fresh, "image")[1])
    check_fresh(data, cache, ["image"])


def test_a_grown_catalogue_keeps_the_cached_rows(tmp_path, clip, capsys):
    m = tmp_path / "m"
    m.mkdir()
    paths = {i: make_image(m / f"{i}.png", seed=k) for k, i in enumerate(IDS)}
    old_ids = IDS[:6]
    data = write_dataset(tmp_path / "ds", old_ids, image=[paths[i] for i in old_ids])
    cache = os.path.join(data, "features.h5")
    np.save(tmp_path / "t.npy", np.arange(6 * 4, dtype=np.float32).reshape(6, 4))
    (tmp_path / "ids.txt").write_text("\n".join(old_ids) + "\n")
    import_features(data=data, modality="text", features=str(tmp_path / "t.npy"),
                    ids=str(tmp_path / "ids.txt"))
    extract(data, "image", clip)
    _, before, *_ = read_group(cache, "image")

    new_ids = ["008", "000", "001", "006", "002", "003", "004", "009", "005"]  # 3 new, reordered
    write_dataset(tmp_path / "ds", new_ids, image=[paths[i] for i in new_ids])
    with pytest.raises(VmrError, match=r"holds 6 items but the dataset has 9: the dataset gained "
                                       r"3 items since \(first: '008'\); rerun `vmr extract`"):
        cache_read.read_modality(cache, new_ids, "image")
    capsys.readouterr()
    out = extract(data, "image", clip)
    assert out.startswith("image: 3 items encoded, 0 failed")
    assert "note: the text features in" in capsys.readouterr().err
    ids, after, present, done, _, _ = read_group(cache, "image")
    assert ids == new_ids and done.all() and present.all()
    for r, i in enumerate(new_ids):
        if i in old_ids:
            assert np.array_equal(after[r], before[old_ids.index(i)])
    fresh = str(tmp_path / "fresh.h5")
    extract(data, "image", clip, cache=fresh)
    assert np.array_equal(after, read_group(fresh, "image")[1])
    _, text, t_present, t_done, _, _ = read_group(cache, "text")  # carried over by id ...
    assert t_done.tolist() == [i in old_ids for i in new_ids] == t_present.tolist()
    assert text[1].tolist() == [0, 1, 2, 3] and not text[0].any()
    with pytest.raises(VmrError, match=r"text features in .* are incomplete \(6 of 9"):
        cache_read.read_modality(cache, new_ids, "text")  # ... and needs its new items

    write_dataset(tmp_path / "ds", new_ids[:5], image=[paths[i] for i in new_ids[:5]])
    with pytest.raises(VmrError, match="holds 9 items but the dataset has 5"):
        extract(data, "image", clip)  # items the dataset lost: refused, nothing dropped
    assert read_group(cache, "image")[0] == new_ids


def test_a_resumed_run_encodes_again_what_changed_meanwhile(tmp_path, clip, monkeypatch):
    m = tmp_path / "m"
    m.mkdir()
    paths = [make_image(m / f"{k}.png", seed=k) for k in range(6)]
    data = write_dataset(tmp_path / "ds", IDS[:6], image=paths)
    commit = Progress.commit
    calls = []

    def interrupted(self, *a, **kw):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(1)
        return commit(self, *a, **kw)

    monkeypatch.setattr(Progress, "commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(data, "image", clip)
    monkeypatch.setattr(Progress, "commit", commit)
    cache = os.path.join(data, "features.h5")
    assert len(os.listdir(cache + ".partial-image")) == 2  # settings + the part of 000, 001
    make_image(paths[0], seed=42)  # changed after its vector was saved
    out = extract(data, "image", clip)
    assert out.startswith("image: 5 items encoded")  # 000 again, 001 from the saved part
    fresh = str(tmp_path / "fresh.h5")
    extract(data, "image", clip, cache=fresh)
    assert np.array_equal(read_group(cache, "image")[1], read_group(fresh, "image")[1])


def test_old_caches_without_fingerprints_warn_once(tmp_path, clip, capsys):
    m = tmp_path / "m"
    m.mkdir()
    paths = [make_image(m / f"{k}.png", seed=k) for k in range(3)]
    data = write_dataset(tmp_path / "ds", IDS[:3], image=paths)
    cache = os.path.join(data, "features.h5")
    extract(data, "image", clip)
    with h5py.File(cache, "a") as f:  # as vmr wrote it before fingerprints
        del f["image"]["fingerprints"]
    make_image(paths[1], seed=7)
    capsys.readouterr()
    check_fresh(data, cache, ["image"])  # unknown freshness: no error ...
    check_fresh(data, cache, ["image"])
    err = capsys.readouterr().err
    assert err.count("warning: the image features in") == 1  # ... and one warning
    assert "without content fingerprints" in err
    assert "nothing to do" in extract(data, "image", clip)  # kept, not re-encoded
    info = vmr("cache", "info", cache).stdout
    assert "fingerprints: none (cache made by an older vmr)" in info
    assert "image: unknown (no fingerprints" in info


def test_imported_rows_are_not_checked(tmp_path):
    data = write_dataset(tmp_path / "ds", IDS, text=TEXTS)
    np.save(tmp_path / "f.npy", np.ones((9, 4), np.float32))
    (tmp_path / "ids.txt").write_text("\n".join(IDS[:9]) + "\n")
    import_features(data=data, modality="text", features=str(tmp_path / "f.npy"),
                    ids=str(tmp_path / "ids.txt"))
    cache = os.path.join(data, "features.h5")
    fps = fingerprints(cache, "text")
    digest = sha256_file(tmp_path / "f.npy")
    assert fps[0] == f"import:sha256:{digest}:row:1" and fps[9] == "import:absent"
    write_dataset(tmp_path / "ds", IDS, text=["other"] * 10)
    check_fresh(data, cache, ["text"])
    assert "text: up to date (0 items checked), 10 imported (not checked)" in \
        vmr("cache", "info", cache).stdout


def test_a_grown_catalogue_encodes_only_its_new_texts(tmp_path):
    """Texts are encoded in fixed units of rows; new items interleaved among cached ones must
    not drag the cached rows of their unit into the encoder again."""
    old_ids = IDS[:6]
    data = write_dataset(tmp_path / "ds", old_ids, text=TEXTS[:6])
    extract(data, "text", "minilm", batch_size=4)
    new_ids = ["008", "000", "001", "006", "002", "003", "004", "009", "005"]
    write_dataset(tmp_path / "ds", new_ids, text=[TEXTS[IDS.index(i)] for i in new_ids])
    out = extract(data, "text", "minilm", batch_size=4)
    assert out.startswith("text: 3 items encoded, 0 failed"), out
    ids, feats, present, done, _, _ = read_group(os.path.join(data, "features.h5"), "text")
    assert ids == new_ids and present.all() and done.all()
