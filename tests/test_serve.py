"""`vmr recommend` and `vmr export` on small real runs."""

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from helpers import run_cli
from helpers.runs import ITEMS, build_runs
from vmr.errors import VmrError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build_runs(tmp_path_factory.mktemp("serveruns"))


def scores_for(run, history_ids):
    from vmr.model.loaded import load_run

    loaded = load_run(run)
    ds = loaded.dataset
    hist = np.array([ds.item_index[i] for i in history_ids], dtype=np.int64)
    s = (loaded.user_vectors([hist]) @ loaded.item_embeddings().T)[0]
    return ds, hist, s


# --------------------------------------------------------------------------------- recommend
def test_recommend_user_json_matches_model_scores(runs):
    from vmr.data.dataset import load_dataset

    ds = load_dataset(runs["data"])
    user = ds.user_ids[3]
    history = [ds.item_ids[i] for i in ds.sequences[3]]
    code, out, err = run_cli("recommend", "--run", str(runs["sasrec"]), "--user", user,
                             "--top", "5", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["user"] == user and doc["history"] == history
    got = [r["item"] for r in doc["items"]]
    assert len(got) == 5 and not set(got) & set(history)
    _, hist, s = scores_for(runs["sasrec"], history)
    s[torch.from_numpy(hist)] = -float("inf")
    want = [ds.item_ids[i] for i in torch.sort(s, descending=True, stable=True).indices[:5]]
    assert got == want
    assert [r["rank"] for r in doc["items"]] == [1, 2, 3, 4, 5]
    assert all(a["score"] >= b["score"] for a, b in zip(doc["items"], doc["items"][1:]))
    titles = {r["item"]: r["title"] for r in doc["items"]}
    assert all(t == f"Title of {i}" for i, t in titles.items() if i != "x-1")


def test_recommend_history_ids_are_opaque_strings(runs):
    run = str(runs["pop"])
    code, out, _ = run_cli("recommend", "--run", run, "--history", "7 007",
                           "--top", str(len(ITEMS)), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["history"] == ["7", "007"]
    got = [r["item"] for r in doc["items"]]
    assert len(got) == len(ITEMS) - 2 and "7" not in got and "007" not in got
    # untitled item -> null title; popularity ties keep dataset order
    assert {r["item"]: r["title"] for r in doc["items"]}.get("x-1", None) is None
    code, out, _ = run_cli("recommend", "--run", run, "--history", "7 007",
                           "--include-history", "--top", str(len(ITEMS)), "--format", "json")
    assert {"7", "007"} <= {r["item"] for r in json.loads(out)["items"]}


def test_recommend_table_output(runs):
    code, out, _ = run_cli("recommend", "--run", str(runs["sasrec"]), "--history",
                           "i01 i03 i05", "--top", "3")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("top 3 for the given history (3 history items, excluded)")
    assert lines[1].split() == ["rank", "item", "score", "title"]
    assert len(lines) == 5 and lines[2].split()[0] == "1"
    assert all("Title of" in ln or " x-1 " in ln + " " for ln in lines[2:])


def test_recommend_errors_name_the_id(runs):
    run = str(runs["sasrec"])
    code, _, err = run_cli("recommend", "--run", run, "--history", "i01 07 i02")
    assert code == 1
    assert err == "error: --history: unknown item id '07' (not in the run's dataset)\n"
    code, _, err = run_cli("recommend", "--run", run, "--user", "u3")
    assert code == 1 and "unknown user id 'u3'" in err and err.count("\n") == 1
    code, _, err = run_cli("recommend", "--run", run, "--history", "   ")
    assert code == 1 and "--history is empty" in err
    code, _, err = run_cli("recommend", "--run", run)
    assert code == 1 and "exactly one of --user or --history" in err


# ------------------------------------------------------------------------------------ export
def test_export_files_and_rebuilt_user_tower(runs, tmp_path):
    from vmr.serve.export import load_export
    from vmr.model.loaded import load_run

    out = tmp_path / "exp"
    code, text, err = run_cli("export", "--run", str(runs["sasrec"]), "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "item_embeddings.npy", "item_embeddings.safetensors", "item_ids.txt", "manifest.json",
        "user_tower.pt", "user_tower.ts"]      # .ts and .safetensors: tests/test_portable_export
    loaded = load_run(runs["sasrec"])
    emb = np.load(out / "item_embeddings.npy")
    assert emb.dtype == np.float32
    assert np.array_equal(emb, loaded.item_embeddings().detach().numpy())
    ids = (out / "item_ids.txt").read_text(encoding="utf-8").splitlines()
    assert ids == loaded.dataset.item_ids and "007" in ids and "7" in ids
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"] == len(ids) and manifest["dim"] == emb.shape[1]
    assert manifest["index"] == "exact" and manifest["checkpoint"] == "best.pt"
    for name, info in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == info["sha256"]
    # the exported user tower reproduces the run's user vectors
    exp = load_export(out)
    hist = [["i01", "i03", "i05"], ["7", "007", "x-1", "i10"]]
    want = loaded.user_vectors([np.array([loaded.dataset.item_index[i] for i in h]) for h in hist])
    assert np.allclose(exp.user_vectors(hist), want.detach().numpy(), atol=1e-5)
    idx, scores = exp.search(exp.user_vectors(hist), 4)
    full = exp.user_vectors(hist) @ emb.T
    assert np.allclose(scores, -np.sort(-full, axis=1)[:, :4], atol=1e-5)
    with pytest.raises(VmrError, match="unknown item id 'nope'"):
        exp.user_vectors([["nope"]])


def test_export_popularity_run(runs, tmp_path):
    from vmr.serve.export import load_export

    out = tmp_path / "pop"
    assert run_cli("export", "--run", str(runs["pop"]), "--out", str(out))[0] == 0
    exp = load_export(out)
    idx, _ = exp.search(exp.user_vectors([["i01"]]), 3)
    pop = exp.item_embeddings[:, 0]
    assert pop[idx[0]].tolist() == sorted(pop, reverse=True)[:3]


def test_export_is_atomic(runs, tmp_path, monkeypatch):
    import vmr.serve.export as export

    out = tmp_path / "exp"
    assert run_cli("export", "--run", str(runs["sasrec"]), "--out", str(out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*a, **k):
        raise KeyboardInterrupt  # as if interrupted half-way through writing

    monkeypatch.setattr(export, "sha256_file", killed)
    with pytest.raises(KeyboardInterrupt):
        export.export_run(runs["pop"], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no temp directory left
    monkeypatch.undo()
    # a successful export replaces the old one whole
    assert run_cli("export", "--run", str(runs["pop"]), "--out", str(out))[0] == 0
    assert np.load(out / "item_embeddings.npy").shape[1] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_export_refuses_foreign_directory(runs, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code, _, err = run_cli("export", "--run", str(runs["pop"]), "--out",
                           str(tmp_path / "mine"))
    assert code == 1 and "not a vmr export" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_export_faiss_index(runs, tmp_path):
    faiss = pytest.importorskip("faiss")
    from vmr.serve.export import load_export

    out = tmp_path / "ann"
    code, _, err = run_cli("export", "--run", str(runs["sasrec"]), "--out", str(out),
                           "--index", "faiss")
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["index"] == "faiss-hnsw"
    assert faiss.read_index(str(out / "index.faiss")).ntotal == len(ITEMS)
    exp = load_export(out)
    q = exp.user_vectors([["i01", "i02"], ["7"], ["x-1", "i20"]])
    approx, _ = exp.search(q, 5)
    exact, _ = exp.search(q, 5, exact=True)
    assert np.array_equal(approx, exact)  # tiny catalogue: HNSW is exact here


def test_export_faiss_missing_is_a_clear_error(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    code, _, err = run_cli("export", "--run", str(runs["pop"]), "--out",
                           str(tmp_path / "x"), "--index", "faiss")
    assert code == 1 and "pip install 'vmr[ann]'" in err
    assert not (tmp_path / "x").exists()
