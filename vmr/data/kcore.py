"""k-core filtering of an interaction log: keep only users and items with at least k
interactions, repeating until nothing changes. The fixpoint is the largest sub-log in which every
user and every item has >= k interactions (any such sub-log survives every round)."""

from __future__ import annotations

import numpy as np


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask over interactions (rows) that survive the k-core filter.

    `users` and `items` are integer codes (0..n-1), one per interaction; repeated (user, item)
    pairs count once per row."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape:
        raise ValueError("users and items must have the same length")
    keep = np.ones(len(users), dtype=bool)
    if k <= 1 or len(users) == 0:
        return keep
    n_users = int(users.max()) + 1
    n_items = int(items.max()) + 1
    n_kept = len(users)
    while True:
        u_cnt = np.bincount(users[keep], minlength=n_users)
        i_cnt = np.bincount(items[keep], minlength=n_items)
        keep &= (u_cnt[users] >= k) & (i_cnt[items] >= k)
        n_new = int(keep.sum())
        if n_new == n_kept:
            return keep
        n_kept = n_new
