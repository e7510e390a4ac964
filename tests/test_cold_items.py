"""The strict new-item protocol (`vmr prepare --new-items`) and the metrics per group of targets
(frequency buckets, new vs seen) that every `vmr eval` writes."""

import json
import re

import numpy as np
import polars as pl
import pytest
import torch

from helpers import cli_one_line, run_cli
from helpers.synth import make_dataset
from vmr.data import splits
from vmr.data.dataset import load_dataset
from vmr.errors import VmrError
from vmr.evaluate import buckets
from vmr.evaluate.metrics import evaluate_model, metrics_from_ranks


@pytest.fixture(scope="module")
def new_ds(tmp_path_factory):
    """The synthetic planted dataset, prepared again with a quarter of its items new."""
    root = tmp_path_factory.mktemp("newitems")
    make_dataset(root, n_users=120, length=8)
    out = root / "dsn"
    code, _, err = run_cli("prepare", "--interactions", root / "seq.txt", "--format", "sequences",
                           "--kcore", "1", "--new-items", "0.25", "--new-items-seed", "3",
                           "--out", out)
    assert code == 0, err
    code, _, err = run_cli("import-features", "--data", out, "--modality", "text", "--features",
                           root / "feat.npy", "--ids", root / "ids.txt", "--dtype", "float32")
    assert code == 0, err
    return out


def test_pick_new_items_is_reproducible_and_independent_of_order():
    ids = [f"item-{k}" for k in range(200)]
    a = splits.pick_new_items(ids, 0.1, seed=5)
    assert len(a) == 20 and a == [i for i in ids if i in set(a)]      # catalogue order
    assert a == splits.pick_new_items(ids, 0.1, seed=5)
    shuffled = list(reversed(ids))
    assert set(splits.pick_new_items(shuffled, 0.1, seed=5)) == set(a)
    assert set(splits.pick_new_items(ids, 0.1, seed=6)) != set(a)
    assert splits.pick_new_items(ids, 0.0) == []


def test_train_prefixes_leave_new_items_out_and_keep_targets():
    seqs = [np.array([0, 1, 2, 3, 4]), np.array([2, 5]), np.array([1])]
    assert [p.tolist() for p in splits.train_prefixes(seqs)] == [[0, 1, 2], [2], [1]]
    assert [p.tolist() for p in splits.train_prefixes(seqs, [2, 1])] == [[0], [], []]
    # validation and test targets and histories are untouched: new items are evaluated
    h, t, _ = splits.target_pairs(seqs, "test")
    assert t.tolist() == [4, 5] and h[0].tolist() == [0, 1, 2, 3]
    labels = splits.split_labels([0] * 5 + [1] * 2 + [2],
                                 new_rows=[0, 1, 1, 0, 1, 1, 0, 1])
    assert labels.tolist() == ["train", "excluded", "excluded", "valid", "test",
                               "excluded", "test", "excluded"]


def test_no_new_item_reaches_a_training_batch(new_ds):
    from vmr.model.config import load_config
    from vmr.model.objectives import Causal, Masked, mask_for_prediction
    from vmr.train.batches import window_rows
    from vmr.train.data import load_train_data

    meta = json.loads((new_ds / "dataset.json").read_text())
    ds = load_dataset(new_ds)
    assert ds.new_items == meta["new_items"]["items"] and len(ds.new_items) == 10
    new = set(ds.new_item_indices().tolist())
    assert {ds.item_ids[i] for i in new} == set(ds.new_items)
    # without the protocol the training prefixes would hold new items: the check is not vacuous
    raw = np.concatenate(splits.train_prefixes(ds.sequences))
    assert new & set(raw.tolist())
    data = load_train_data(new_ds, None, load_config())
    assert set(data.new_items.tolist()) == new
    for width, min_len in (Causal().window(50), Masked().window(50)):
        rows = window_rows(data.prefixes, width, min_len)
        assert len(rows) and not new & set(rows[rows >= 0].tolist())
    inp, _, tgt = mask_for_prediction(window_rows(data.prefixes, 50, 1), 0.2, ds.n_items,
                                      torch.Generator().manual_seed(0))
    assert not new & set(tgt[tgt >= 0].tolist())
    # while they are evaluated: valid and test targets include new items
    for split in ("valid", "test"):
        targets = [t for _, t in ds.split_sequences(split)]
        assert new & set(targets)
    # prepare's split column marks their training rows, and dataset.json counts them
    labels = pl.read_parquet(new_ds / "interactions.parquet")
    excluded = labels.filter(pl.col("split") == "excluded")
    assert excluded.height == meta["splits"]["excluded"] > 0
    assert set(excluded["item"].to_list()) <= set(ds.new_items)
    assert not set(labels.filter(pl.col("split") == "train")["item"].to_list()) & set(ds.new_items)


def test_popularity_never_counts_a_new_item(new_ds, tmp_path):
    from vmr.model.rundir import read_checkpoint

    code, _, err = run_cli("train", "--data", new_ds, "--set", "model.kind=pop", "--out",
                           tmp_path / "pop")
    assert code == 0, err
    pop = read_checkpoint(tmp_path / "pop" / "best.pt")["model"]["popularity"]
    ds = load_dataset(new_ds)
    idx = ds.new_item_indices()
    raw = np.bincount(np.concatenate(splits.train_prefixes(ds.sequences)), minlength=ds.n_items)
    assert (raw[idx] > 0).any() and torch.all(pop[idx] == 0)     # they had training rows
    seen = np.delete(np.arange(ds.n_items), idx)
    assert torch.allclose(pop[seen], torch.from_numpy(np.log1p(raw[seen])).float())


def test_new_items_errors(new_ds, tmp_path):
    seq = new_ds.parent / "seq.txt"
    line = cli_one_line("prepare", "--interactions", seq, "--format", "sequences", "--kcore", "1",
                        "--new-items", "1.5", "--out", tmp_path / "x")
    assert "--new-items" in line and "1.5" in line
    line = cli_one_line("prepare", "--interactions", seq, "--format", "sequences", "--kcore", "1",
                        "--new-items", "0.001", "--out", tmp_path / "y")
    assert "--new-items 0.001 marks no item" in line
    # a dataset.json naming a new item the catalogue lacks
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("items.parquet", "interactions.parquet"):
        (bad / name).write_bytes((new_ds / name).read_bytes())
    meta = json.loads((new_ds / "dataset.json").read_text())
    meta["new_items"]["items"].append("no-such-item")
    (bad / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(VmrError, match="new item 'no-such-item' is not in items.parquet"):
        load_dataset(bad)


def test_bucket_names_and_edges():
    assert buckets.bucket_names([1, 5, 20]) == ["0", "1-4", "5-19", "20+"]
    assert buckets.bucket_names([2, 3]) == ["0-1", "2", "3+"]
    assert buckets.bucket_of([0, 1, 4, 5, 19, 20, 100], [1, 5, 20]).tolist() == [0, 1, 1, 2, 2, 3, 3]
    for bad in ([], [0, 5], [5, 5], [5, 1]):
        with pytest.raises(VmrError, match="--freq-edges"):
            buckets.check_edges(bad)


def test_eval_reports_buckets_that_match_the_ranks(new_ds, tmp_path):
    """Every target lands in one bucket; each bucket's metrics are those of its targets' ranks,
    with the frequency counted by hand from the training prefixes (new items left out)."""
    from vmr.model.loaded import load_run

    run = tmp_path / "sas"
    code, _, err = run_cli("train", "--data", new_ds, "--set", "model.kind=sasrec", "--set",
                           "train.epochs=1", "--set", "model.d_model=16", "--set",
                           "train.device=cpu", "--out", run)
    assert code == 0, err
    code, out, err = run_cli("eval", "--run", run, "--k", "5", "10", "--freq-edges", "2", "10")
    assert code == 0, err
    m = json.loads((run / "metrics_test.json").read_text())
    b = m["buckets"]
    assert b["edges"] == [2, 10] and list(b["frequency"]) == ["0-1", "2-9", "10+"]
    assert sum(g["users"] for g in b["frequency"].values()) == m["users"]
    assert b["new_items"]["new"]["users"] + b["new_items"]["seen"]["users"] == m["users"]
    assert m["protocol"]["new_items"] == 10
    assert "NDCG@10 by target item" in out and "new items" in out and "seen items" in out
    g = b["frequency"]["0-1"]
    assert re.search(rf"^  0-1 +{g['NDCG@10']:.4f}  \({g['users']} users\)$", out, re.M)

    loaded = load_run(run)
    ds = loaded.dataset
    new = set(ds.new_item_indices().tolist())
    counts = {}
    for s in ds.sequences:
        for it in s[: splits.n_train(len(s))].tolist():
            if it not in new:
                counts[it] = counts.get(it, 0) + 1
    pairs = ds.split_sequences("test")
    res = evaluate_model(loaded, [h for h, _ in pairs], [t for _, t in pairs], [5, 10],
                         return_ranks=True)
    ranks = res["ranks"].numpy()
    tc = np.array([counts.get(t, 0) for _, t in pairs])
    tn = np.array([t in new for _, t in pairs])
    for name, sel in (("0-1", tc < 2), ("2-9", (tc >= 2) & (tc < 10)), ("10+", tc >= 10)):
        got = b["frequency"][name]
        assert got["users"] == int(sel.sum())
        if sel.any():
            want = metrics_from_ranks(ranks[sel], [5, 10])
            assert all(abs(got[k] - v) < 1e-12 for k, v in want.items())
    assert tn.any() and (tc[tn] == 0).all()          # a new item was never trained on
    want = metrics_from_ranks(ranks[tn], [5, 10])
    assert abs(b["new_items"]["new"]["NDCG@10"] - want["NDCG@10"]) < 1e-12


def _run(root, name, seed, buckets_obj, note=True):
    run = root / name
    run.mkdir()
    (run / "config.toml").write_text(f'[model]\nkind = "vmr"\n\n[train]\nseed = {seed}\n')
    (run / "run.json").write_text(json.dumps({"model": "vmr", "data": "/d", "modalities": [],
                                              "label": name.split("-")[0]}))
    m = {"HR@10": 0.2, "NDCG@10": 0.1, "MRR": 0.05, "users": 10, "items": 9,
         "buckets": buckets_obj, "protocol": {"split": "test", "include_history": False}}
    if note:
        m["note"] = "a non-numeric entry a later vmr may write"
    (run / "metrics_test.json").write_text(json.dumps(m))
    return run


def test_report_shows_buckets_as_table_and_chart(tmp_path):
    from vmr.evaluate.report import write_report

    def b(v0, vnew):
        return {"edges": [1, 5, 20],
                "frequency": {"0": {"users": 4, "NDCG@10": v0}, "1-4": {"users": 0},
                              "5-19": {"users": 6, "NDCG@10": 0.3}, "20+": {"users": 0}},
                "new_items": {"new": {"users": 4, "NDCG@10": vnew},
                              "seen": {"users": 6, "NDCG@10": 0.3}}}
    runs = [_run(tmp_path, "vmr-1", 1, b(0.1, 0.2)), _run(tmp_path, "vmr-2", 2, b(0.3, 0.4)),
            _run(tmp_path, "sasrec-1", 1, b(0.0, 0.0), note=False)]
    text = write_report([str(r) for r in runs], out=str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## By target item" in md and (tmp_path / "rep" / "report_buckets.png").stat().st_size
    header = next(ln for ln in md.splitlines() if ln.startswith("| NDCG@10 by target"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[1:] == ["0", "1-4", "5-19", "20+", "new items", "seen items"]
    section = md.split("## By target item")[1]
    row = next(ln for ln in section.splitlines() if ln.startswith("| vmr |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "0.2000 ± 0.1414 (n=4)" and cells[2] == "–"
    assert cells[5] == "0.3000 ± 0.1414 (n=4)"
    assert "note" not in md and "report_buckets.png" in text


def test_new_item_gain_is_chosen_on_validation_and_applied(new_ds, tmp_path, monkeypatch):
    """`vmr train` on a dataset with new items picks the new-item gain on validation (the best
    NDCG@10 over the grid) and records it; evaluation scales exactly the new items' candidate
    vectors by it, never their vectors as history inputs."""
    from vmr.evaluate.new_item_gain import GAINS, choose_new_item_gain
    from vmr.model.loaded import load_run

    run = tmp_path / "full"
    code, out, err = run_cli("train", "--data", new_ds, "--set", "train.epochs=2", "--set",
                             "model.d_model=16", "--set", "train.device=cpu", "--out", run)
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    g, curve = info["new_item_gain"], info["new_item_gain_valid"]
    assert g in GAINS and list(curve) == [f"{x:g}" for x in GAINS]
    assert curve[f"{g:g}"] == max(curve.values()) and f"new-item gain {g:g}" in out
    loaded = load_run(run)
    from vmr.evaluate.run_eval import split_targets
    from vmr.model.towers import TowerView

    calls = []
    real = TowerView.user_vectors
    monkeypatch.setattr(TowerView, "user_vectors",
                        lambda self, h: calls.append(len(h)) or real(self, h))
    again, scores = choose_new_item_gain(loaded)             # deterministic: the same choice
    monkeypatch.undo()
    assert again == g and all(abs(scores[x] - curve[f"{x:g}"]) < 1e-9 for x in GAINS)
    assert len(calls) == 1                                   # user vectors once, not per gain
    hist, tgt = split_targets(loaded.dataset, "valid")
    for x in (1.0, 1.25, 1.5):                               # = a fresh evaluation at that gain
        fresh = TowerView(loaded.model, loaded.device, loaded.config.train.amp, new_item_gain=x)
        assert abs(evaluate_model(fresh, hist, tgt, [10])["NDCG@10"] - scores[x]) < 1e-6
    with pytest.raises(ValueError, match="user vectors"):
        evaluate_model(fresh, hist, tgt, [10], users=torch.zeros(len(hist) - 1, 16))

    # the candidates: new rows scaled by the gain, the others untouched; the inputs: untouched
    info["new_item_gain"] = 1.4
    (run / "run.json").write_text(json.dumps(info))
    loaded = load_run(run)
    new = torch.as_tensor(loaded.dataset.new_item_indices())
    seen = torch.ones(loaded.dataset.n_items, dtype=torch.bool)
    seen[new] = False
    raw, cand = loaded.tower.input_table(), loaded.item_embeddings()
    d = loaded.model.cfg.d_model         # the model's own columns; beyond: the similarity term's
    assert torch.equal(cand[seen], raw[seen]) and torch.allclose(cand[new, :d], 1.4 * raw[new, :d])
    assert torch.equal(cand[new, d:], raw[new, d:])
    from vmr.model.towers import TowerView

    plain = TowerView(loaded.model, loaded.device, loaded.config.train.amp, new_item_gain=1.0)
    hist = [np.asarray(h[0], dtype=np.int64) for h in loaded.dataset.split_sequences("test")[:8]]
    assert any(np.isin(h, new.numpy()).any() for h in hist)       # new items in the histories
    assert torch.equal(loaded.user_vectors(hist), plain.user_vectors(hist))
    info["new_item_gain"] = "big"
    (run / "run.json").write_text(json.dumps(info))
    line = cli_one_line("eval", "--run", run)
    assert "new_item_gain must be a positive number" in line and "run.json" in line


def test_items_without_training_interactions_are_scored_from_content(tmp_path):
    """Whatever the split, an item that occurs in no training prefix has no trained ID: the
    default model scores it from content (marked unknown); untrained_ids = own keeps its row."""
    import numpy as np

    from helpers import run_cli
    from helpers.synth import make_dataset
    from vmr.data import splits
    from vmr.data.dataset import load_dataset
    from vmr.model.loaded import load_run

    seqs = [np.array([0, 1, 2, 3]), np.array([1, 2, 4]), np.array([0, 5])]
    # training prefixes: [0, 1], [1], [0]: items 2..5 occur only as valid/test targets
    assert splits.untrained_items(seqs, 7).tolist() == [2, 3, 4, 5, 6]
    assert splits.untrained_items(seqs, 7, new_items=[1]).tolist() == [1, 2, 3, 4, 5, 6]
    ds = make_dataset(tmp_path / "d", n_users=40, length=5)
    dataset = load_dataset(ds)
    untrained = dataset.untrained_item_indices()
    assert len(untrained) > 0            # short histories leave some items target-only
    runs = {}
    for mode in ("unknown", "own"):
        runs[mode] = tmp_path / mode
        code, _, err = run_cli("train", "--data", ds, "--out", runs[mode], "--set",
                               "model.d_model=16", "--set", "train.epochs=1", "--set",
                               f"model.untrained_ids={mode}")
        assert code == 0, err
    marked = load_run(runs["unknown"]).model.items.unknown
    assert marked.nonzero().flatten().tolist() == untrained.tolist()
    assert not load_run(runs["own"]).model.items.unknown.any()
