"""Transformer building blocks shared by the item encoder and the sequence encoder."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vmr.model.config_keys import ModelConfig


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout drawn with torch.rand: on these CPUs bernoulli_ (nn.Dropout's sampler)
    costs several times a uniform draw of the same size."""
    if not training or p == 0.0:
        return x
    keep = torch.rand_like(x) >= p
    return x * keep * (1.0 / (1.0 - p))


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, p: float | None = None) -> torch.Tensor:
        return dropout(x, self.p if p is None else p, self.training)


class Block(nn.Module):
    """A post-LayerNorm transformer block: self-attention then a GELU feed-forward."""

    def __init__(self, d: int, n_heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ff1 = nn.Linear(d, ffn_mult * d)
        self.ff2 = nn.Linear(ffn_mult * d, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)
        self.drop = Dropout(dropout)
        self.attn_drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                p: float | None = None, last_only: bool = False) -> torch.Tensor:
        """x [B, L, d]; mask [L, L] or [B, 1, L, L] additive (0 / -inf) or None; p overrides
        the dropout rate (the item encoder runs the shared blocks with its own rate).
        last_only: only the last position queries -> [B, 1, d] (what a user vector needs from
        the top block; keys and values still come from every position)."""
        B, L, d = x.shape
        h = self.n_heads
        if L == 1:
            # a single key (e.g. the item encoder on one modality): every attention weight is
            # exactly 1, so only the values are needed; dropout still acts on the weights
            w, b = self.qkv.weight, self.qkv.bias
            v = F.linear(x, w[2 * d:], b[2 * d:]).view(B, 1, h, d // h)
            y = (v * self.attn_drop(x.new_ones(B, 1, h, 1), p)).reshape(B, 1, d)
            x = self.ln1(x + self.drop(self.out(y), p))
            return self.ln2(x + self.drop(self.ff2(F.gelu(self.ff1(x))), p))
        if last_only:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, -1:], w[:d], b[:d]).view(B, 1, h, d // h).transpose(1, 2)
            k, v = F.linear(x, w[d:], b[d:]).view(B, L, 2, h, d // h).permute(2, 0, 3, 1, 4)
            x = x[:, -1:]
            if mask is not None:
                mask = mask[..., -1:, :]
        else:
            q, k, v = self.qkv(x).view(B, L, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h))
        if mask is not None:
            att = att + mask
        att = self.attn_drop(att.softmax(dim=-1), p)
        y = (att @ v).transpose(1, 2).reshape(B, x.shape[1], d)
        x = self.ln1(x + self.drop(self.out(y), p))
        return self.ln2(x + self.drop(self.ff2(F.gelu(self.ff1(x))), p))


def make_blocks(cfg: ModelConfig, n: int) -> nn.ModuleList:
    return nn.ModuleList(Block(cfg.d_model, cfg.n_heads, cfg.ffn_mult, cfg.dropout)
                         for _ in range(n))


def attention_mask(pad: torch.Tensor, causal: bool) -> torch.Tensor:
    """Additive mask [B, 1, L, L]: a query never sees padding keys (nor, if causal, the future),
    but always sees itself, so no row is empty."""
    B, L = pad.shape
    allowed = ~pad.unsqueeze(1).expand(B, L, L)
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=pad.device).tril()
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=pad.device)
    zero = torch.zeros((), device=pad.device)
    return torch.where(allowed, zero, torch.tensor(float("-inf"), device=pad.device)).unsqueeze(1)
