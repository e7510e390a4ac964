"""The pre-training stage: item-level contrastive and matching objectives (paper 3.1.3) over
batches of items, before the sequence stage. The losses themselves are in
vmr/model/pretrain.py; this is the loop, its log rows and its checkpoints."""

from __future__ import annotations

import time

import torch

from vmr.model import precision
from vmr.model.pretrain import TERMS, PretrainObjective, active_terms
from vmr.train.device_rng import set_rng_state


def pretrain_stage(st, state: dict | None) -> None:
    """st: vmr.train.state.TrainState; state: a pre-training checkpoint to resume from."""
    from tqdm import tqdm

    p, d = st.cfg.pretrain, st.dist
    enc = st.model.items
    terms = active_terms(enc, p)
    st.say(f"pre-training terms: {', '.join(f'{k}×{w:g}' for k, w in terms.items()) or 'none'}")
    if not terms:
        return
    objective = PretrainObjective(enc, st.heads, p, terms)
    opt = torch.optim.Adam(objective.parameters(), lr=p.lr, weight_decay=0.0)
    fwd = objective
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        fwd = DDP(objective, find_unused_parameters=True)
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start = state["epoch"]
    n = len(st.data.item_ids)
    for epoch in range(start + 1, p.epochs + 1):
        st.model.train()
        st.heads.train()
        g = torch.Generator().manual_seed(st.cfg.train.seed * 1_000_003 + 7919 * (epoch - 1) + 1)
        perm = torch.randperm(n, generator=g)
        tot, steps, t0 = {}, 0, time.time()
        bar = tqdm(range(0, n, p.batch_size), desc=f"pretrain {epoch}/{p.epochs}",
                   disable=st.quiet, leave=False, unit="batch", mininterval=1.0)
        for s in bar:
            batch = perm[s: s + p.batch_size]
            batch = batch[: len(batch) - len(batch) % d.world]
            if len(batch) < 2 * d.world:
                continue
            idx = batch[d.rank::d.world].to(st.device)
            with precision.autocast(st.device, st.cfg.train.amp):
                losses = fwd(idx)
            if not losses:
                continue
            loss = sum(terms[k] * v for k, v in losses.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in losses.items():
                tot[k] = tot.get(k, 0.0) + v.item()
            steps += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        row = {"stage": "pretrain", "epoch": epoch,
               "loss": sum(tot.values()) / max(steps, 1), "seconds": time.time() - t0}
        for k in TERMS:
            row[f"L_{k}"] = tot.get(k, 0.0) / max(steps, 1)
        st.log.append(row)
        st.save(st.run.last, st.checkpoint(opt, "pretrain", epoch))
        st.say(f"pretrain epoch {epoch}: loss {row['loss']:.4f} ({row['seconds']:.1f}s)")
        if st.threads is not None:
            st.threads.recheck(epoch)
    ck = st.checkpoint(None, "pretrain", p.epochs)
    st.save(st.run.pretrain, {k: v for k, v in ck.items() if k not in ("optimizer", "heads", "rng")})
