"""Full-ranking metrics: ranks with ties counted against the target, HR@K / NDCG@K / MRR, and a
chunked driver that ranks every user's target among all items with bounded memory.

Only torch and numpy are imported here: the trainer calls `evaluate_model` every epoch.
See docs/EVALUATION.md for the protocol.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import numpy as np
import torch


class DualTower(Protocol):
    """What `evaluate_model` needs from a model:
    score(u, j) = <user_vectors[u], item_embeddings[j]>."""

    def item_embeddings(self) -> torch.Tensor: ...

    def user_vectors(self, histories: list[np.ndarray]) -> torch.Tensor: ...

    # optional: history_bias() -> [N_BUCKETS] tensor or None, the repeat term added to the
    # scores of history items when they are ranked (vmr/model/history.py); similarity_start()
    # -> int or None, the first column of the last-item similarity term (its share of the last
    # item's own score is taken out when history items are ranked)


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor,
                      exclude: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each row's target among the row's scores.

    rank = 1 + #{j : not exclude[b, j], j != target, score_j >= score_target}: an item tied with the
    target ranks above it, and the target itself is never excluded. NaN scores count as -inf.
    scores [B, N] float, targets [B] long, exclude [B, N] bool or None -> long [B].
    """
    scores = torch.nan_to_num(scores.float(), nan=-math.inf)  # a copy: the caller's stays intact
    targets = targets.to(device=scores.device, dtype=torch.long)
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[rows, targets]
    if exclude is not None:
        scores.masked_fill_(exclude.to(device=scores.device, dtype=torch.bool), math.nan)
    scores[rows, targets] = math.nan
    return _count_at_least(scores, target_scores) + 1


def _count_at_least(scores: torch.Tensor, target_scores: torch.Tensor) -> torch.Tensor:
    """Per row, how many scores are >= the row's target score; NaN entries never count.
    Overwrites `scores` (a float 0/1 compare in place is many times faster than a bool sum).
    The float32 sum of 0/1 values is exact while a row has at most 2**24 entries (chunks do)."""
    assert scores.shape[1] <= 2 ** 24
    torch.ge(scores, target_scores[:, None], out=scores)
    return scores.sum(dim=1, dtype=torch.float32).long()


def metrics_from_ranks(ranks: torch.Tensor | np.ndarray | Sequence[int],
                       ks: Sequence[int]) -> dict[str, float]:
    """HR@k (share of ranks <= k), NDCG@k (mean of 1/log2(rank+1) for ranks <= k, else 0) for
    every k, and MRR (mean of 1/rank). Keys in the order HR@k, NDCG@k per k, then MRR.
    With no ranks at all every value is NaN."""
    r = (ranks.detach().cpu() if isinstance(ranks, torch.Tensor)
         else torch.as_tensor(np.asarray(ranks))).to(torch.float64).reshape(-1)
    gain = 1.0 / torch.log2(r + 1.0)
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"HR@{k}"] = hit.double().mean().item()
        out[f"NDCG@{k}"] = torch.where(hit, gain, torch.zeros_like(gain)).mean().item()
    out["MRR"] = (1.0 / r).mean().item()
    return out


def _exclusion_pairs(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) index pairs of every history item of a batch, for a scatter into the scores."""
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    rows = np.repeat(np.arange(len(histories), dtype=np.int64), lens)
    cols = (np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
            if lens.sum() else np.zeros(0, dtype=np.int64))
    return rows, cols


def _ranked_terms(histories, bias, item_bias, users, items, sim_start):
    """(rows, items, values) added to the scores of ranked history items, or None."""
    if histories is None or (bias is None and item_bias is None and sim_start is None):
        return None
    from vmr.model.history import ranked_history_terms

    return ranked_history_terms(histories, bias, item_bias, users, items, sim_start)


@torch.no_grad()
def batch_ranks(users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                histories: Sequence[np.ndarray] | None = None,
                item_chunk: int = 65536, history_bias: torch.Tensor | None = None,
                ranked_histories: Sequence[np.ndarray] | None = None,
                item_bias: torch.Tensor | None = None,
                sim_start: int | None = None) -> torch.Tensor:
    """Ranks of `targets` for a batch of user vectors [B, d] against item embeddings [N, d].

    Scores are computed chunk by chunk over items ([B, item_chunk] at a time). Items of
    `histories` (if given) are excluded, except the target. Items of `ranked_histories` are
    ranked with the repeat term `history_bias` (and `item_bias`) added to their scores, and,
    with the last-item similarity term in columns [sim_start:], without what it gives the last
    item from itself (vmr/model/history.py, `ranked_history_terms`).
    Each target's score is read from the same matrix product that scores the other items, so
    exact ties stay exact ties.
    """
    device = items.device
    users = users.to(device=device, dtype=items.dtype)
    targets = targets.to(device=device, dtype=torch.long)
    B, N = users.shape[0], items.shape[0]
    rows_all = torch.arange(B, device=device)
    if histories is not None:
        r, c = _exclusion_pairs(histories)
        ex_rows = torch.from_numpy(r).to(device)
        ex_cols = torch.from_numpy(c).to(device)
    bounds = [(s, min(s + item_chunk, N)) for s in range(0, N, item_chunk)]
    bonus = _ranked_terms(ranked_histories, history_bias, item_bias, users, items, sim_start)

    def chunk_scores(s: int, e: int) -> torch.Tensor:
        # users and items are finite (evaluate_model checks), so the scores are too
        scores = users @ items[s:e].T
        if bonus is not None:
            sel = (bonus[1] >= s) & (bonus[1] < e)
            scores[bonus[0][sel], bonus[1][sel] - s] += bonus[2][sel].to(scores.dtype)
        return scores

    # Pass 1 (only when the catalogue spans several chunks): each target's score.
    target_scores = torch.empty(B, device=device, dtype=items.dtype)
    if len(bounds) > 1:
        for s, e in bounds:
            inside = (targets >= s) & (targets < e)
            if inside.any():
                rows = rows_all[inside]
                target_scores[rows] = chunk_scores(s, e)[rows, targets[rows] - s]

    # Pass 2: count the items that score >= the target, skipping excluded ones.
    count = torch.zeros(B, device=device, dtype=torch.long)
    for s, e in bounds:
        scores = chunk_scores(s, e)
        inside = (targets >= s) & (targets < e)
        rows = rows_all[inside]
        if len(bounds) == 1:
            target_scores = scores[rows_all, targets]
        if histories is not None:
            sel = (ex_cols >= s) & (ex_cols < e)
            scores[ex_rows[sel], ex_cols[sel] - s] = math.nan  # NaN >= x is False
        scores[rows, targets[rows] - s] = math.nan  # the target does not count against itself
        count += _count_at_least(scores, target_scores)
    return count + 1


@torch.no_grad()
def evaluate_model(model: DualTower, histories: Sequence[np.ndarray], targets: Sequence[int],
                   ks: Sequence[int], include_history: bool = False, user_batch: int = 512,
                   item_chunk: int = 65536, progress: bool = False, user_block: int = 32768,
                   return_ranks: bool = False, users: torch.Tensor | None = None) -> dict:
    """Rank each user's target among ALL items and return HR@k / NDCG@k / MRR plus the counts
    `users` and `items` (and `ranks`, a long tensor, if return_ranks).

    histories: item index arrays, oldest first (one per user); targets: the held-out item index
    per user. The history is excluded from the ranking unless include_history; then history
    items are ranked with the model's repeat term (`history_bias()`, if it has one) added, and
    without the last-item similarity term's share of the last item's own score.
    """
    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories but {len(targets)} targets")
    if users is not None and len(users) != len(histories):
        raise ValueError(f"{len(users)} user vectors but {len(histories)} histories")
    items = model.item_embeddings().detach().float()
    n_items = items.shape[0]
    if not torch.isfinite(items).all():
        from vmr.errors import VmrError
        raise VmrError("the model's item embeddings contain NaN or inf (did training diverge?)")
    targets_t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    if len(targets_t) and (targets_t.min() < 0 or targets_t.max() >= n_items):
        raise ValueError(f"target item index out of range 0..{n_items - 1}")
    bias_fn = getattr(model, "history_bias", None)
    bias = bias_fn() if include_history and bias_fn is not None else None
    item_fn = getattr(model, "item_repeat_bias", None)
    item_bias = item_fn() if bias is not None and item_fn is not None else None
    sim_fn = getattr(model, "similarity_start", None)
    sim_start = sim_fn() if include_history and sim_fn is not None else None
    starts = range(0, len(histories), user_batch)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="evaluate", unit="batch", leave=False)
    ranks = []
    users_all, block = None, user_batch * max(1, -(-user_block // user_batch))
    for s in starts:
        if s % block == 0:   # user vectors a block at a time: few, well-filled length groups
            blk = [np.asarray(h, dtype=np.int64) for h in histories[s:s + block]]
            users_all = (model.user_vectors(blk) if users is None
                         else users[s:s + block]).detach().float()
            if not torch.isfinite(users_all).all():
                from vmr.errors import VmrError
                raise VmrError("the model's user vectors contain NaN or inf (did training diverge?)")
        o = s % block
        hist = blk[o:o + user_batch]
        ranks.append(batch_ranks(users_all[o:o + user_batch], items, targets_t[s:s + user_batch],
                                 None if include_history else hist, item_chunk,
                                 bias, hist if include_history else None, item_bias,
                                 sim_start).cpu())
    ranks_t = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)
    out: dict = metrics_from_ranks(ranks_t, ks)
    out["users"] = int(len(ranks_t))
    out["items"] = int(n_items)
    if return_ranks:
        out["ranks"] = ranks_t
    return out
