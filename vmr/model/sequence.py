"""The sequence tower that the sequential model kinds share (paper section 3.2): item vectors +
learnable positions -> transformer blocks -> a vector per position, the repeat term
(vmr/model/history.py) and the training loss of a batch (vmr/model/losses.py).

`SequenceModel` is that tower over an item tower that a subclass builds: the multimodal item
encoder (`Recommender`, kind vmr, vmr/model/recommender.py) or an item-ID table (`SASRec`, kind
sasrec, vmr/model/sasrec.py)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vmr.model import history
from vmr.model.base import ModelKind
from vmr.model.blocks import Dropout, attention_mask, make_blocks
from vmr.model.config_keys import ModelConfig
from vmr.model.losses import FullSoftmax, SampledSoftmax, SequenceLoss
from vmr.model.objectives import objective_of


class SequenceEncoder(nn.Module):
    """Item embeddings + learnable positions -> transformer blocks -> a vector per position;
    attention is causal or not as the objective (`model.objective`, vmr/model/objectives.py) says."""

    def __init__(self, cfg: ModelConfig, blocks: nn.ModuleList):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.objective = objective_of(cfg)
        self.pos = nn.Embedding(cfg.max_len, d)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = Dropout(cfg.dropout)
        self.blocks = blocks
        self.mask_emb = nn.Parameter(torch.randn(d) * 0.02)   # the [mask] item (replace_mask)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x [B, L, d] item embeddings (left-padded), pad [B, L] bool -> [B, L, d]
        ([B, 1, d], the last position only, with last_only)."""
        B, L, _ = x.shape
        x = self.drop(self.ln(x + self.pos.weight[-L:].unsqueeze(0)))
        mask = attention_mask(pad, causal=self.objective.causal_attention)
        for i, blk in enumerate(self.blocks):
            x = blk(x, mask, last_only=last_only and i == len(self.blocks) - 1)
        return x


class SequenceModel(ModelKind):
    """An item tower (`make_item_tower`, `item_embeddings`: the subclass's) and the sequence
    tower on top of it. The weights keep the names they had when both kinds were one class
    (`seq_blocks.*`, `items.*` or `item_table.*`, `seq.*`, `repeat`, `repeat_item`), created in
    the same order, so checkpoints and seeds mean what they meant."""

    def __init__(self, cfg: ModelConfig, n_items: int, dims: dict[str, int] | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.seq_blocks = make_blocks(cfg, cfg.n_layers)
        self.make_item_tower(cfg, n_items, dims or {})
        self.seq = SequenceEncoder(cfg, self.seq_blocks)
        # the repeat term (vmr/model/history.py): a score for items already in the history
        self.repeat = nn.Parameter(torch.zeros(history.N_BUCKETS)) if cfg.repeat_bias else None
        self.repeat_item = nn.Parameter(torch.zeros(n_items)) if cfg.repeat_item_bias else None
        self.apply(_init_linear)
        # items that do not exist at training time (set_training_items); their training-softmax
        # row index is -1, the others are renumbered 0.. in order
        self.register_buffer("train_index", torch.arange(n_items), persistent=False)
        self.all_items_train = True

    def make_item_tower(self, cfg: ModelConfig, n_items: int, dims: dict[str, int]) -> None:
        """Create the item tower's modules (called before the sequence tower's)."""
        raise NotImplementedError

    def set_training_items(self, absent: torch.Tensor) -> None:
        """[n_items] bool: items that did not exist when the model was trained (the strict
        new-item protocol). The training loss leaves them out of its softmax and its sampled
        negatives: otherwise training would learn to push exactly those items down, a signal
        no real catalogue gives about tomorrow's items."""
        keep = ~absent.to(self.train_index.device)
        self.train_index.copy_(torch.where(keep, keep.long().cumsum(0) - 1, -1))
        self.all_items_train = bool(keep.all())

    def copy_item_blocks_into_sequence(self) -> None:
        """share = init: start the sequence blocks from the (pre-trained) item blocks; a no-op
        for a kind without item blocks."""

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
                neg_idx: torch.Tensor | None = None,
                loss: SequenceLoss | None = None) -> torch.Tensor:
        """Training loss of a batch (mean cross-entropy over its targets).

        inp [B, L] input items (-1 padding), tgt [B, L] target items (negative = no target),
        replace_mask [B, L] inputs replaced by [mask] (or None), neg_idx [K] shared
        negatives (`loss.negatives`); loss: the trainer's (vmr.model.losses.make_sequence_loss),
        else the full softmax, or the sampled one where negatives are given."""
        if loss is None:
            loss = FullSoftmax() if neg_idx is None else SampledSoftmax()
        return loss(self, inp, tgt, replace_mask, neg_idx)

    def training_bonus(self, inp: torch.Tensor, tgt: torch.Tensor, sel: torch.Tensor):
        """The repeat term of every (target row, history item) pair of a batch, or None."""
        if self.repeat is None:
            return None
        rows, cols, rec = self.seq.objective.repeat_pairs(inp, tgt, sel)
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
        """seq [B, L] left-padded histories as `vmr.model.towers.pad_histories` prepares them
        (with the objective's prediction slots, whose input is the [mask] item)."""
        rm = self.seq.objective.prediction_replace_mask(seq)
        out = self.encode(seq, table, rm, last_only=True)[:, -1]
        if self.cfg.temperature > 0:
            out = F.normalize(out, dim=-1) / self.cfg.temperature
        return out


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
