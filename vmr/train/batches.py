"""Turning users' training prefixes (vmr.data.splits) into training tensors: windows,
length-bucketed batches, and the masked objective's corruption."""

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


def mask_for_prediction(seq: torch.Tensor, rate: float, n_items: int,
                        generator: torch.Generator | None = None):
    """BERT-style corruption for the masked objective (paper 3.2.3).

    seq [B, L] left-padded. Each real position becomes a target with probability `rate`; the last
    position is always a target and always the [mask] item, as at prediction time (the paper:
    the last position is replaced by [mask]). Any other target's input is the [mask] item 80% of
    the time, a random item 10%, unchanged 10%. Returns (inputs, replace_mask, targets) with
    targets -100 elsewhere."""
    real = seq >= 0
    u = torch.rand(seq.shape, generator=generator)
    chosen = (u < rate) & real
    chosen[:, -1] = real[:, -1]
    v = torch.rand(seq.shape, generator=generator)
    to_mask = chosen & (v < 0.8)
    to_rand = chosen & (v >= 0.8) & (v < 0.9)
    to_mask[:, -1] = chosen[:, -1]
    to_rand[:, -1] = False
    rand_items = torch.randint(0, n_items, seq.shape, generator=generator)
    inputs = torch.where(to_rand, rand_items, seq)
    targets = torch.where(chosen, seq, torch.full_like(seq, -100))
    return inputs, to_mask, targets


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
