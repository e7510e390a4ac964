"""The repeat term: what a model adds to the score of an item the user already interacted with.

A dual tower scores score(u, j) = <u, h_j>. An item of the user's own history sits close to the
user vector by construction (the history is what the user vector is made of), so ranking all
items, past ones included (the RecBole protocol), puts the user's past items on top although
they are rarely the next item (0.85 % of Scientific's test targets repeat a past item).
`model.repeat_bias` adds a learned term b[bucket(r)] to the score of an item whose most recent
occurrence in the history is r steps back (r = 0: the last item):

    bucket(r) = min(bit_length(r), 5): r = 0 | 1 | 2-3 | 4-7 | 8-15 | 16 and more

The six values are trained with the sequence loss (the item at every training position is
scored against its own prefix, repeats included), so the model learns how likely a repeat is
from the data: strongly negative on Amazon data, where a user rarely buys the same item twice,
positive where people re-watch. Evaluation with the history excluded never sees the term.
Everything here is plain index arithmetic, shared by training, evaluation and serving."""

from __future__ import annotations

import numpy as np
import torch

N_BUCKETS = 6
# Parameters move about lr per Adam step whatever their gradient's scale; logits are in units
# of 1/temperature (10 at the default 0.1): the raw parameter is scaled to reach them in a few
# hundred steps.
SCALE = 100.0


def recency_bucket(recency):
    """Bucket of a recency r >= 0 (tensor or array, elementwise): min(bit_length(r), 5)."""
    if isinstance(recency, torch.Tensor):
        r = recency.clamp(min=1).float()           # bit_length(r) = floor(log2 r) + 1, r >= 1
        b = torch.floor(torch.log2(r)).long() + 1
        return torch.where(recency > 0, b, 0).clamp(max=N_BUCKETS - 1)
    r = np.asarray(recency, dtype=np.int64)
    b = np.floor(np.log2(np.maximum(r, 1))).astype(np.int64) + 1
    return np.minimum(np.where(r > 0, b, 0), N_BUCKETS - 1)


def history_pairs(histories) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, item, recency) of every distinct item of each history (oldest first), recency
    counted from its most recent occurrence (0 = the last item)."""
    rows, cols, rec = [], [], []
    for i, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64).reshape(-1)
        if not len(h):
            continue
        rev = h[::-1]
        items, first = np.unique(rev, return_index=True)   # first index in reverse = most recent
        rows.append(np.full(len(items), i, dtype=np.int64))
        cols.append(items)
        rec.append(first.astype(np.int64))
    if not rows:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), z.copy()
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(rec)


def history_scores(bias: torch.Tensor, recency) -> torch.Tensor:
    """The repeat term of each (row, item) pair from its recency; bias [N_BUCKETS]."""
    rec = torch.as_tensor(np.asarray(recency), dtype=torch.long, device=bias.device)
    return bias[recency_bucket(rec)]


def ranked_history_terms(histories, bias: torch.Tensor | None, item_bias: torch.Tensor | None,
                         users: torch.Tensor, items: torch.Tensor, sim_start: int | None = None):
    """(rows, items, values): what is added to the score of each distinct history item when the
    history is ranked too: the repeat term b[bucket(r)] (bias, or nothing), its per-item part
    (item_bias), and, with the last-item similarity term in columns [sim_start:] of users and
    items (vmr/evaluate/similarity.py), minus what those columns give the last item (r = 0)
    from its similarity to itself, so that the term ranks the other items by their similarity
    to it and the last item exactly as without the term. users [B, D] and items [N, D]: the
    dual tower's vectors (row i of users is histories[i]'s)."""
    device = items.device
    r, c, rec = history_pairs(histories)
    rows, cols = torch.from_numpy(r).to(device), torch.from_numpy(c).to(device)
    if bias is not None:
        vals = history_scores(bias.to(device), rec).to(items.dtype)
    else:
        vals = torch.zeros(len(c), device=device, dtype=items.dtype)
    if item_bias is not None:
        vals = vals + item_bias.to(device, items.dtype)[cols]
    if sim_start is not None:
        last = torch.from_numpy(rec == 0).to(device)
        own = (users[rows[last], sim_start:].to(items.dtype)
               * items[cols[last], sim_start:]).sum(1)
        vals = vals.index_put((torch.nonzero(last).flatten(),), -own, accumulate=True)
    return rows, cols, vals


def training_pairs(hist: torch.Tensor, sel: torch.Tensor, inclusive: bool):
    """For a training batch: (row, item, recency) of every distinct history item of every target.

    hist [B, L] item indices aligned with the targets (-1 = padding); sel [B, L] bool: positions
    with a target, whose rows are numbered 0.. in row-major order (as `out[sel]`). The history of
    the target at position t is hist[:, :t+1] (inclusive: the causal objective's inputs) or
    hist[:, :t] (the masked objective's original items before the target). An item counts at its
    most recent position p, so the recency is t - p (inclusive) or t - p - 1."""
    B, L = hist.shape
    dev = hist.device
    pos = torch.arange(L, device=dev)
    valid = hist >= 0
    same = (hist.unsqueeze(2) == hist.unsqueeze(1)) & valid.unsqueeze(2)          # [B, p, q]
    later = same & (pos.view(1, 1, L) > pos.view(1, L, 1))
    big = torch.full_like(hist, L)
    nxt = torch.where(later, pos.view(1, 1, L).expand(B, L, L), big.unsqueeze(2)).amin(2)
    t = pos.view(1, L, 1)                       # [1, t, 1]
    p = pos.view(1, 1, L)                       # [1, 1, p]
    before = (p <= t) if inclusive else (p < t)
    # p is the most recent occurrence before (or at) t: its next occurrence comes after t
    nxt_after = (nxt.unsqueeze(1) > t) if inclusive else (nxt.unsqueeze(1) >= t)
    keep = before & valid.unsqueeze(1) & nxt_after & sel.unsqueeze(2)              # [B, t, p]
    b_idx, t_idx, p_idx = keep.nonzero(as_tuple=True)
    row_of = torch.cumsum(sel.reshape(-1).long(), 0) - 1
    rows = row_of[b_idx * L + t_idx]
    rec = t_idx - p_idx - (0 if inclusive else 1)
    return rows, hist[b_idx, p_idx], rec
