"""Item-level pre-training (paper 3.1.3): the losses of one batch of items.

Views of an item: z_IS (every present modality), z_I (text masked: visual only), z_S (visual
masked: text only). Terms whose modalities the data lacks are skipped and reported once."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vmr.model.config_keys import PretrainConfig
from vmr.model.losses import InfoNCE, MatchingLoss, mine_hard_negatives
from vmr.model.recommender import VISUAL_MODALITIES, ItemEncoder, random_keep


# the loss terms, in the order metrics.csv logs them (L_<term>); each weighted by pretrain.w_<term>
TERMS = ("pwc", "pwm", "i", "s", "is")


class PretrainHeads(nn.Module):
    """The parameters that exist only for pre-training: one temperature per InfoNCE term and the
    matching head."""

    def __init__(self, d: int):
        super().__init__()
        self.pwc = InfoNCE()
        self.i = InfoNCE()
        self.s = InfoNCE()
        self.is_ = InfoNCE()
        self.pwm = MatchingLoss(d)


class PretrainObjective(nn.Module):
    """The item encoder and the pre-training heads as one module whose forward gives the loss
    terms of a batch of items (so DistributedDataParallel can wrap it)."""

    def __init__(self, enc: ItemEncoder, heads: PretrainHeads, cfg: PretrainConfig,
                 terms: dict[str, float]):
        super().__init__()
        self.enc, self.heads, self.cfg, self.terms = enc, heads, cfg, terms

    def forward(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return pretrain_losses(self.enc, self.heads, idx, self.cfg, self.terms)


def active_terms(enc: ItemEncoder, cfg: PretrainConfig) -> dict[str, float]:
    """Which weighted terms apply to these modalities (cross-modal ones need visual + text)."""
    if not enc.modalities:                  # IDs only: nothing to pre-train on content
        return {}
    has_vis = any(m in VISUAL_MODALITIES for m in enc.modalities)
    has_txt = "text" in enc.modalities
    names = ["is"] + (["pwc", "pwm", "i", "s"] if has_vis and has_txt else [])
    terms = {k: getattr(cfg, f"w_{k}") for k in names}
    return {k: w for k, w in terms.items() if w > 0}


def pretrain_losses(enc: ItemEncoder, heads: PretrainHeads, idx: torch.Tensor,
                    cfg: PretrainConfig, terms: dict[str, float]) -> dict[str, torch.Tensor]:
    present = enc.present(idx)
    out: dict[str, torch.Tensor] = {}
    # the views never carry item IDs: pre-training must learn from content alone (with IDs in
    # the tokens, two views of an item would match through its ID whatever the content)
    tok = enc.tokens(idx, with_ids=False)                   # absent modalities already [mask]
    z_is = enc.fuse(tok)
    if "is" in terms:
        v1 = enc.fuse(enc.tokens(idx, random_keep(present, cfg.modality_drop), with_ids=False))
        v2 = enc.fuse(enc.tokens(idx, random_keep(present, cfg.modality_drop), with_ids=False))
        out["is"] = heads.is_(gather_cat(v1), gather_cat(v2))
    cross = [k for k in ("pwc", "pwm", "i", "s") if k in terms]
    if cross:
        vis = torch.tensor([m in VISUAL_MODALITIES for m in enc.modalities], device=idx.device)
        both = (present & vis).any(1) & (present & ~vis).any(1)
        if int(both.sum()) >= 2:
            rows = both.nonzero().squeeze(1)
            keep_i = present[rows] & vis                    # text masked
            keep_s = present[rows] & ~vis                   # visual masked
            z_i = enc.fuse(enc.tokens(idx[rows], keep_i, with_ids=False))
            z_s = enc.fuse(enc.tokens(idx[rows], keep_s, with_ids=False))
            g_is, g_i, g_s = gather_cat(z_is[rows]), gather_cat(z_i), gather_cat(z_s)
            if "pwc" in terms:
                out["pwc"] = heads.pwc(g_i, g_s)
            if "i" in terms:
                out["i"] = heads.i(g_is, g_i)
            if "s" in terms:
                out["s"] = heads.s(g_is, g_s)
            if "pwm" in terms:
                # cosine similarities at the contrastive (PWC) temperature
                sim = F.normalize(z_i, dim=-1) @ F.normalize(z_s, dim=-1).T
                neg = mine_hard_negatives(sim, float(1.0 / heads.pwc.tau.detach()))
                t = tok[rows]
                mixed = torch.where(vis.view(1, -1, 1), t, t[neg])   # visual of j, text of neg(j)
                out["pwm"] = heads.pwm(enc.fuse(t), enc.fuse(mixed))
    return out


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from every rank along dim 0, keeping gradients (rank order). Ranks may
    hold different numbers of rows: rows are padded to the largest count, gathered, trimmed."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(v) for v in sizes]
    pad = max(sizes) - x.shape[0]
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))], 0)
    parts = all_gather(x)
    return torch.cat([p[:k] for p, k in zip(parts, sizes)], 0)
