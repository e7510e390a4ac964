"""The multimodal recommender and its ID-only sibling SASRec, in one file: the item encoder
(modality fusion), the sequence encoder, and the `Recommender` that joins them.

Every model is a dual tower: `item_embeddings()` gives one vector per item, `user_vectors()` one
vector per history, and score(u, j) = <u, h_j> (vmr/model/popularity.py is the third model with
that interface). Paper sections 3.1.2 (item encoder) and 3.2 (sequence encoder); the vague parts
are read as docs/MODEL.md says."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vmr.model.blocks import Dropout, attention_mask, make_blocks
from vmr.model import history
from vmr.model.config import ModelConfig
from vmr.model.losses import full_softmax_loss, sampled_softmax_loss

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


class SequenceEncoder(nn.Module):
    """Item embeddings + learnable positions -> transformer blocks -> a vector per position."""

    def __init__(self, cfg: ModelConfig, blocks: nn.ModuleList):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.pos = nn.Embedding(cfg.max_len, d)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = Dropout(cfg.dropout)
        self.blocks = blocks
        self.mask_emb = nn.Parameter(torch.randn(d) * 0.02)   # the [mask] item (masked objective)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x [B, L, d] item embeddings (left-padded), pad [B, L] bool -> [B, L, d]
        ([B, 1, d], the last position only, with last_only)."""
        B, L, _ = x.shape
        x = self.drop(self.ln(x + self.pos.weight[-L:].unsqueeze(0)))
        mask = attention_mask(pad, causal=self.cfg.objective == "causal")
        for i, blk in enumerate(self.blocks):
            x = blk(x, mask, last_only=last_only and i == len(self.blocks) - 1)
        return x


class Recommender(nn.Module):
    """An item tower (multimodal encoder or ID table) and a sequence tower on top of it."""

    def __init__(self, cfg: ModelConfig, n_items: int, dims: dict[str, int] | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.seq_blocks = make_blocks(cfg, cfg.n_layers)
        if cfg.kind == "vmr":
            item_blocks = self.seq_blocks if cfg.share == "tie" else make_blocks(cfg, cfg.item_layers)
            self.items = ItemEncoder(cfg, n_items, dims or {}, item_blocks)
            self.item_table = None
        else:
            self.items = None
            self.item_table = nn.Embedding(n_items, cfg.d_model)
            nn.init.normal_(self.item_table.weight, std=0.02)
        self.seq = SequenceEncoder(cfg, self.seq_blocks)
        # the repeat term (vmr/model/history.py): a score for items already in the history
        self.repeat = nn.Parameter(torch.zeros(history.N_BUCKETS)) if cfg.repeat_bias else None
        self.repeat_item = nn.Parameter(torch.zeros(n_items)) if cfg.repeat_item_bias else None
        self.apply(_init_linear)
        # items that do not exist at training time (set_training_items); their training-softmax
        # row index is -1, the others are renumbered 0.. in order
        self.register_buffer("train_index", torch.arange(n_items), persistent=False)
        self.all_items_train = True

    def set_training_items(self, absent: torch.Tensor) -> None:
        """[n_items] bool: items that did not exist when the model was trained (the strict
        new-item protocol). The training loss leaves them out of its softmax and its sampled
        negatives: otherwise training would learn to push exactly those items down, a signal
        no real catalogue gives about tomorrow's items."""
        keep = ~absent.to(self.train_index.device)
        self.train_index.copy_(torch.where(keep, keep.long().cumsum(0) - 1, -1))
        self.all_items_train = bool(keep.all())

    # -- item tower
    def item_embeddings(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        if self.items is not None:
            return self.items(idx)
        return self.item_table.weight if idx is None else self.item_table(idx)

    def copy_item_blocks_into_sequence(self) -> None:
        """share = init: start the sequence blocks from the (pre-trained) item blocks."""
        if self.items is None or self.cfg.share != "init":
            return
        for src, dst in zip(self.items.blocks, self.seq_blocks):
            dst.load_state_dict(src.state_dict())

    # -- sequence tower
    def encode(self, seq: torch.Tensor, table: torch.Tensor,
               replace_mask: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """seq [B, L] item indices, -1 = padding; table [N, d] item embeddings.
        replace_mask [B, L] bool marks positions whose input is the [mask] item.
        Returns [B, L, d], or [B, 1, d] (the last position) with last_only."""
        pad = seq < 0
        x = table[seq.clamp(min=0)]
        if replace_mask is not None:
            x = torch.where(replace_mask.unsqueeze(-1), self.seq.mask_emb.expand_as(x), x)
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        return self.seq(x, pad, last_only)

    def forward(self, inp: torch.Tensor, tgt: torch.Tensor, replace_mask: torch.Tensor | None,
                neg_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss of a batch (mean cross-entropy over its targets).

        inp [B, L] input items (-1 padding), tgt [B, L] target items (negative = no target),
        replace_mask [B, L] inputs replaced by [mask] (masked objective), neg_idx [K] shared
        negatives for the sampled softmax (None = full softmax over all items)."""
        sel = tgt >= 0
        temp = self.cfg.temperature
        if neg_idx is not None and not self.all_items_train:
            neg_idx = neg_idx[self.train_index[neg_idx] >= 0]
        if neg_idx is None:
            table = self.item_embeddings()
            out = self.encode(inp, table, replace_mask)[sel]
            bonus = self._training_bonus(inp, tgt, sel)
            if self.all_items_train:
                return full_softmax_loss(out, table, tgt[sel], temp, bonus)
            if bonus is not None:              # renumber the items, drop the absent ones
                rows, cols, vals = bonus
                cols = self.train_index[cols]
                bonus = (rows[cols >= 0], cols[cols >= 0], vals[cols >= 0])
            return full_softmax_loss(out, table[self.train_index >= 0],
                                     self.train_index[tgt[sel]], temp, bonus)
        need = torch.cat([inp[inp >= 0], tgt[sel], neg_idx]).unique()   # embed only these
        emb = self.item_embeddings(need)
        table = torch.zeros(self.n_items, emb.shape[1], device=emb.device, dtype=emb.dtype)
        table = table.index_copy(0, need, emb)
        out = self.encode(inp, table, replace_mask)[sel]
        return sampled_softmax_loss(out, table[tgt[sel]], table[neg_idx], tgt[sel], neg_idx, temp,
                                    self._training_bonus(inp, tgt, sel))

    def _training_bonus(self, inp: torch.Tensor, tgt: torch.Tensor, sel: torch.Tensor):
        """The repeat term of every (target row, history item) pair of a batch, or None."""
        if self.repeat is None:
            return None
        if self.cfg.objective == "masked":   # the original items: targets where masked
            rows, cols, rec = history.training_pairs(torch.where(sel, tgt, inp), sel, False)
        else:                                # inputs at positions <= t precede target t
            rows, cols, rec = history.training_pairs(inp, sel, True)
        vals = self.history_bias()[history.recency_bucket(rec)]
        if self.repeat_item is not None:
            vals = vals + self.repeat_item[cols] * history.SCALE
        return rows, cols, vals

    def history_bias(self) -> torch.Tensor | None:
        """[N_BUCKETS] the learned repeat term by recency bucket (None without repeat_bias)."""
        return None if self.repeat is None else self.repeat * history.SCALE

    def item_repeat_bias(self) -> torch.Tensor | None:
        """[n_items] the learned per-item part of the repeat term (model.repeat_item_bias)."""
        return None if self.repeat_item is None else self.repeat_item * history.SCALE

    def logits(self, out: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        if self.cfg.temperature > 0:
            out = F.normalize(out, dim=-1) / self.cfg.temperature
        return out @ table.T

    def user_vectors(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """seq [B, L] left-padded histories (masked objective: last slot is the [mask])."""
        if self.cfg.objective == "masked":
            rm = torch.zeros_like(seq, dtype=torch.bool)
            rm[:, -1] = True
            out = self.encode(seq, table, rm, last_only=True)[:, -1]
        else:
            out = self.encode(seq, table, last_only=True)[:, -1]
        if self.cfg.temperature > 0:
            out = F.normalize(out, dim=-1) / self.cfg.temperature
        return out


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


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
