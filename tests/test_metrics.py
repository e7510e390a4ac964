"""Ranks (ties against the target, history exclusion), HR/NDCG/MRR, and the chunked driver."""

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vmr.evaluate.metrics import batch_ranks, evaluate_model, metrics_from_ranks, ranks_from_scores


# ----------------------------------------------------------------------- an independent reference
def brute_rank(scores: list[float], target: int, excluded: set[int]) -> int:
    """Plain-Python rank: 1 + items (not excluded, not the target) scoring >= the target."""
    return 1 + sum(1 for j, s in enumerate(scores)
                   if j != target and j not in excluded and s >= scores[target])


class StubModel:
    """Dual tower with fixed vectors. evaluate_model asks for user vectors batch by batch, in
    order, after one item_embeddings() call; the stub hands out its rows in that order and checks
    that each batch's histories are the ones it expects."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, histories):
        self.users, self.items, self.histories = users, items, histories
        self.pos = 0
        self.calls = 0

    def item_embeddings(self) -> torch.Tensor:
        self.pos = 0
        return self.items

    def user_vectors(self, histories) -> torch.Tensor:
        self.calls += 1
        for h, want in zip(histories, self.histories[self.pos:]):
            assert np.array_equal(h, want) and h.dtype == np.int64
        out = self.users[self.pos:self.pos + len(histories)]
        self.pos += len(histories)
        return out


def make_stub(users, items, histories):
    return StubModel(users, items, histories)


# ------------------------------------------------------------------------------ hand-made examples
def test_rank_simple_no_ties():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
    assert ranks_from_scores(scores, torch.tensor([2])).tolist() == [2]
    assert ranks_from_scores(scores, torch.tensor([1])).tolist() == [1]
    assert ranks_from_scores(scores, torch.tensor([0])).tolist() == [4]


def test_tied_target_ranks_below_its_ties():
    # Target 1 ties with items 0 and 3 and is beaten by item 2: three items score >= it.
    scores = torch.tensor([[5.0, 5.0, 7.0, 5.0, 1.0]])
    assert ranks_from_scores(scores, torch.tensor([1])).tolist() == [4]
    # All-equal scores (e.g. an untrained model): the target is last, not first.
    flat = torch.zeros(2, 100)
    assert ranks_from_scores(flat, torch.tensor([0, 57])).tolist() == [100, 100]


def test_exclusion_skips_history_but_never_the_target():
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0]])
    exclude = torch.tensor([[True, True, True, False]])  # target 2 is "in the history" too
    assert ranks_from_scores(scores, torch.tensor([2]), exclude).tolist() == [1]
    assert ranks_from_scores(scores, torch.tensor([3]), exclude).tolist() == [1]
    assert ranks_from_scores(scores, torch.tensor([2]), None).tolist() == [3]


def test_nan_scores_rank_last_and_input_untouched():
    scores = torch.tensor([[1.0, math.nan, 3.0], [math.nan, 1.0, 2.0]])
    before = scores.clone()
    # a NaN competitor never beats the target; a NaN target ranks behind everything
    assert ranks_from_scores(scores, torch.tensor([0, 0])).tolist() == [2, 3]
    assert torch.equal(torch.isnan(scores), torch.isnan(before))
    assert torch.equal(torch.nan_to_num(scores), torch.nan_to_num(before))


def test_metrics_from_ranks_formulas():
    ranks = torch.tensor([1, 3, 6, 11])
    m = metrics_from_ranks(ranks, [5, 10])
    assert list(m) == ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR"]
    assert m["HR@5"] == pytest.approx(2 / 4)
    assert m["HR@10"] == pytest.approx(3 / 4)
    assert m["NDCG@5"] == pytest.approx((1 / math.log2(2) + 1 / math.log2(4)) / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(7)) / 4)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 6 + 1 / 11) / 4)
    assert metrics_from_ranks([1, 1], [1]) == {"HR@1": 1.0, "NDCG@1": 1.0, "MRR": 1.0}


def test_evaluate_model_hand_example():
    items = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])  # score = u * item value
    users = torch.tensor([[1.0], [-1.0]])
    histories = [np.array([4, 3]), np.array([0])]
    targets = [2, 1]
    model = make_stub(users, items, histories)
    # user 0: history {4,3} excluded -> 2 is first; user 1: scores -1..-5, 0 excluded -> 1 first
    out = evaluate_model(model, histories, targets, [1, 2])
    assert out["HR@1"] == 1.0 and out["users"] == 2 and out["items"] == 5
    out = evaluate_model(model, histories, targets, [1, 2], include_history=True)
    assert out["HR@1"] == 0.0 and out["HR@2"] == 0.5  # ranks 3 and 2
    assert out["MRR"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_evaluate_model_target_in_history_is_not_excluded():
    items = torch.tensor([[1.0], [2.0], [3.0]])
    model = make_stub(torch.tensor([[1.0]]), items, [np.array([2, 1])])
    out = evaluate_model(model, [np.array([2, 1])], [2], [1], return_ranks=True)
    assert out["ranks"].tolist() == [1]


def test_evaluate_model_rejects_nan_embeddings():
    from vmr.errors import VmrError

    items = torch.tensor([[1.0], [math.nan]])
    model = make_stub(torch.tensor([[1.0]]), items, [np.array([0])])
    with pytest.raises(VmrError, match="NaN"):
        evaluate_model(model, [np.array([0])], [1], [1])


# ----------------------------------------------------------------------------------- properties
@st.composite
def ranking_problem(draw):
    n_users = draw(st.integers(1, 7))
    n_items = draw(st.integers(2, 12))
    d = draw(st.integers(1, 3))
    # small integer vectors: many exact ties, and float products stay exact
    ints = st.integers(-2, 2)
    vec = st.lists(ints, min_size=d, max_size=d)
    users = draw(st.lists(vec, min_size=n_users, max_size=n_users))
    items = draw(st.lists(vec, min_size=n_items, max_size=n_items))
    histories = [draw(st.lists(st.integers(0, n_items - 1), max_size=6)) for _ in range(n_users)]
    targets = [draw(st.integers(0, n_items - 1)) for _ in range(n_users)]
    chunk = draw(st.integers(1, n_items + 1))
    batch = draw(st.integers(1, n_users + 1))
    return users, items, histories, targets, chunk, batch


@settings(max_examples=200, deadline=None)
@given(ranking_problem())
def test_ranks_match_brute_force(problem):
    users, items, histories, targets, chunk, _ = problem
    U = torch.tensor(users, dtype=torch.float32)
    V = torch.tensor(items, dtype=torch.float32)
    scores = U @ V.T
    exclude = torch.zeros(scores.shape, dtype=torch.bool)
    for b, h in enumerate(histories):
        exclude[b, h] = True
    want = [brute_rank(scores[b].tolist(), t, set(h)) for b, (h, t) in
            enumerate(zip(histories, targets))]
    want_all = [brute_rank(scores[b].tolist(), t, set()) for b, t in enumerate(targets)]
    t = torch.tensor(targets)
    assert ranks_from_scores(scores, t, exclude).tolist() == want
    assert ranks_from_scores(scores, t).tolist() == want_all
    hists = [np.array(h, dtype=np.int64) for h in histories]
    assert batch_ranks(U, V, t, hists, item_chunk=chunk).tolist() == want
    assert batch_ranks(U, V, t, None, item_chunk=chunk).tolist() == want_all


@settings(max_examples=60, deadline=None)
@given(ranking_problem())
def test_evaluate_model_matches_brute_force(problem):
    users, items, histories, targets, chunk, batch = problem
    U = torch.tensor(users, dtype=torch.float32)
    V = torch.tensor(items, dtype=torch.float32)
    hists = [np.array(h, dtype=np.int64) for h in histories]
    model = make_stub(U, V, hists)
    scores = (U @ V.T).tolist()
    ranks = [brute_rank(scores[b], t, set(h)) for b, (h, t) in enumerate(zip(histories, targets))]
    got = evaluate_model(model, hists, targets, [1, 3], user_batch=batch, item_chunk=chunk,
                         return_ranks=True)
    assert got["ranks"].tolist() == ranks
    # user vectors fetched in blocks of several batches (block not a multiple of the batch)
    blocked = evaluate_model(model, hists, targets, [1, 3], user_batch=batch, item_chunk=chunk,
                             user_block=batch + 1, return_ranks=True)
    assert blocked["ranks"].tolist() == ranks
    assert got["HR@3"] == pytest.approx(np.mean([r <= 3 for r in ranks]))
    assert got["MRR"] == pytest.approx(np.mean([1 / r for r in ranks]))


def test_chunked_equals_unchunked_random_floats():
    g = torch.Generator().manual_seed(1)
    n_users, n_items, d = 300, 1000, 16
    U = torch.randn(n_users, d, generator=g)
    V = torch.randn(n_items, d, generator=g)
    V[500:520] = V[10]  # duplicated items: exact ties that must survive chunking
    rng = np.random.default_rng(1)
    hists = [rng.choice(n_items, size=rng.integers(1, 30), replace=False) for _ in range(n_users)]
    targets = np.array([10 if u % 3 == 0 else rng.integers(n_items) for u in range(n_users)])
    model = make_stub(U, V, hists)
    full = evaluate_model(model, hists, targets, [5, 10, 50], return_ranks=True)
    for chunk, batch in [(1, 300), (97, 150), (333, 100), (999, 1000)]:
        part = evaluate_model(model, hists, targets, [5, 10, 50], user_batch=batch,
                              item_chunk=chunk, return_ranks=True)
        assert torch.equal(part.pop("ranks"), full["ranks"]), (chunk, batch)
        assert part == {k: v for k, v in full.items() if k != "ranks"}
    # users whose target is item 10 rank behind all its 20 exact copies
    dup = full["ranks"][torch.from_numpy(targets == 10)]
    assert (dup >= 21).all()
    assert model.calls > 0


def test_beauty_sized_evaluation_is_fast():
    """22,363 users x 12,101 items, d = 64: about 1 s on 2 idle cores. Timed against the bare
    score matrix products on the same machine, so that a busy machine does not fail the test but
    a slow counting or exclusion step (e.g. summing a bool tensor: ~10x slower) does."""
    g = torch.Generator().manual_seed(0)
    n_users, n_items, d = 22363, 12101, 64
    U = torch.randn(n_users, d, generator=g)
    V = torch.randn(n_items, d, generator=g)
    rng = np.random.default_rng(0)
    hists = [rng.integers(0, n_items, rng.integers(4, 20)) for _ in range(n_users)]
    targets = rng.integers(0, n_items, n_users)
    model = make_stub(U, V, hists)
    model.histories = []  # skip the stub's per-history checks: time evaluate_model only
    t0 = time.perf_counter()
    for s in range(0, n_users, 1024):
        U[s:s + 1024] @ V.T
    matmul = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = evaluate_model(model, hists, targets, [5, 10])
    elapsed = time.perf_counter() - t0
    print(f"beauty-sized evaluation: {elapsed:.2f}s (matrix products alone {matmul:.2f}s)")
    assert out["users"] == n_users and out["items"] == n_items
    assert 0 < out["HR@10"] < 0.01  # random vectors: about 10 / 12101
    assert elapsed < 5 * matmul + 1.5, f"evaluation took {elapsed:.1f}s, matmuls {matmul:.1f}s"
