"""A trained model as the dual tower that evaluation, recommendation and export use:
score(u, j) = <user_vectors(histories)[u], item_embeddings()[j]>, run in the model's precision.

Also the history padding every reader shares (`pad_histories`, `trim_padding`)."""

from __future__ import annotations

import numpy as np
import torch

from vmr.model import precision
from vmr.model.objectives import Objective, objective_of


class TowerView:
    """Any model kind (vmr/model/kinds.py) as the dual tower that
    `vmr.evaluate.metrics.evaluate_model` expects; amp: bfloat16 autocast where native."""

    def __init__(self, model, device: torch.device, amp: bool = False,
                 new_item_gain: float = 1.0):
        self.model, self.device, self.amp = model, device, amp
        self.new_item_gain = float(new_item_gain)
        self._table: torch.Tensor | None = None
        self._scored: torch.Tensor | None = None

    @torch.no_grad()
    def input_table(self) -> torch.Tensor:
        """[N, d] the item vectors a history is made of."""
        if self._table is None:
            self.model.eval()
            with precision.autocast(self.device, self.amp):
                self._table = self.model.item_embeddings().detach().float()
        return self._table

    def with_gain(self, new_item_gain: float) -> "TowerView":
        """The same model and input table, another new-item gain (nothing is recomputed)."""
        view = TowerView(self.model, self.device, self.amp, new_item_gain)
        view._table = self.input_table()
        return view

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """[N, d] the candidates users are scored against: the input table, with the items
        scored without a trained ID (the item encoder's unknown items) times new_item_gain
        (vmr/evaluate/new_item_gain.py). Only the model's own d columns: the gain stands in for
        the missing ID, and the last-item similarity columns (vmr/evaluate/similarity.py) carry
        no ID for any item."""
        table = self.input_table()
        items = getattr(self.model, "items", None)
        if self.new_item_gain == 1.0 or items is None or not getattr(items, "any_unknown", False):
            return table
        if self._scored is None:
            d = self.model.cfg.d_model
            scale = torch.where(items.unknown.to(table.device), self.new_item_gain, 1.0)
            scored = table.clone()
            scored[:, :d] *= scale.unsqueeze(1).to(table.dtype)
            self._scored = scored
        return self._scored

    @torch.no_grad()
    def history_bias(self) -> torch.Tensor | None:
        """[N_BUCKETS] the model's repeat term (vmr/model/history.py), or None."""
        fn = getattr(self.model, "history_bias", None)
        bias = fn() if fn is not None else None
        return None if bias is None else bias.detach().float()

    def similarity_start(self) -> int | None:
        """The first column of the last-item similarity term in both towers' vectors
        (vmr/evaluate/similarity.py), None when the model has none."""
        w = float(getattr(self.model, "similarity_weight", 0.0) or 0.0)
        return int(self.model.cfg.d_model) if w > 0 else None

    @torch.no_grad()
    def item_repeat_bias(self) -> torch.Tensor | None:
        """[N] the per-item part of the repeat term, or None."""
        fn = getattr(self.model, "item_repeat_bias", None)
        bias = fn() if fn is not None else None
        return None if bias is None else bias.detach().float()

    @torch.no_grad()
    def user_vectors(self, histories) -> torch.Tensor:
        with precision.autocast(self.device, self.amp):
            return histories_to_user_vectors(self.model, histories, self.input_table(),
                                             self.device)


@torch.no_grad()
def histories_to_user_vectors(model, histories, table: torch.Tensor, device: torch.device,
                              tokens: int = 16384, max_rows: int = 2048) -> torch.Tensor:
    """User vectors of many histories, returned in the input order. Histories are sorted by
    length and run in chunks of about `tokens` positions (at most `max_rows` histories), each
    padded only to its own longest history: most histories are short, so little is padding."""
    cfg = model.cfg
    objective = objective_of(cfg)
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    lengths = np.clip(lengths + objective.prediction_slots, 1, cfg.max_len)
    order = np.argsort(lengths, kind="stable")
    sorted_len = lengths[order].tolist()
    out = torch.empty(len(histories), table.shape[1], device=device)
    s = 0
    while s < len(order):
        # sorted ascending: the chunk's last row is its widest; grow while the budget allows
        e = s + 1
        while e < len(order) and e - s < max_rows and (e + 1 - s) * sorted_len[e] <= tokens:
            e += 1
        idx = order[s:e]
        seq = pad_histories([histories[i] for i in idx], sorted_len[e - 1], objective)
        out[torch.from_numpy(idx).to(device)] = model.user_vectors(seq.to(device), table).float()
        s = e
    return out


def pad_histories(histories, max_len: int, objective: Objective) -> torch.Tensor:
    """Left-pad item-index histories to [B, max_len] with -1, keeping the last max_len - k
    items and appending the objective's k prediction slots (index 0, replaced by [mask] in the
    encoder; vmr/model/objectives.py)."""
    keep = max_len - objective.prediction_slots
    cut = [np.asarray(h, dtype=np.int64).reshape(-1)[len(h) - min(len(h), keep):]
           for h in histories]
    lens = np.fromiter((len(c) for c in cut), dtype=np.int64, count=len(cut))
    out = np.full((len(cut), max_len), -1, dtype=np.int64)
    if lens.sum():
        end = keep                                         # one past each row's last item
        rows = np.repeat(np.arange(len(cut)), lens)
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        out[rows, end - np.repeat(lens, lens) + within] = np.concatenate(cut)
    out[:, keep:] = 0                                      # the prediction slots, if any
    return torch.from_numpy(out)


def trim_padding(x: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding in every row (rows are left-padded)."""
    nonpad = (x >= 0).any(0)
    if not nonpad.any():
        return x[:, -1:]
    first = int(nonpad.nonzero()[0])
    return x[:, first:]
