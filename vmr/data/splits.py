"""The one leave-one-out rule, used by `vmr prepare`, the Dataset API, the trainer's validation
and `vmr eval` alike (docs/EVALUATION.md).

For a user's time-ordered sequence of n items:
- test target: the last item, for users with n >= 2; its history is every item before it
  (the validation item included);
- valid target: the second-to-last item, for users with n >= 3; its history is every item
  before it;
- training data: the first n - 2 items (n >= 3), the first item (n == 2), all of it (n == 1).
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


def train_prefixes(sequences) -> list[np.ndarray]:
    """Every user's training prefix, in user order."""
    return [s[: n_train(len(s))] for s in sequences]


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


def split_labels(user_codes_sorted) -> np.ndarray:
    """Per interaction row ('train' | 'valid' | 'test'), for rows grouped by user in time order:
    the same rule as above, written into interactions.parquet's `split` column."""
    u = np.asarray(user_codes_sorted)
    n = len(u)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if n else np.zeros(0, dtype=np.int64)
    lengths = np.diff(np.r_[starts, n])
    from_end = np.repeat(starts + lengths, lengths) - 1 - np.arange(n)  # 0 = the user's last row
    size = np.repeat(lengths, lengths)
    labels = np.full(n, "train", dtype=object)
    labels[(from_end == 0) & (size >= 2)] = "test"
    labels[(from_end == 1) & (size >= 3)] = "valid"
    return labels
