"""Training objectives as small modules, each testable on its own (paper 3.1.3 and 3.2.3).

Pre-training (items alone): L = w_pwc*L_PWC + w_pwm*L_PWM + w_i*L_I + w_s*L_S + w_is*L_{I-S}.
Sequence stage: full-softmax or sampled-softmax cross-entropy over items, chosen by
`make_sequence_loss` (`train.loss`; add a loss to SEQUENCE_LOSSES)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vmr.model.config_keys import TrainConfig


class InfoNCE(nn.Module):
    """Symmetric InfoNCE between two aligned batches of vectors: row j of `a` and row j of `b`
    are a positive pair, every other row of the batch a negative. Logits are tau * cos(a, b) with
    tau learnable, stored on log scale and clamped at 100 (as CLIP does). Used for L_PWC, L_I,
    L_S and L_{I-S}."""

    def __init__(self, init_tau: float = 1 / 0.07, max_tau: float = 100.0):
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(math.log(init_tau)))
        self.max_tau = max_tau

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(max=self.max_tau)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = self.tau * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
        target = torch.arange(len(a), device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def mine_hard_negatives(sim: torch.Tensor, temperature: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row j pick a negative column k != j, drawn with probability
    softmax(sim[j] / temperature) over the other columns: the harder (more similar) the more
    likely. Cosine similarities span [-1, 1], so without a small temperature the draw is
    nearly uniform. Returns [B] column indices."""
    B = sim.shape[0]
    if B < 2:
        raise ValueError("hard negatives need a batch of at least 2")
    eye = torch.eye(B, dtype=torch.bool, device=sim.device)
    w = (sim.detach().float() / temperature).masked_fill(eye, float("-inf")).softmax(dim=1)
    return torch.multinomial(w, 1, generator=generator).squeeze(1)


class MatchingLoss(nn.Module):
    """L_PWM: a binary head on the fused encoding of a (visual, text) pair says whether they
    belong to the same item. Binary cross-entropy over positives (label 1) and mined hard
    negatives (label 0), averaged over all pairs."""

    def __init__(self, d: int):
        super().__init__()
        self.head = nn.Linear(d, 1)

    def forward(self, fused_pos: torch.Tensor, fused_neg: torch.Tensor) -> torch.Tensor:
        logits = self.head(torch.cat([fused_pos, fused_neg])).squeeze(-1)
        labels = torch.cat([torch.ones(len(fused_pos)), torch.zeros(len(fused_neg))]).to(logits)
        return F.binary_cross_entropy_with_logits(logits, labels)


class _FullSoftmaxCE(torch.autograd.Function):
    """mean_i CE(softmax(u_i @ T^T), t_i) with the [n, N] logits matrix turned into
    probabilities in place and reused as the gradient: elementwise passes over that matrix
    dominate a CPU step, and this needs about half of what log_softmax + nll do.

    lowp: the three matrix products (logits, and both gradients) take bfloat16 operands with
    float32 accumulation, as under autocast; the softmax itself is always float32."""

    @staticmethod
    def forward(ctx, u, table, target, lowp, b_rows=None, b_cols=None, b_vals=None):
        with torch.autocast(u.device.type, enabled=False):
            dt = torch.bfloat16 if lowp else torch.float32
            a, b = u.to(dt), table.to(dt)
            logits = a @ b.T                                   # [n, N], float32 accumulation
            rows = torch.arange(len(target), device=logits.device)
            p = logits.float()         # the softmax in float32 (mixed-dtype passes are slower)
            del logits
            if b_vals is not None:     # the repeat term: added to the scores of history items
                p.index_put_((b_rows, b_cols), b_vals.float(), accumulate=True)
            picked = p[rows, target]
            m = p.amax(1, keepdim=True)
            p.sub_(m).exp_()
            s = p.sum(1, keepdim=True)
            p.div_(s)
            loss = (s.log().squeeze(1) + m.squeeze(1) - picked).mean()
        bonus = (b_rows, b_cols) if b_vals is not None else ()
        ctx.save_for_backward(a, b, target, p, *bonus)
        ctx.dtypes = (u.dtype, table.dtype, b_vals.dtype if b_vals is not None else None)
        return loss

    @staticmethod
    def backward(ctx, g):
        a, b, target, p, *bonus = ctx.saved_tensors
        p[torch.arange(len(target), device=p.device), target] -= 1.0    # softmax - one-hot
        scale = g / len(target)       # applied to the small [n, d] / [N, d] results, not to p
        gb = (p[bonus[0], bonus[1]] * scale).to(ctx.dtypes[2]) if bonus else None
        with torch.autocast(p.device.type, enabled=False):
            p = p.to(a.dtype)
            gu, gt = (p @ b).float() * scale, (p.T @ a).float() * scale
        return gu.to(ctx.dtypes[0]), gt.to(ctx.dtypes[1]), None, None, None, None, gb


def full_softmax_loss(out: torch.Tensor, table: torch.Tensor, target: torch.Tensor,
                      temperature: float = 0.0, bonus=None) -> torch.Tensor:
    """Cross-entropy of each user vector `out` [n, d] over all items `table` [N, d]. Under a
    bfloat16 autocast its matrix products run in bfloat16; the softmax and the loss are float32.
    bonus: (rows [P], items [P], values [P]) added to those logits before the softmax (the
    repeat term of vmr/model/history.py; each (row, item) pair at most once), differentiable
    in the values."""
    dev = out.device.type
    lowp = torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16
    if temperature > 0:
        out = F.normalize(out.float(), dim=-1) / temperature
    if bonus is None:
        return _FullSoftmaxCE.apply(out, table, target, lowp)
    return _FullSoftmaxCE.apply(out, table, target, lowp, *bonus)


def sampled_softmax_loss(out: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                         target: torch.Tensor, neg_idx: torch.Tensor,
                         temperature: float = 0.0, bonus=None) -> torch.Tensor:
    """Cross-entropy of the target against negatives shared by the whole batch: out [n, d],
    pos [n, d] target embeddings, neg [K, d]. A negative equal to the row's target is masked.
    bonus: (rows, items, values) added to the logits of those items where they are the row's
    target or one of the negatives (as in `full_softmax_loss`)."""
    if temperature > 0:
        out = F.normalize(out, dim=-1) / temperature
    pos_logit = (out * pos).sum(-1, keepdim=True)
    neg_logit = out @ neg.T
    if bonus is not None:
        rows, cols, vals = bonus
        pos_logit = pos_logit.index_add(0, rows, (vals * (cols == target[rows])).unsqueeze(1)
                                        .to(pos_logit.dtype))
        slot = torch.full((int(max(cols.max(), neg_idx.max())) + 1 if len(cols) else 1,), -1,
                          dtype=torch.long, device=out.device)
        slot[neg_idx] = torch.arange(len(neg_idx), device=out.device)
        k = slot[cols] if len(cols) else cols
        hit = k >= 0
        neg_logit = neg_logit.index_put((rows[hit], k[hit]), vals[hit].to(neg_logit.dtype),
                                        accumulate=True)
    neg_logit = neg_logit.masked_fill(neg_idx.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], 1)
    return F.cross_entropy(logits, torch.zeros(len(out), dtype=torch.long, device=out.device))


class SequenceLoss:
    """The loss of the sequence stage (`train.loss`; `make_sequence_loss` is the one place a loss
    is chosen). The trainer draws a batch's `negatives` (None: the loss needs none), the model's
    forward calls the loss with itself: `loss(model, inp, tgt, replace_mask, neg_idx)` -> the mean
    over the batch's targets. It reads the model through the sequence tower's interface
    (vmr/model/sequence.py): `item_embeddings`, `encode`, `training_bonus` (the repeat term),
    `train_index` / `all_items_train` (items absent at training time) and `cfg.temperature`."""

    def __init__(self, train: TrainConfig | None = None):
        self.train = train

    def negatives(self, n_items: int, device) -> torch.Tensor | None:
        return None

    def __call__(self, model, inp: torch.Tensor, tgt: torch.Tensor,
                 replace_mask: torch.Tensor | None, neg_idx: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class FullSoftmax(SequenceLoss):
    """train.loss = full: cross-entropy over all items (the items absent at training time left
    out of the softmax)."""

    def __call__(self, model, inp, tgt, replace_mask, neg_idx=None):
        sel = tgt >= 0
        table = model.item_embeddings()
        out = model.encode(inp, table, replace_mask)[sel]
        bonus = model.training_bonus(inp, tgt, sel)
        temp = model.cfg.temperature
        if model.all_items_train:
            return full_softmax_loss(out, table, tgt[sel], temp, bonus)
        index = model.train_index
        if bonus is not None:                  # renumber the items, drop the absent ones
            rows, cols, vals = bonus
            cols = index[cols]
            bonus = (rows[cols >= 0], cols[cols >= 0], vals[cols >= 0])
        return full_softmax_loss(out, table[index >= 0], index[tgt[sel]], temp, bonus)


class SampledSoftmax(SequenceLoss):
    """train.loss = sampled: cross-entropy of each target against `train.n_negatives` items
    drawn uniformly and shared by the batch; only the items a batch needs are embedded."""

    def negatives(self, n_items: int, device) -> torch.Tensor:
        return torch.randint(0, n_items, (self.train.n_negatives,), device=device)

    def __call__(self, model, inp, tgt, replace_mask, neg_idx):
        sel = tgt >= 0
        if not model.all_items_train:          # absent items are no negatives either
            neg_idx = neg_idx[model.train_index[neg_idx] >= 0]
        need = torch.cat([inp[inp >= 0], tgt[sel], neg_idx]).unique()   # embed only these
        emb = model.item_embeddings(need)
        table = torch.zeros(model.n_items, emb.shape[1], device=emb.device, dtype=emb.dtype)
        table = table.index_copy(0, need, emb)
        out = model.encode(inp, table, replace_mask)[sel]
        return sampled_softmax_loss(out, table[tgt[sel]], table[neg_idx], tgt[sel], neg_idx,
                                    model.cfg.temperature, model.training_bonus(inp, tgt, sel))


# train.loss -> its class (the config's choices for train.loss are these names)
SEQUENCE_LOSSES: dict[str, type[SequenceLoss]] = {"full": FullSoftmax, "sampled": SampledSoftmax}


def make_sequence_loss(train: TrainConfig) -> SequenceLoss:
    """The sequence stage's loss, as `train.loss` names it."""
    return SEQUENCE_LOSSES[train.loss](train)
