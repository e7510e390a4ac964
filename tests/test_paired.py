"""Paired comparison over users (vmr/evaluate/paired.py): `vmr eval` writes each user's rank,
`vmr report` sets every group against the first with a bootstrap interval over the users."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from helpers.runs import build_runs
from test_report import make_run, table_rows
from vmr.errors import VmrError
from vmr.evaluate.paired import (bootstrap_ratio, per_user, ranks_path, read_ranks,
                                 write_ranks)
from vmr.evaluate.report import write_report

USERS = [f"u{k:03d}" for k in range(400)] + ["007", "7"]     # opaque ids: both kept apart


def test_per_user_metrics_from_ranks():
    assert per_user([1, 3, 10, 11], "HR@10").tolist() == [1, 1, 1, 0]
    assert np.allclose(per_user([1, 3, 10, 11], "NDCG@10"), [1, 0.5, 1 / np.log2(11), 0])
    assert np.allclose(per_user([1, 4], "MRR"), [1, 0.25])


def test_bootstrap_interval_resolves_a_large_gain_and_not_noise():
    rng = np.random.default_rng(3)
    ref = (rng.random(500) < 0.1).astype(float)
    better = ref.copy()
    better[rng.choice(np.flatnonzero(ref == 0), 40, replace=False)] = 1.0   # +80 % hits
    ratio, lo, hi = bootstrap_ratio(ref, better)
    assert ratio == pytest.approx(better.mean() / ref.mean()) and 1 < lo < ratio < hi
    shuffled = ref[rng.permutation(500)]        # the same rate on other users: noise only
    ratio, lo, hi = bootstrap_ratio(ref, shuffled)
    assert ratio == pytest.approx(1.0) and lo < 1 < hi
    assert bootstrap_ratio(ref, better) == bootstrap_ratio(ref, better)   # a fixed seed
    with pytest.raises(ValueError):
        bootstrap_ratio(ref, better[:-1])


def ranked_run(root: Path, name: str, seed: int, ranks: list[int], **kw) -> Path:
    """A run directory with metrics_test.json and the ranks file that reproduces it."""
    ndcg = float(per_user(ranks, "NDCG@10").mean())
    run = make_run(root, name, seed=seed, ndcg10=ndcg, **kw)
    write_ranks(ranks_path(run / "metrics_test.json"), USERS[:len(ranks)],
                [f"item{k % 7}" for k in range(len(ranks))], ranks)
    return run


def test_ranks_file_round_trip_keeps_string_ids(tmp_path):
    path = tmp_path / "ranks_test.parquet"
    write_ranks(path, ["007", "7"], ["01", "1"], [3, 1])
    assert read_ranks(path) == {"007": ("01", 3), "7": ("1", 1)}
    assert ranks_path(tmp_path / "metrics_valid@sci-0123abcd.json").name == \
        "ranks_valid@sci-0123abcd.parquet"
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(VmrError, match="bad.parquet: unreadable ranks file"):
        read_ranks(tmp_path / "bad.parquet")


def test_report_sets_groups_against_the_first(tmp_path):
    rng = np.random.default_rng(0)
    n = len(USERS)
    base = rng.integers(1, 40, size=n)
    runs = [ranked_run(tmp_path, f"a{s}", s, (base + rng.integers(0, 2, n)).tolist())
            for s in (1, 2)]
    better = np.where(rng.random(n) < 0.5, 1, base)            # half the users hit at rank 1
    runs += [ranked_run(tmp_path, f"b{s}", s, better.tolist(), lr=0.002) for s in (1, 2)]
    same = rng.permutation(base)                                # the same ranks, other users
    runs += [ranked_run(tmp_path, "c1", 1, same.tolist(), lr=0.003)]
    text = write_report([str(r) for r in runs], out=str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Paired against sasrec train.lr=0.001 (the first run named)" in md
    paired = md.split("## Paired against", 1)[1]
    rows = table_rows(paired)
    assert rows["sasrec train.lr=0.002"][2] == "above"
    assert float(rows["sasrec train.lr=0.002"][0]) > 1.5
    assert rows["sasrec train.lr=0.003"][2] == "no: within the users' noise"
    assert "within the users' noise" in text                   # printed as well


def test_report_without_ranks_or_with_a_stale_file_still_writes(tmp_path):
    a = ranked_run(tmp_path, "a1", 1, [1, 2, 30] * 10)
    old = make_run(tmp_path, "old", lr=0.002)                  # evaluated by an older vmr eval
    write_report([str(a), str(old)], out=str(tmp_path / "r1"))
    md = (tmp_path / "r1" / "report.md").read_text()
    assert "Not available: no ranks files for sasrec train.lr=0.002" in md
    stale = ranked_run(tmp_path, "b1", 1, [5, 5, 5] * 10, lr=0.002)
    (stale / "metrics_test.json").write_text(json.dumps({"HR@10": 0.5, "NDCG@10": 0.9,
                                                         "users": 30, "items": 50}))
    write_report([str(a), str(stale)], out=str(tmp_path / "r2"))
    md = (tmp_path / "r2" / "report.md").read_text()
    assert "ranks_test.parquet: does not match its metrics file" in md
    other = ranked_run(tmp_path, "c1", 1, [1, 2] * 10, lr=0.003)   # 20 users, not 30
    write_report([str(a), str(other)], out=str(tmp_path / "r3"))
    assert "was scored on other users or targets" in (tmp_path / "r3" / "report.md").read_text()


def test_vmr_eval_writes_each_users_rank(tmp_path):
    from vmr.data.dataset import load_dataset

    runs = build_runs(tmp_path)
    run = runs["sasrec"]
    code, out, err = run_cli("eval", "--run", str(run))
    assert code == 0, err
    assert "ranks_test.parquet" in out
    ranks = read_ranks(run / "ranks_test.parquet")
    ds = load_dataset(runs["data"])
    pairs = dict(zip((ds.user_ids[int(u)] for u in ds.split_users("test")),
                     (t for _, t in ds.split_sequences("test"))))
    assert set(ranks) == set(pairs) and all(isinstance(u, str) for u in ranks)
    assert all(ranks[u][0] == ds.item_ids[t] for u, t in pairs.items())
    metrics = json.loads((run / "metrics_test.json").read_text())
    got = per_user([r for _, r in ranks.values()], "NDCG@10").mean()
    assert got == pytest.approx(metrics["NDCG@10"], abs=1e-9)


def test_vmr_eval_names_the_file_it_cannot_write(tmp_path):
    """A ranks file that cannot be written is the one the error names (not the metrics file),
    and no metrics file is left without its ranks."""
    runs = build_runs(tmp_path)
    run = runs["sasrec"]
    for f in run.glob("*_test.*"):
        f.unlink()
    (run / "ranks_test.parquet").mkdir()         # in the way, for root as for anyone
    code, out, err = run_cli("eval", "--run", str(run))
    assert code != 0 and "Traceback" not in err
    assert "cannot write" in err and "ranks_test.parquet" in err and "metrics_test" not in err
    assert not (run / "metrics_test.json").exists()
