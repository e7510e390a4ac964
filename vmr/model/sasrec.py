"""SASRec (Kang & McAuley, 2018), model kind sasrec: an item-ID table under the sequence tower
that it shares with the multimodal recommender (vmr/model/sequence.py) -- the ID-only baseline,
trained with the same objectives and losses."""

from __future__ import annotations

import torch
import torch.nn as nn

from vmr.model.config_keys import ModelConfig
from vmr.model.sequence import SequenceModel


class SASRec(SequenceModel):
    """Items are rows of a learned table (`item_table`); no content, so nothing to pre-train or
    to carry to another catalogue but the sequence tower."""

    kind = "sasrec"
    help = "ID-only SASRec baseline (cross-entropy over all items)"
    id_keys = ("item_table.weight",)

    def make_item_tower(self, cfg: ModelConfig, n_items: int, dims: dict[str, int]) -> None:
        self.items = None                 # no content encoder (readers ask `model.items`)
        self.item_table = nn.Embedding(n_items, cfg.d_model)
        nn.init.normal_(self.item_table.weight, std=0.02)

    def item_embeddings(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        return self.item_table.weight if idx is None else self.item_table(idx)
