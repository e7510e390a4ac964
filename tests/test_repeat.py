"""The repeat term (vmr/model/history.py): the pairs it scores, its gradient through the fused
full-softmax loss, ranking with it, and the eval.history protocol setting end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import run_cli
from helpers.runs import build_runs
from vmr.evaluate.metrics import batch_ranks
from vmr.model import history
from vmr.model.config import config_from_dict, load_config
from vmr.model.losses import full_softmax_loss


def test_buckets_are_bit_lengths_capped_at_five():
    r = [0, 1, 2, 3, 4, 7, 8, 15, 16, 1000]
    want = [min(x.bit_length(), 5) for x in r]
    assert history.recency_bucket(np.array(r)).tolist() == want
    assert history.recency_bucket(torch.tensor(r)).tolist() == want


def test_history_pairs_keep_each_items_most_recent_occurrence():
    rows, cols, rec = history.history_pairs([np.array([5, 3, 5, 9]), np.array([], dtype=np.int64),
                                             np.array([2])])
    got = sorted(zip(rows.tolist(), cols.tolist(), rec.tolist()))
    assert got == [(0, 3, 2), (0, 5, 1), (0, 9, 0), (2, 2, 0)]


def _brute_training_pairs(hist, sel, inclusive):
    out, n = set(), 0
    for b in range(hist.shape[0]):
        for t in range(hist.shape[1]):
            if not sel[b, t]:
                continue
            before = [hist[b, p].item() for p in range(t + 1 if inclusive else t)]
            last = (t if inclusive else t - 1)
            for p in range(last, -1, -1):
                j = before[p]
                if j >= 0 and j not in before[p + 1:]:
                    out.add((n, j, last - p))
            n += 1
    return out


@pytest.mark.parametrize("inclusive", [True, False])
def test_training_pairs_match_a_brute_force(inclusive):
    g = torch.Generator().manual_seed(0)
    hist = torch.randint(0, 6, (7, 9), generator=g)           # small ids: many repeats
    hist[:3, :4] = -1                                          # left padding
    sel = (torch.rand(hist.shape, generator=g) < 0.6) & (hist >= 0)
    rows, cols, rec = history.training_pairs(hist, sel, inclusive)
    got = set(zip(rows.tolist(), cols.tolist(), rec.tolist()))
    assert len(got) == len(rows)                               # each pair once
    assert got == _brute_training_pairs(hist, sel, inclusive)


@pytest.mark.parametrize("temperature", [0.0, 0.1])
def test_full_softmax_bonus_matches_plain_autograd(temperature):
    g = torch.Generator().manual_seed(1)
    out = torch.randn(5, 4, generator=g, requires_grad=True)
    table = torch.randn(8, 4, generator=g, requires_grad=True)
    target = torch.tensor([1, 3, 3, 0, 7])
    bias = torch.tensor([-2.0, 0.5, 1.0], requires_grad=True)
    rows, cols = torch.tensor([0, 0, 2, 4, 4]), torch.tensor([1, 6, 3, 2, 5])
    which = torch.tensor([0, 1, 2, 0, 2])
    loss = full_softmax_loss(out, table, target, temperature, (rows, cols, bias[which]))
    loss.backward()
    got = [out.grad.clone(), table.grad.clone(), bias.grad.clone()]
    for t in (out, table, bias):
        t.grad = None
    u = F.normalize(out, dim=-1) / temperature if temperature else out
    dense = torch.zeros(5, 8).index_put((rows, cols), bias[which])
    ref = F.cross_entropy(u @ table.T + dense, target)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(got, [out.grad, table.grad, bias.grad]):
        assert torch.allclose(a, b, atol=1e-5)
    assert got[2].abs().sum() > 0                              # the term does learn


def test_ranking_adds_the_repeat_term_to_history_items_only():
    g = torch.Generator().manual_seed(2)
    users, items = torch.randn(3, 4, generator=g), torch.randn(10, 4, generator=g)
    hist = [np.array([1, 2, 1]), np.array([4]), np.array([], dtype=np.int64)]
    targets = torch.tensor([1, 5, 9])
    bias = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0])
    got = batch_ranks(users, items, targets, None, item_chunk=3, history_bias=bias,
                      ranked_histories=hist)
    scores = users @ items.T
    scores[0, 1] += -1.0            # item 1: most recent occurrence is the last item (r = 0)
    scores[0, 2] += -2.0            # item 2: r = 1
    scores[1, 4] += -1.0
    want = [1 + sum(1 for j in range(10) if j != t and scores[b, j] >= scores[b, t])
            for b, t in enumerate(targets.tolist())]
    assert got.tolist() == want
    plain = batch_ranks(users, items, targets, None, item_chunk=3)
    assert got.tolist() != plain.tolist() or torch.equal(scores, users @ items.T)


def test_eval_history_setting_and_old_checkpoints():
    cfg = load_config(overrides=["eval.history=include"])
    assert cfg.eval.history == "include" and cfg.model.repeat_bias
    with pytest.raises(Exception, match="eval.history must be one of"):
        load_config(overrides=["eval.history=sometimes"])
    assert load_config(overrides=["train.loss=sampled"]).model.repeat_bias
    old = config_from_dict({"model": {"kind": "sasrec"}})     # a checkpoint from before the key
    assert old.model.repeat_bias is False


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build_runs(tmp_path_factory.mktemp("repeatruns"))


def test_a_run_trained_under_include_is_evaluated_under_include(runs, tmp_path):
    run = tmp_path / "inc"
    code, _, err = run_cli("train", "--data", str(runs["data"]), "--out", str(run),
                           "--set", "model.kind=sasrec", "--set", "train.epochs=2",
                           "--set", "model.d_model=16", "--set", "eval.history=include")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["eval_history"] == "include"
    code, out, err = run_cli("eval", "--run", str(run))
    assert code == 0, err
    m = json.loads((run / "metrics_test.json").read_text())
    assert m["protocol"]["include_history"] is True and "history included" in out
    code, out, err = run_cli("eval", "--run", str(run), "--exclude-history")
    assert code == 0, err
    assert json.loads((run / "metrics_test.json").read_text())["protocol"]["include_history"] \
        is False
    # the default run's protocol is the default one
    code, out, err = run_cli("eval", "--run", str(runs["sasrec"]))
    assert code == 0 and "history excluded" in out
    # the repeat term was trained and travels with an export
    from vmr.model.loaded import load_run
    bias = load_run(run).history_bias()
    assert bias is not None and bias.shape == (history.N_BUCKETS,) and bias.abs().sum() > 0
    code, _, err = run_cli("export", "--run", str(run), "--out", str(tmp_path / "exp"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["repeat_term"]["values"] == pytest.approx(bias.tolist(), abs=1e-5)


def test_a_per_item_repeat_term_trains_and_ranks(tmp_path):
    """model.repeat_item_bias: one more learned scalar per item, in the loss and the ranking."""
    from helpers.synth import make_dataset
    from vmr.evaluate.metrics import evaluate_model
    from vmr.model.loaded import load_run

    ds = make_dataset(tmp_path / "d", n_users=40, length=6)
    run = tmp_path / "r"
    code, _, err = run_cli("train", "--data", ds, "--out", run, "--set", "model.d_model=16",
                           "--set", "train.epochs=2", "--set", "model.repeat_item_bias=true")
    assert code == 0, err
    loaded = load_run(run)
    items = loaded.item_repeat_bias()
    assert items is not None and items.shape == (len(loaded.dataset.item_ids),)
    assert items.abs().sum() > 0
    pairs = loaded.dataset.split_sequences("test")
    hist, tgt = [h for h, _ in pairs], [t for _, t in pairs]
    with_items = evaluate_model(loaded, hist, tgt, [10], include_history=True, return_ranks=True)
    loaded.item_repeat_bias = lambda: None                     # the recency part alone
    without = evaluate_model(loaded, hist, tgt, [10], include_history=True, return_ranks=True)
    assert not torch.equal(with_items["ranks"], without["ranks"])
    with pytest.raises(Exception, match="repeat_item_bias"):
        load_config(overrides=["model.repeat_item_bias=true", "model.repeat_bias=false"])


def test_sampled_softmax_bonus_matches_plain_autograd():
    """The sampled loss adds the term to the target's logit and to the negatives it names."""
    from vmr.model.losses import sampled_softmax_loss

    g = torch.Generator().manual_seed(3)
    out = torch.randn(3, 4, generator=g, requires_grad=True)
    items = torch.randn(9, 4, generator=g)
    target, neg_idx = torch.tensor([2, 5, 7]), torch.tensor([0, 2, 4, 8])
    bias = torch.tensor([-1.0, 0.7], requires_grad=True)
    rows, cols = torch.tensor([0, 0, 1, 2]), torch.tensor([2, 4, 8, 3])
    which = torch.tensor([0, 1, 0, 1])
    loss = sampled_softmax_loss(out, items[target], items[neg_idx], target, neg_idx, 0.0,
                                (rows, cols, bias[which]))
    loss.backward()
    got = [out.grad.clone(), bias.grad.clone()]
    out.grad, bias.grad = None, None
    dense = torch.zeros(3, 9).index_put((rows, cols), bias[which])
    logits = out @ items.T + dense
    cand = torch.cat([logits.gather(1, target[:, None]), logits[:, neg_idx]], 1)
    cand = cand.masked_fill(torch.cat([torch.zeros(3, 1, dtype=torch.bool),
                                       neg_idx[None, :] == target[:, None]], 1), float("-inf"))
    ref = F.cross_entropy(cand, torch.zeros(3, dtype=torch.long))
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(got[0], out.grad, atol=1e-6) and torch.allclose(got[1], bias.grad)
