"""`vmr combine`: several prepared catalogues as one dataset and one feature cache
(vmr/data/combine.py, vmr/cache/concat.py), to train one model on all of them."""

import json

import h5py
import numpy as np
import pytest

from helpers import cli_one_line, run_cli
from helpers.synth import SHARED_ENCODER as ENCODER, make_dataset, same_encoder
from vmr.data.dataset import load_dataset

TINY = ["--set", "model.d_model=16", "--set", "train.device=cpu", "--set", "train.epochs=1"]



@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("combine")
    # both catalogues use the same ids (u000, i0-00, ...) for different users and items
    a = make_dataset(root / "a", n_users=40, length=6, seed=0)
    b = make_dataset(root / "b", n_topics=3, per_topic=9, n_users=30, length=5, seed=1)
    same_encoder(a)
    same_encoder(b)
    return root, a, b


def test_combined_dataset_keeps_each_part_apart(parts, tmp_path):
    root, a, b = parts
    out = tmp_path / "ab"
    code, text, err = run_cli("combine", "--data", a, "--data", b, "--names", "beauty,sports",
                              "--out", out)
    assert code == 0, err
    assert "text combined" in text and "total" in text
    da, db, dc = load_dataset(a), load_dataset(b), load_dataset(out)
    assert dc.n_items == da.n_items + db.n_items and dc.n_users == da.n_users + db.n_users
    assert dc.item_ids[:da.n_items] == ["beauty/" + i for i in da.item_ids]
    assert dc.item_ids[da.n_items:] == ["sports/" + i for i in db.item_ids]
    assert "beauty/u000" in dc.user_ids and "sports/u000" in dc.user_ids
    # every user's sequence is the same items, by id
    for part, name in ((da, "beauty"), (db, "sports")):
        for u, seq in zip(part.user_ids, part.sequences):
            k = dc.user_ids.index(f"{name}/{u}")
            assert [dc.item_ids[j] for j in dc.sequences[k]] == [f"{name}/{part.item_ids[j]}"
                                                                 for j in seq]
    # the splits are the parts' splits
    assert len(dc.split_sequences("test")) == len(da.split_sequences("test")) + len(
        db.split_sequences("test"))
    meta = json.loads((out / "dataset.json").read_text())
    assert [p["name"] for p in meta["combined"]] == ["beauty", "sports"]
    assert meta["interactions"] == da.meta["interactions"] + db.meta["interactions"]
    # the features are the parts' rows, in the combined order, fingerprints carried over
    with h5py.File(a / "features.h5") as fa, h5py.File(b / "features.h5") as fb, \
            h5py.File(out / "features.h5") as fc:
        want = np.concatenate([fa["text"]["features"][...], fb["text"]["features"][...]])
        assert np.array_equal(fc["text"]["features"][...], want)
        assert fc["text"].attrs["encoder"] == ENCODER["encoder"]
        assert list(fc["text"]["fingerprints"].asstr()[...]) == (
            list(fa["text"]["fingerprints"].asstr()[...])
            + list(fb["text"]["fingerprints"].asstr()[...]))


def test_a_run_on_the_combination_transfers_to_a_part(parts, tmp_path):
    root, a, b = parts
    out = tmp_path / "ab"
    assert run_cli("combine", "--data", a, "--data", b, "--names", "a,b", "--out", out)[0] == 0
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", out, "--out", run, *TINY)
    assert code == 0, err
    code, _, err = run_cli("train", "--data", b, "--out", tmp_path / "ft", "--init-from", run,
                           "--set", "train.epochs=1")
    assert code == 0, err
    info = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert info["init"]["run"] == str(run.resolve())


def test_modalities_encoded_differently_are_left_out(parts, tmp_path):
    root, a, _ = parts
    c = make_dataset(root / "c", n_topics=3, per_topic=9, n_users=30, length=5, seed=2)
    code, text, err = run_cli("combine", "--data", a, "--data", c, "--names", "a,c",
                              "--out", tmp_path / "ac")
    assert code == 0, err
    assert "no modality combined" in text and "text left out" in text
    assert "encoded differently" in text
    assert not (tmp_path / "ac" / "features.h5").exists()


def test_new_items_stay_new(tmp_path):
    from vmr.data.prepare import PrepareOptions, prepare_dataset

    lines = [f"u{u} " + " ".join(f"x{(u + k) % 20}" for k in range(6)) for u in range(30)]
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n")
    for name in ("p", "q"):
        prepare_dataset(PrepareOptions(interactions=str(tmp_path / "s.txt"),
                                       out=str(tmp_path / name), fmt="sequences", kcore=1,
                                       new_items=0.2 if name == "p" else 0.0))
    code, text, err = run_cli("combine", "--data", tmp_path / "p", "--data", tmp_path / "q",
                              "--out", tmp_path / "pq")
    assert code == 0, err
    assert "none combined" in text                 # no caches: said, nothing written
    p, pq = load_dataset(tmp_path / "p"), load_dataset(tmp_path / "pq")
    assert p.new_items and pq.new_items == ["p/" + i for i in p.new_items]


@pytest.mark.parametrize("args, says", [
    (["--data", "{a}"], "at least two datasets"),
    (["--data", "{a}", "--data", "{b}"], "both named 'ds'"),
    (["--data", "{a}", "--data", "{b}", "--names", "x"], "1 name(s) for 2 datasets"),
    (["--data", "{a}", "--data", "{b}", "--names", "x,x/y"], "without '/'"),
    (["--data", "{a}", "--data", "{root}/nothing", "--names", "x,y"], "not found"),
])
def test_user_errors_are_one_line(parts, tmp_path, args, says):
    root, a, b = parts
    args = [s.format(a=a, b=b, root=root) for s in args]
    line = cli_one_line("combine", *args, "--out", tmp_path / "out")
    assert says in line, line


def test_out_may_not_be_a_part(parts):
    _, a, b = parts
    assert "one of the datasets" in cli_one_line("combine", "--data", a, "--data", b,
                                                 "--names", "a,b", "--out", b)


def test_a_modality_only_one_part_holds_is_left_out(tmp_path):
    from vmr.extract.importer import import_features

    a = make_dataset(tmp_path / "a", n_users=20, length=5, seed=3)
    b = make_dataset(tmp_path / "b", n_users=20, length=5, seed=4)
    same_encoder(a)
    same_encoder(b)
    ids = load_dataset(a).item_ids
    np.save(tmp_path / "img.npy", np.ones((len(ids), 4), np.float32))
    (tmp_path / "img_ids.txt").write_text("\n".join(ids) + "\n")
    import_features(data=str(a), modality="image", features=str(tmp_path / "img.npy"),
                    ids=str(tmp_path / "img_ids.txt"), dim=None, cache=None, dtype="float32",
                    overwrite=False)
    code, text, err = run_cli("combine", "--data", a, "--data", b, "--names", "a,b",
                              "--out", tmp_path / "ab")
    assert code == 0, err
    assert "text combined" in text and "image left out: b has none" in text
    with h5py.File(tmp_path / "ab" / "features.h5") as f:
        assert "text" in f and "image" not in f
