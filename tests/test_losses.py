import math

import pytest
import torch
import torch.nn.functional as F

from vmr.model.losses import (InfoNCE, MatchingLoss, full_softmax_loss, mine_hard_negatives,
                              sampled_softmax_loss)


def test_infonce_known_value_for_orthonormal_pairs():
    loss_fn = InfoNCE(init_tau=2.0)
    a = torch.eye(4)
    # a_j . b_k = 1 if j == k else 0 -> each row: -log(e^2 / (e^2 + 3))
    expected = -math.log(math.exp(2) / (math.exp(2) + 3))
    assert float(loss_fn(a, a.clone())) == pytest.approx(expected, rel=1e-6)


def test_infonce_tau_is_clamped_and_learnable():
    loss_fn = InfoNCE(init_tau=1000.0)
    assert float(loss_fn.tau) == pytest.approx(100.0)
    loss_fn = InfoNCE(init_tau=5.0)
    a = torch.randn(6, 3)
    loss_fn(a, a + 0.1).backward()
    assert loss_fn.log_tau.grad is not None and loss_fn.log_tau.grad != 0


def test_infonce_is_symmetric_and_prefers_aligned_pairs():
    torch.manual_seed(0)
    loss_fn = InfoNCE(init_tau=10.0)
    a = torch.randn(8, 5)
    assert float(loss_fn(a, a)) < float(loss_fn(a, a[torch.randperm(8)]))
    b = torch.randn(8, 5)
    assert float(loss_fn(a, b)) == pytest.approx(float(loss_fn(b, a)), rel=1e-6)


def test_matching_loss_is_log2_for_a_zero_head():
    m = MatchingLoss(4)
    torch.nn.init.zeros_(m.head.weight)
    torch.nn.init.zeros_(m.head.bias)
    loss = m(torch.randn(3, 4), torch.randn(3, 4))
    assert float(loss) == pytest.approx(math.log(2), rel=1e-6)


def test_matching_loss_rewards_a_separating_head():
    m = MatchingLoss(1)
    with torch.no_grad():
        m.head.weight.fill_(5.0)
        m.head.bias.zero_()
    good = float(m(torch.ones(4, 1), -torch.ones(4, 1)))
    bad = float(m(-torch.ones(4, 1), torch.ones(4, 1)))
    assert good < 0.01 < bad


def test_hard_negatives_never_pick_the_positive_and_prefer_similar_items():
    sim = torch.zeros(5, 5)
    sim[0, 3] = 50.0                     # item 3 is by far the hardest negative of item 0
    sim += torch.eye(5) * 100            # the positive is the most similar, but never chosen
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        neg = mine_hard_negatives(sim, 1.0, g)
        assert (neg != torch.arange(5)).all()
        assert int(neg[0]) == 3


def test_full_softmax_loss_matches_cross_entropy_values_and_gradients():
    torch.manual_seed(1)
    u = torch.randn(9, 6, requires_grad=True)
    t = torch.randn(13, 6, requires_grad=True)
    target = torch.randint(0, 13, (9,))
    ours = full_softmax_loss(u, t, target)
    g1 = torch.autograd.grad(ours, [u, t])
    ref = F.cross_entropy(u @ t.T, target)
    g2 = torch.autograd.grad(ref, [u, t])
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-6)


def test_full_softmax_loss_with_temperature_normalises_users():
    u = torch.tensor([[3.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = full_softmax_loss(u, t, torch.tensor([0]), temperature=0.5)
    # normalised u = (1, 0) -> logits (2, 0)
    assert float(loss) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)


def test_sampled_softmax_masks_accidental_hits():
    out = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neg_idx = torch.tensor([7, 8])
    # negative 7 equals the target: masked, so logits are (1 | -inf, 0)
    loss = sampled_softmax_loss(out, pos, neg, torch.tensor([7]), neg_idx)
    assert float(loss) == pytest.approx(-math.log(math.e / (math.e + 1)), rel=1e-6)


def test_full_softmax_loss_under_cpu_autocast_is_float32_with_bfloat16_products():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(6, 8, generator=g, requires_grad=True)
    table = torch.randn(20, 8, generator=g, requires_grad=True)
    t = torch.randint(0, 20, (6,), generator=g)
    want = full_softmax_loss(u, table, t)
    want.backward()
    gu, gt = u.grad.clone(), table.grad.clone()
    u.grad = table.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = full_softmax_loss(u, table, t)
    got.backward()
    assert got.dtype == torch.float32
    assert u.grad.dtype == torch.float32 and table.grad.dtype == torch.float32
    # bfloat16 operands (8-bit mantissa): close to float32, but not equal to it
    assert float(got) == pytest.approx(float(want), rel=2e-2) and float(got) != float(want)
    assert torch.allclose(u.grad, gu, rtol=5e-2, atol=5e-3)
    assert torch.allclose(table.grad, gt, rtol=5e-2, atol=5e-3)
    # the same as a float32 cross-entropy of the bfloat16-rounded operands, up to the rounding
    # of the logits themselves to bfloat16
    ub, tb = u.detach().bfloat16().float(), table.detach().bfloat16().float()
    ref = F.cross_entropy((ub @ tb.T).bfloat16().float(), t)
    assert float(got) == pytest.approx(float(ref), abs=1e-5)
