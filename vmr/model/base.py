"""The base class of every model kind (vmr/model/kinds.py registers them): the dual-tower
interface that training, evaluation and serving use, and the facts they ask a kind instead of
testing its name.

Every model is a dual tower: `item_embeddings()` gives one vector per item, `user_vectors()` one
vector per history, and score(u, j) = <u, h_j>."""

from __future__ import annotations

import torch
import torch.nn as nn

from vmr.errors import VmrError
from vmr.model.config_keys import Config, ModelConfig


class ModelKind(nn.Module):
    """A model kind: a subclass sets the class attributes, builds itself from
    (model config, number of items, width of each cached modality) and implements the towers."""

    kind: str = ""                 # the name `model.kind` selects
    help: str = ""                 # one line: what the kind is
    trained_by: str = "gradient"   # "gradient": the trainer's stages | "counts": model.fit(prefixes)
    uses_features: bool = False    # reads the feature cache (content)
    pretrains: bool = False        # has an item encoder for the pre-training stage (`.items`)
    id_keys: tuple[str, ...] = ()  # its per-item weights: never carried to another catalogue

    @classmethod
    def build(cls, cfg: ModelConfig, n_items: int, dims: dict[str, int]) -> "ModelKind":
        """A fresh model (vmr.model.registry.build_model calls this, after its checks)."""
        return cls(cfg, n_items, dims)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """The checks of a run's config that depend on the kind (one-line VmrError), run by
        vmr.model.config.check_config among the others. No kind but one whose content encoder
        learns item IDs can drop them (model.id_dropout)."""
        m = cfg.model
        if m.id_dropout > 0:
            raise id_dropout_error(m)

    @classmethod
    def run_label(cls, cfg: Config, stage: str = "all") -> str:
        """run.json's label: what ran."""
        return cls.kind

    def item_embeddings(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """[N, d] (or [len(idx), d]) the item vectors."""
        raise NotImplementedError

    def user_vectors(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """[B, d] one vector per left-padded history seq [B, L] (-1 = padding), given the item
        vectors `table` [N, d]."""
        raise NotImplementedError


def id_dropout_error(m: ModelConfig) -> VmrError:
    return VmrError(f"model.id_dropout = {m.id_dropout:g} needs model.kind = vmr with "
                    f"model.item_id_emb = true (kind is {m.kind}, item_id_emb "
                    f"{str(m.item_id_emb).lower()})")
