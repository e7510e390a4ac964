"""Defects of the pre-training and masked objectives found in review (issue 12), each pinned by a
test that failed before its fix."""

import math

import torch

from vmr.model.config_keys import ModelConfig, PretrainConfig
from vmr.model.losses import mine_hard_negatives
from vmr.model.objectives import mask_for_prediction
from vmr.model.pretrain import PretrainHeads, active_terms, pretrain_losses
from vmr.model.recommender import Recommender


def test_hard_negative_mining_prefers_the_hardest_under_a_temperature():
    """Unit-vector similarities lie in [-1, 1]: without a temperature a softmax over them is
    nearly uniform. With the contrastive temperature the 10 hardest of 511 negatives must
    take most of the draws (uniform would give them 10/511 = 2%)."""
    g = torch.Generator().manual_seed(0)
    B = 512
    z = torch.nn.functional.normalize(torch.randn(B, 32, generator=g), dim=1)
    sim = z @ z.T
    hardest = (sim - 10 * torch.eye(B)).topk(10, dim=1).indices
    draws = torch.stack([mine_hard_negatives(sim, temperature=0.05, generator=g)
                         for _ in range(20)], 1)                        # [B, 20]
    share = (draws.unsqueeze(-1) == hardest.unsqueeze(1)).any(-1).float().mean()
    assert share > 0.5, float(share)
    assert not (draws == torch.arange(B).unsqueeze(1)).any()          # never the positive


def _encoder(id_fusion: str, n: int = 64):
    cfg = ModelConfig(d_model=16, n_heads=2, dropout=0.0, item_dropout=0.0,
                      id_fusion=id_fusion, item_id_emb=True)
    torch.manual_seed(0)
    model = Recommender(cfg, n, {"text": 4, "image": 4})
    same = torch.ones(n, 4)                 # every item has identical content
    model.items.set_features({"text": same, "image": same.clone()},
                             {"text": torch.ones(n, dtype=torch.bool),
                              "image": torch.ones(n, dtype=torch.bool)})
    return model


def test_pretraining_views_never_see_item_ids():
    """With identical content for all items, L_PWC can only fall below chance through the item
    IDs; the views must not carry them, so it stays at chance (log of the batch size)."""
    model = _encoder("token")
    heads = PretrainHeads(16)
    p = PretrainConfig(w_pwm=0.0, w_i=0.0, w_s=0.0, w_is=0.0)
    terms = active_terms(model.items, p)
    opt = torch.optim.Adam(list(model.parameters()) + list(heads.parameters()), lr=1e-2)
    idx = torch.arange(64)
    for _ in range(60):
        loss = pretrain_losses(model.items, heads, idx, p, terms)["pwc"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() > 0.9 * math.log(64), loss.item()


def test_masked_objective_always_masks_the_predicted_position():
    """The paper replaces the last position by [mask] always: no training row may show the
    target it must predict there (80/10/10 applies to the other chosen positions)."""
    seq = torch.arange(1, 9).repeat(4000, 1)
    inp, replace, tgt = mask_for_prediction(seq, 0.2, 100, torch.Generator().manual_seed(0))
    assert replace[:, -1].all()
    assert (tgt[:, -1] == seq[:, -1]).all()
    inner = tgt[:, :-1] >= 0
    kept = inner & ~replace[:, :-1] & (inp[:, :-1] == seq[:, :-1])
    assert 0.05 < kept.sum() / inner.sum() < 0.2            # 10% (+ random hits) elsewhere
