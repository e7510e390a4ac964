"""The one leave-one-out rule, used by `vmr prepare`, the Dataset API, the trainer's validation
and `vmr eval` alike (docs/EVALUATION.md).

For a user's time-ordered sequence of n items:
- test target: the last item, for users with n >= 2; its history is every item before it
  (the validation item included);
- valid target: the second-to-last item, for users with n >= 3; its history is every item
  before it;
- training data: the first n - 2 items (n >= 3), the first item (n == 2), all of it (n == 1).

Strict new-item protocol (`vmr prepare --new-items FRACTION`): a reproducible random share of the
catalogue is *new*. Their interactions are removed from every training prefix (so they are never
a training input or target); at validation and test they stay in histories and as targets, and
are ranked among all items like any other (docs/EVALUATION.md).
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "valid", "test")


def n_train(length: int) -> int:
    """How many leading items of a sequence of this length are training data."""
    if length >= 3:
        return length - 2
    if length == 2:
        return 1
    return length


def has_target(length: int, split: str) -> bool:
    """Whether a sequence of this length has a `split` ('valid' or 'test') target."""
    return length >= (3 if split == "valid" else 2)


def train_prefixes(sequences, new_items=None) -> list[np.ndarray]:
    """Every user's training prefix, in user order; with `new_items` (item indices) those items'
    interactions are removed from it (the strict new-item protocol)."""
    prefixes = [s[: n_train(len(s))] for s in sequences]
    if new_items is None or len(new_items) == 0:
        return prefixes
    new = np.asarray(new_items, dtype=np.int64)
    return [p[~np.isin(p, new)] for p in prefixes]


def untrained_items(sequences, n_items: int, new_items=None) -> np.ndarray:
    """Item indices (ascending) that occur in no training prefix, the new items included: their
    ID embedding is never trained, whatever the split."""
    seen = np.zeros(n_items, dtype=bool)
    for p in train_prefixes(sequences, new_items):
        seen[p] = True
    return np.flatnonzero(~seen).astype(np.int64)


def pick_new_items(item_ids: list[str], fraction: float, seed: int = 0) -> list[str]:
    """The ids of round(fraction * len(item_ids)) items drawn at random, reproducibly: items are
    ordered by sha256(seed, id), so the draw depends on the seed and the ids alone, not on the
    catalogue's order. Returned in catalogue order."""
    import hashlib

    k = int(round(fraction * len(item_ids)))
    if k <= 0:
        return []

    def key(it: str) -> str:
        return hashlib.sha256(f"{seed}\0{it}".encode("utf-8")).hexdigest()

    chosen = set(sorted(item_ids, key=key)[:k])
    return [it for it in item_ids if it in chosen]


def target_pairs(sequences, split: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(histories, targets, user rows) of every user with a `split` ('valid' or 'test') target,
    in user order."""
    if split not in ("valid", "test"):
        raise ValueError(f"target_pairs: split must be 'valid' or 'test', got {split!r}")
    back = 2 if split == "valid" else 1
    hist, tgt, rows = [], [], []
    for u, s in enumerate(sequences):
        if has_target(len(s), split):
            hist.append(s[:-back])
            tgt.append(s[-back])
            rows.append(u)
    return hist, np.asarray(tgt, dtype=np.int64), np.asarray(rows, dtype=np.int64)


def split_labels(user_codes_sorted, new_rows=None) -> np.ndarray:
    """Per interaction row ('train' | 'valid' | 'test'), for rows grouped by user in time order:
    the same rule as above, written into interactions.parquet's `split` column. new_rows (bool per
    row: the row's item is new) marks training rows of new items 'excluded'."""
    u = np.asarray(user_codes_sorted)
    n = len(u)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if n else np.zeros(0, dtype=np.int64)
    lengths = np.diff(np.r_[starts, n])
    from_end = np.repeat(starts + lengths, lengths) - 1 - np.arange(n)  # 0 = the user's last row
    size = np.repeat(lengths, lengths)
    labels = np.full(n, "train", dtype=object)
    labels[(from_end == 0) & (size >= 2)] = "test"
    labels[(from_end == 1) & (size >= 3)] = "valid"
    if new_rows is not None:
        labels[(labels == "train") & np.asarray(new_rows, dtype=bool)] = "excluded"
    return labels
