"""k-core filter: every survivor meets the bar, and nothing that could survive was dropped."""

from itertools import combinations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vmr.data.kcore import kcore_mask


def logs(max_users=8, max_items=8, max_rows=60):
    """Interaction logs as (users, items) integer code arrays (duplicates allowed)."""
    row = st.tuples(st.integers(0, max_users - 1), st.integers(0, max_items - 1))
    return st.lists(row, min_size=0, max_size=max_rows).map(
        lambda rows: (np.array([r[0] for r in rows], dtype=np.int64),
                      np.array([r[1] for r in rows], dtype=np.int64)))


def reference_kcore(users, items, k, order_seed):
    """Remove one under-supported interaction at a time, in a shuffled order, until stable."""
    rng = np.random.default_rng(order_seed)
    alive = set(range(len(users)))
    changed = True
    while changed:
        changed = False
        for r in rng.permutation(sorted(alive)).tolist():
            u_cnt = sum(1 for j in alive if users[j] == users[r])
            i_cnt = sum(1 for j in alive if items[j] == items[r])
            if u_cnt < k or i_cnt < k:
                alive.discard(r)
                changed = True
    return np.array([r in alive for r in range(len(users))], dtype=bool)


def is_valid(users, items, rows, k):
    rows = list(rows)
    for arr in (users, items):
        vals, counts = np.unique(arr[rows], return_counts=True)
        if len(vals) and counts.min() < k:
            return False
    return True


@settings(max_examples=150, deadline=None)
@given(logs(), st.integers(1, 5))
def test_survivors_meet_the_bar(log, k):
    users, items = log
    keep = kcore_mask(users, items, k)
    assert keep.dtype == bool and keep.shape == users.shape
    if keep.any():
        assert np.bincount(users[keep])[np.unique(users[keep])].min() >= k
        assert np.bincount(items[keep])[np.unique(items[keep])].min() >= k


@settings(max_examples=80, deadline=None)
@given(logs(max_rows=40), st.integers(1, 4), st.integers(0, 1000))
def test_matches_reference_fixpoint(log, k, order_seed):
    users, items = log
    keep = kcore_mask(users, items, k)
    assert np.array_equal(keep, reference_kcore(users, items, k, order_seed))


@settings(max_examples=60, deadline=None)
@given(logs(max_users=4, max_items=4, max_rows=11), st.integers(1, 3))
def test_result_is_the_largest_valid_sublog(log, k):
    """Brute force over all sub-logs: none that meets the bar is larger than the k-core, and
    every one of them lies inside the k-core."""
    users, items = log
    keep = kcore_mask(users, items, k)
    kept = set(np.flatnonzero(keep).tolist())
    assert is_valid(users, items, kept, k)
    n = len(users)
    for size in range(n, len(kept), -1):  # sizes above the k-core's
        for rows in combinations(range(n), size):
            assert not is_valid(users, items, rows, k), (rows, kept)
    for size in range(1, len(kept) + 1):
        for rows in combinations(range(n), size):
            if is_valid(users, items, rows, k):
                assert set(rows) <= kept


def test_cascade_removes_chains():
    # item 9 has one interaction: dropping it leaves user 0 with 1 row, which drops item 0's
    # support below 2, and so on.
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([9, 0, 0, 1, 1, 2, 2, 3])
    assert not kcore_mask(users, items, 2).any()
    assert kcore_mask(users, items, 1).all()


def test_k_one_and_empty():
    assert kcore_mask(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 5).shape == (0,)
    assert kcore_mask(np.array([3]), np.array([7]), 1).all()
