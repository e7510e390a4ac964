"""Turning users' training prefixes (vmr.data.splits) into training tensors: windows and
length-bucketed batches (an objective, vmr/model/objectives.py, makes a batch of windows into
inputs and targets)."""

from __future__ import annotations

import numpy as np
import torch


def window_rows(prefixes: list[np.ndarray], width: int, min_len: int) -> torch.Tensor:
    """Left-padded [R, width] rows (-1 = padding). A prefix longer than `width` is cut into
    windows ending at its end and every `width - 1` items before, so every transition is
    trained on. Prefixes shorter than min_len are skipped."""
    rows = []
    for p in prefixes:
        if len(p) < min_len:
            continue
        end = len(p)
        while True:
            start = max(0, end - width)
            rows.append(p[start:end])
            if start == 0:
                break
            end = start + 1             # overlap one item so the transition across the cut is kept
            if end < min_len:
                break
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, width - len(r):] = r
    return torch.from_numpy(out)


def length_bucketed_batches(rows: torch.Tensor, batch_size: int, generator: torch.Generator,
                            pool: int = 50) -> list[torch.Tensor]:
    """Shuffle rows into batches of similar length (so padding is trimmed away): shuffle, cut
    into pools of `pool` batches, sort each pool by length, slice batches, shuffle the batches.
    Deterministic for a given generator state."""
    lengths = (rows >= 0).sum(1)
    perm = torch.randperm(len(rows), generator=generator)
    span = batch_size * pool
    batches = []
    for s in range(0, len(perm), span):
        chunk = perm[s: s + span]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in order]
