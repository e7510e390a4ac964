"""One optimiser step of the sequence stage: the optimizer (with discriminative learning rates for
a transferred run), the parameters it holds back, and the step itself (compiled and distributed
forward where those are on; the low-rank factors' gradients before it, the anchor's pull and the
weight average after it)."""

from __future__ import annotations

import torch

from vmr.model import precision
from vmr.model.losses import make_sequence_loss
from vmr.model.objectives import Objective
from vmr.train.state import TrainState


def make_optimizer(st: TrainState) -> torch.optim.Optimizer:
    """Adam over the model. A run started from another catalogue (`--init-from`) with
    train.transfer_lr != 1 trains the loaded weights at lr x transfer_lr and the fresh item-ID
    rows at lr (discriminative learning rates; two parameter groups, also when resumed);
    train.lowrank adds a group of the low-rank factors, at lr x transfer_lr."""
    t, model = st.cfg.train, st.model
    factors = ([{"params": st.lowrank.params(), "lr": t.lr * t.transfer_lr}]
               if st.lowrank is not None else [])
    if not (st.from_source and t.transfer_lr != 1.0):
        groups = [{"params": list(model.parameters()), "lr": t.lr}]
    else:
        ids = {id(p) for p in id_params(model)}
        own = [p for p in model.parameters() if id(p) in ids]
        loaded = [p for p in model.parameters() if id(p) not in ids]
        groups = [{"params": own, "lr": t.lr}, {"params": loaded, "lr": t.lr * t.transfer_lr}]
    return torch.optim.Adam(groups + factors, lr=t.lr, weight_decay=t.weight_decay)


def content_params(st: TrainState) -> list[torch.nn.Parameter]:
    """The content parts --freeze fixes, for train.freeze_epochs of a --init-from run."""
    if not (st.from_source and st.cfg.train.freeze_epochs):
        return []
    from vmr.train.init_from import content_parts

    return [p for _, params in content_parts(st.model) for p in params]


def id_params(model) -> list[torch.nn.Parameter]:
    """The model's per-item ID parameters (its kind's `id_keys`, where they are parameters)."""
    keys = set(getattr(model, "id_keys", ()))
    return [p for name, p in model.named_parameters() if name in keys]


def batch_step(st: TrainState, opt, objective: Objective):
    """step(x, per_batch) -> (mean loss, targets): one optimiser step on a batch of rows, through
    the compiled (CUDA, train.compile) and distributed (torchrun) forward when those are on."""
    t, model = st.cfg.train, st.model
    fwd = model
    if t.compile and st.device.type == "cuda":
        fwd = torch.compile(model)
    if st.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        fwd = DDP(fwd, find_unused_parameters=True)
    n_items, loss_fn = len(st.data.item_ids), make_sequence_loss(t)
    autocast = precision.autocast(st.device, t.amp)

    def step(x, per_batch, hold=()):
        with autocast:
            ce, n_tgt = sequence_loss(fwd, x, objective, loss_fn, n_items, st.device)
            loss = ce * (n_tgt / per_batch) if per_batch else ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in hold:   # id_warmup, freeze_epochs: Adam skips a parameter without grad
            p.grad = None
        if st.lowrank is not None:
            st.lowrank.move_grads()
        opt.step()
        if st.lowrank is not None:
            st.lowrank.apply()
        if st.anchor is not None:
            st.anchor.step()
        if st.ema is not None:
            st.ema.update()
        return ce, n_tgt
    return step


def sequence_loss(model, x, objective: Objective, loss, n_items, device):
    """One batch of the sequence stage -> (mean loss, number of targets). x [B, W] rows, made
    into inputs and targets by the objective; loss: the stage's
    (vmr.model.losses.make_sequence_loss)."""
    neg_idx = loss.negatives(n_items, device)
    inp, rm, tgt = objective.training_batch(x, n_items, device)
    return model(inp, tgt, rm, neg_idx, loss), int((tgt >= 0).sum())
