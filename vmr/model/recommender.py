"""The multimodal recommender, model kind vmr: the item encoder (modality fusion, paper section
3.1.2) under the sequence tower that it shares with SASRec (vmr/model/sequence.py). The vague
parts of the paper are read as docs/MODEL.md says."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vmr.errors import VmrError
from vmr.model.base import id_dropout_error
from vmr.model.blocks import Dropout, make_blocks
from vmr.model.config_keys import Config, ModelConfig
from vmr.model.objectives import objective_of
from vmr.model.sequence import SequenceModel

MODALITY_ORDER = ("video", "image", "text")
VISUAL_MODALITIES = ("video", "image")


class ItemEncoder(nn.Module):
    """Modality tokens -> fusion transformer -> shared projection -> L2 norm -> max-pool (eq. 3).

    E_m = Linear_m(x_m) + ModalityEmb[m]; an absent modality gets a learned [mask] token instead
    of its projection. Features are frozen buffers, not parameters. With item_id_emb the item's
    ID embedding is added to every token (id_fusion = "token", METHOD.md 2) or to the fused
    output, h_j = s * content_j + ID_j (id_fusion = "residual": the model is then at least an
    ID model, and content adds what IDs of rare items cannot learn).

    Items without a trained ID: `model.id_dropout` replaces an item's ID, during training, by a
    shared learned "unknown" vector with that probability; items marked unknown
    (`set_unknown_ids`: the new items of the strict protocol, a catalogue the run never saw) use
    that vector, or zero without id_dropout, always -- they are scored from content alone."""

    def __init__(self, cfg: ModelConfig, n_items: int, dims: dict[str, int],
                 blocks: nn.ModuleList):
        super().__init__()
        self.modalities = [m for m in MODALITY_ORDER if m in dims]
        if not self.modalities and not cfg.item_id_emb:
            raise ValueError("the item encoder needs at least one modality or item_id_emb")
        d = cfg.d_model
        self.d = d
        self.n_items = n_items
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in self.modalities})
        n_tok = max(1, len(self.modalities))
        self.mod_emb = nn.Parameter(torch.randn(n_tok, d) * 0.02)
        self.mask_tok = nn.Parameter(torch.randn(n_tok, d) * 0.02)
        self.id_emb = nn.Embedding(n_items, d) if cfg.item_id_emb else None
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=0.02)
        self.id_dropout = cfg.id_dropout
        # created only with id_dropout, so that the default model's weights stay as they were
        self.unk_id = (nn.Parameter(torch.zeros(d)) if self.id_emb is not None and cfg.id_dropout > 0
                       else None)
        self.register_buffer("unknown", torch.zeros(n_items, dtype=torch.bool), persistent=False)
        self.any_unknown = False
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = Dropout(cfg.item_dropout)
        self.p = cfg.item_dropout
        self.norm = cfg.item_norm
        self.id_fusion = cfg.id_fusion
        self.pool = cfg.fusion_pool
        if self.pool == "gate":
            self.gate = nn.Parameter(torch.zeros(max(1, len(self.modalities))))
        self.early = cfg.early_fusion
        self.modality_dropout = cfg.modality_dropout
        self.content_scale = nn.Parameter(torch.tensor(1.0))
        self.blocks = blocks
        self.n_blocks = cfg.item_layers
        self.head = nn.Linear(d, d)
        for m in self.modalities:       # frozen features, filled by set_features()
            self.register_buffer(f"feat_{m}", torch.zeros(n_items, dims[m]), persistent=False)
            self.register_buffer(f"present_{m}", torch.ones(n_items, dtype=torch.bool),
                                 persistent=False)

    def set_features(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        for m in self.modalities:
            getattr(self, f"feat_{m}").copy_(feats[m])
            getattr(self, f"present_{m}").copy_(present[m])

    def set_unknown_ids(self, unknown: torch.Tensor) -> None:
        """[n_items] bool: items whose ID was never trained; they get the unknown vector (or
        zero) instead of their ID row, in training and evaluation alike."""
        self.unknown.copy_(unknown)
        self.any_unknown = bool(unknown.any())

    def id_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        """[n, d] ID embeddings, with unknown items and (training) dropped IDs replaced."""
        ids = self.id_emb(idx)
        drop = self.unknown[idx] if self.any_unknown else None
        if self.training and self.id_dropout > 0:
            r = torch.rand(idx.shape, device=idx.device) < self.id_dropout
            drop = r if drop is None else drop | r
        if drop is None:
            return ids
        unk = self.unk_id.to(ids.dtype) if self.unk_id is not None else ids.new_zeros(self.d)
        return torch.where(drop.unsqueeze(-1), unk, ids)

    def unit_content(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """[n, D] the frozen features as the last-item similarity term reads them: each
        modality's vector scaled to unit length (zero where absent), concatenated and divided
        by sqrt(M), so that the dot product of two rows is their mean cosine over modalities."""
        if idx is None:
            idx = torch.arange(self.n_items, device=self.mod_emb.device)
        cols = [F.normalize(getattr(self, f"feat_{m}")[idx].float(), dim=-1)
                * getattr(self, f"present_{m}")[idx].unsqueeze(1) for m in self.modalities]
        return torch.cat(cols, 1) / max(1, len(cols)) ** 0.5

    def present(self, idx: torch.Tensor) -> torch.Tensor:
        """[n, M] bool: which modality of each item has content."""
        if not self.modalities:
            return torch.ones(len(idx), 1, dtype=torch.bool, device=idx.device)
        return torch.stack([getattr(self, f"present_{m}")[idx] for m in self.modalities], 1)

    def tokens(self, idx: torch.Tensor, keep: torch.Tensor | None = None,
               with_ids: bool = True) -> torch.Tensor:
        """[n, M, d] modality tokens; keep [n, M] bool further masks modalities (views);
        with_ids=False leaves the ID embedding out (pre-training views)."""
        keep_all = self.present(idx) if keep is None else keep & self.present(idx)
        if self.modalities:
            cols = [self.proj[m](getattr(self, f"feat_{m}")[idx]) for m in self.modalities]
            x = torch.stack(cols, 1)
            x = torch.where(keep_all.unsqueeze(-1), x, self.mask_tok.unsqueeze(0))
        else:
            x = self.mask_tok.unsqueeze(0).expand(len(idx), 1, self.d)
        x = x + self.mod_emb.unsqueeze(0)
        if with_ids and self.id_emb is not None and (self.id_fusion == "token"
                                                     or not self.modalities):
            x = x + self.id_vectors(idx).unsqueeze(1)
        return x

    def fuse(self, tok: torch.Tensor) -> torch.Tensor:
        """[n, M, d] tokens -> [n, d] item embedding (transformer, projection, L2, then a pool
        over the tokens: max, eq. 3, or mean)."""
        if self.early and tok.shape[1] > 1:
            tok = tok.sum(dim=1, keepdim=True)    # early fusion: one token = Linear(concat)
        x = self.drop(self.ln(tok))
        for blk in self.blocks[: self.n_blocks]:
            x = blk(x, None, self.p)
        x = self.head(x)
        if self.norm:
            x = F.normalize(x, dim=-1)
        if self.pool == "mean":
            return x.mean(dim=1)
        if self.pool == "gate" and x.shape[1] > 1:   # a learned weight per modality
            return (x * self.gate.softmax(0).view(1, -1, 1)).sum(dim=1)
        return x.max(dim=1).values

    def forward(self, idx: torch.Tensor | None = None, keep: torch.Tensor | None = None):
        if idx is None:
            idx = torch.arange(self.n_items, device=self.mod_emb.device)
        if keep is None and self.training and self.modality_dropout > 0 and len(self.modalities) > 1:
            # training only: hide a present modality now and then, so that every modality must
            # carry the item on its own and fusion cannot lean on the strongest one alone
            keep = random_keep(self.present(idx), self.modality_dropout)
        h = self.fuse(self.tokens(idx, keep))
        if self.id_emb is not None and self.id_fusion == "residual" and self.modalities:
            h = self.content_scale * h + self.id_vectors(idx)
        return h


class Recommender(SequenceModel):
    """Kind vmr: the multimodal item encoder under the shared sequence tower (the item encoder's
    blocks are the first sequence blocks under model.share = tie)."""

    kind = "vmr"
    help = "the multimodal recommender (content features + optional item IDs)"
    uses_features = True
    pretrains = True
    id_keys = ("items.id_emb.weight",)
    # the weight of the last-item similarity term (vmr/evaluate/similarity.py): 0 in training;
    # a loaded run takes the weight `vmr train` chose on validation (run.json)
    similarity_weight: float = 0.0

    @classmethod
    def build(cls, cfg: ModelConfig, n_items: int, dims: dict[str, int]) -> "Recommender":
        if not dims and not cfg.item_id_emb:
            raise VmrError(f"model.kind = {cls.kind} needs at least one cached modality or "
                           "model.item_id_emb = true")
        return cls(cfg, n_items, dims)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        m = cfg.model
        if m.id_dropout > 0 and not m.item_id_emb:       # IDs to drop, content to fall back on
            raise id_dropout_error(m)

    @classmethod
    def run_label(cls, cfg: Config, stage: str = "all") -> str:
        """kind, objective, pre-training, IDs, block sharing."""
        m = cfg.model
        parts = [cls.kind, objective_of(m).name]
        if cfg.pretrain.epochs > 0:
            parts.append("pretrain")
        if m.item_id_emb:
            parts.append("id")
        if m.share != "tie":
            parts.append(f"share-{m.share}")
        if stage == "pretrain":
            parts.append("pretrain-only")
        return "-".join(parts)

    def make_item_tower(self, cfg: ModelConfig, n_items: int, dims: dict[str, int]) -> None:
        item_blocks = self.seq_blocks if cfg.share == "tie" else make_blocks(cfg, cfg.item_layers)
        self.items = ItemEncoder(cfg, n_items, dims, item_blocks)

    def item_embeddings(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """[N, d] the item encoder's vectors; with a similarity weight, [N, d + D]: each item's
        unit content (`ItemEncoder.unit_content`) appended, for the last-item similarity term."""
        h = self.items(idx)
        if self.similarity_weight > 0 and self.items.modalities:
            h = torch.cat([h, self.items.unit_content(idx).to(h.dtype)], 1)
        return h

    def user_vectors(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """The sequence tower's user vector; with a similarity weight w and a table from
        `item_embeddings`, w times the last history item's unit content appended, so that
        score(u, j) = <u, h_j> + w * cos(last item, j) (vmr/evaluate/similarity.py)."""
        d = self.cfg.d_model
        u = super().user_vectors(seq, table[:, :d])
        if self.similarity_weight <= 0 or table.shape[1] == d:
            return u
        last = seq[:, -1 - objective_of(self.cfg).prediction_slots]
        extra = table[last.clamp(min=0), d:] * (last >= 0).unsqueeze(1).to(table.dtype)
        return torch.cat([u, (extra * self.similarity_weight).to(u.dtype)], 1)

    def copy_item_blocks_into_sequence(self) -> None:
        """share = init: start the sequence blocks from the (pre-trained) item blocks."""
        if self.cfg.share != "init":
            return
        for src, dst in zip(self.items.blocks, self.seq_blocks):
            dst.load_state_dict(src.state_dict())


def random_keep(present: torch.Tensor, p: float) -> torch.Tensor:
    """Drop each present modality with probability p, but keep at least one present one."""
    keep = present & (torch.rand(present.shape, device=present.device) >= p)
    empty = ~keep.any(1) & present.any(1)
    if empty.any():
        # restore one random present modality in rows that lost all of them
        scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
        pick = scores.argmax(1)
        restore = torch.zeros_like(keep)
        restore[torch.arange(len(keep), device=keep.device), pick] = True
        keep = keep | (restore & empty.unsqueeze(1))
    return keep
