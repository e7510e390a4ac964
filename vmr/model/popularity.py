"""The popularity baseline, model kind pop, with the same dual-tower interface as the others:
every user gets the same vector (1), every item the score log(1 + its training interactions)."""

from __future__ import annotations

import numpy as np
import torch

from vmr.model.base import ModelKind
from vmr.model.config_keys import ModelConfig


class Popularity(ModelKind):
    """item_embeddings() [N, 1] = log1p(count); user_vectors() [B, 1] = 1. `fit` counts."""

    kind = "pop"
    help = "popularity baseline (training-interaction counts)"
    trained_by = "counts"
    id_keys = ("popularity",)

    def __init__(self, cfg: ModelConfig, n_items: int, dims: dict[str, int] | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit(self, prefixes: list[np.ndarray]) -> None:
        """Count every item's interactions in the users' training prefixes."""
        counts = np.zeros(self.n_items, dtype=np.float64)
        for p in prefixes:
            np.add.at(counts, p, 1.0)
        self.popularity.copy_(torch.from_numpy(np.log1p(counts)).float())

    def item_embeddings(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        table = self.popularity.view(-1, 1)
        return table if idx is None else table[idx]

    def user_vectors(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return torch.ones(seq.shape[0], 1, dtype=table.dtype, device=table.device)
