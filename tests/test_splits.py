"""One leave-one-out rule: prepare's `split` column, the Dataset API, the trainer's validation
pairs and `vmr eval`'s targets are the same users, histories and targets on any data."""

import json

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from vmr.data import splits
from vmr.data.dataset import load_dataset
from vmr.data.prepare import PrepareOptions, prepare_dataset
from vmr.evaluate.run_eval import split_targets
from vmr.model.config import load_config
from vmr.train.data import TrainData


def _views(ds):
    """Every consumer's view of the valid and test pairs, as comparable lists."""
    out = {}
    train = TrainData(ds.item_ids, [np.asarray(s) for s in ds.sequences], {}, {}, {})
    for split in ("valid", "test"):
        h, t, rows = splits.target_pairs(train.sequences, split)            # the trainer
        trainer = [(r, tuple(x), int(y)) for r, x, y in zip(rows.tolist(), h, t.tolist())]
        api = [(int(u), tuple(x), y) for u, (x, y) in
               zip(ds.split_users(split), ds.split_sequences(split))]        # the Dataset API
        eh, et = split_targets(ds, split) if trainer else ([], [])           # vmr eval
        ev = [(r, tuple(x), y) for r, x, y in zip(rows.tolist(), eh, et)]
        out[split] = (trainer, api, ev)
    out["train"] = ([tuple(p) for p in train.prefixes],
                    [tuple(p) for p in ds.split_sequences("train")])
    return out


def _check(ds_dir):
    ds = load_dataset(ds_dir)
    v = _views(ds)
    for split in ("valid", "test"):
        trainer, api, ev = v[split]
        assert trainer == api == ev, split
    assert v["train"][0] == v["train"][1]
    # prepare's split column says the same, row by row
    inter = pl.read_parquet(ds_dir / "interactions.parquet")
    labels = inter["split"].to_list()
    pos = 0
    for u, s in enumerate(ds.sequences):
        mine = labels[pos: pos + len(s)]
        pos += len(s)
        n_tr = splits.n_train(len(s))
        assert mine[:n_tr] == ["train"] * n_tr
        if splits.has_target(len(s), "valid"):
            assert mine[-2] == "valid"
        if splits.has_target(len(s), "test"):
            assert mine[-1] == "test"
    return v


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=8))
def test_every_consumer_uses_the_same_rule(tmp_path_factory, lengths):
    root = tmp_path_factory.mktemp("sp")
    lines = [f"u{u} " + " ".join(f"i{(u * 3 + k) % 5}" for k in range(n))
             for u, n in enumerate(lengths)]
    (root / "seq.txt").write_text("\n".join(lines) + "\n")
    prepare_dataset(PrepareOptions(interactions=str(root / "seq.txt"), out=str(root / "ds"),
                                   fmt="sequences", kcore=1))
    v = _check(root / "ds")
    assert len(v["valid"][0]) == sum(n >= 3 for n in lengths)
    assert len(v["test"][0]) == sum(n >= 2 for n in lengths)


def test_a_hand_written_dataset_follows_the_rule_not_its_split_column(tmp_path):
    """A dataset directory whose `split` column says something else (the tests' extraction
    fixture marks every row 'train') is still split by the rule, everywhere."""
    root = tmp_path / "ds"
    root.mkdir()
    ids = ["a", "b", "c", "d"]
    pl.DataFrame({"item": ids}).write_parquet(root / "items.parquet")
    users = [f"u{k}" for k in range(3) for _ in ids]
    pl.DataFrame({"user": users, "item": ids * 3, "time": [float(t) for t in range(12)],
                  "split": ["train"] * 12}).write_parquet(root / "interactions.parquet")
    (root / "dataset.json").write_text(json.dumps({"format": 1, "users": 3, "items": 4,
                                                   "interactions": 12}))
    ds = load_dataset(root)
    v = _views(ds)
    assert len(v["valid"][0]) == len(v["valid"][1]) == len(v["valid"][2]) == 3
    assert v["valid"][0] == v["valid"][1] == v["valid"][2]
    assert load_config().train.seed == 42          # the fixture needs no config, but loads one
