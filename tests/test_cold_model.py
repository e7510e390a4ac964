"""Scoring items without a trained ID: `model.id_dropout` and the item encoder's unknown items."""

import dataclasses

import pytest
import torch

from helpers import run_cli
from vmr.errors import VmrError
from vmr.model.config import load_config
from vmr.model.config_keys import ModelConfig
from vmr.model.registry import build_model, make_model_args, mark_unknown_ids

N, DIM = 60, 12


def _model(seed: int = 0, **kw):
    cfg = dataclasses.replace(ModelConfig(), d_model=16, **kw)
    torch.manual_seed(seed)
    model = build_model(make_model_args(cfg, N, {"text": DIM}))
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(N, DIM, generator=g)
    model.items.set_features({"text": feats}, {"text": torch.ones(N, dtype=torch.bool)})
    return model


def _content(enc, idx):
    """The item encoder's content part alone (s * c_j), by hand."""
    return enc.content_scale * enc.fuse(enc.tokens(idx, with_ids=False))


def test_default_model_is_unchanged_without_id_dropout():
    """id_dropout = 0: no new weight, no extra random draw, h_j = s * c_j + ID_j exactly."""
    model = _model()
    assert not any("unk" in k for k in model.state_dict())
    enc = model.items
    idx = torch.arange(N)
    enc.train()
    torch.manual_seed(7)
    got = enc(idx)
    after = torch.get_rng_state()
    torch.manual_seed(7)
    want = _content(enc, idx) + enc.id_emb.weight[idx]
    assert torch.equal(got, want)
    assert torch.equal(after, torch.get_rng_state())     # the same random draws, no more
    # an older checkpoint's model_args (no id_dropout key) build the very same weights
    torch.manual_seed(0)
    old = build_model({"kind": "vmr", "n_items": N, "dims": {"text": DIM},
                       "config": {k: v for k, v in dataclasses.asdict(model.cfg).items()
                                  if k != "id_dropout"}})
    new = _model().state_dict()
    assert list(old.state_dict()) == list(new)
    assert all(torch.equal(v, new[k]) for k, v in old.state_dict().items())


@pytest.mark.parametrize("fusion", ["residual", "token"])
def test_unknown_items_are_scored_from_content_alone(fusion):
    model = _model(id_fusion=fusion).eval()
    unknown = torch.tensor([3, 10, 11])
    before = model.item_embeddings().detach().clone()
    mark_unknown_ids(model, unknown)
    after = model.item_embeddings().detach()
    known = torch.ones(N, dtype=torch.bool)
    known[unknown] = False
    assert torch.equal(after[known], before[known])
    assert not torch.allclose(after[unknown], before[unknown])
    enc = model.items
    if fusion == "residual":
        want = _content(enc, unknown)
    else:       # the ID is added to every modality token: zero for an unknown item
        want = enc.fuse(enc.tokens(unknown, with_ids=False))
    assert torch.allclose(after[unknown], want.detach(), atol=1e-6)


def test_id_dropout_uses_the_learned_unknown_vector():
    model = _model(id_dropout=0.5)
    enc = model.items
    assert "items.unk_id" in model.state_dict()
    with torch.no_grad():
        enc.unk_id.fill_(0.25)
    idx = torch.arange(N).repeat(20)
    enc.train()
    torch.manual_seed(0)
    dropped = (enc.id_vectors(idx) == 0.25).all(1).float().mean().item()
    assert 0.4 < dropped < 0.6
    enc.eval()
    assert torch.equal(enc.id_vectors(idx), enc.id_emb(idx))       # no dropout in evaluation
    mark_unknown_ids(model, [5])
    assert torch.all(enc.id_vectors(torch.tensor([5, 6]))[0] == 0.25)
    assert torch.equal(enc.id_vectors(torch.tensor([6]))[0], enc.id_emb.weight[6])


def test_id_dropout_config_is_checked():
    assert load_config(overrides=["model.id_dropout=0.2"]).model.id_dropout == 0.2
    with pytest.raises(VmrError, match=r"model.id_dropout must be in \[0, 1\)"):
        load_config(overrides=["model.id_dropout=1.0"])
    with pytest.raises(VmrError, match="model.id_dropout = 0.2 needs model.kind = vmr"):
        load_config(overrides=["model.id_dropout=0.2", "model.kind=sasrec"])
    with pytest.raises(VmrError, match="item_id_emb false"):
        load_config(overrides=["model.id_dropout=0.2", "model.item_id_emb=false"])


def test_training_with_id_dropout_learns_the_unknown_vector(tmp_path):
    from helpers.synth import make_dataset
    from vmr.model.rundir import read_checkpoint

    ds = make_dataset(tmp_path, n_users=60, length=6)
    code, _, err = run_cli("train", "--data", ds, "--out", tmp_path / "run", "--set",
                           "model.id_dropout=0.5", "--set", "model.d_model=16", "--set",
                           "train.epochs=1", "--set", "train.device=cpu")
    assert code == 0, err
    unk = read_checkpoint(tmp_path / "run" / "best.pt")["model"]["items.unk_id"]
    assert unk.shape == (16,) and unk.abs().sum() > 0           # moved away from its zero start


@pytest.mark.parametrize("kind", ["vmr", "sasrec"])
@pytest.mark.parametrize("sampled", [False, True])
def test_training_loss_never_ranks_items_absent_at_training_time(kind, sampled):
    """Strict new-item protocol: the items that do not exist at training time are neither
    softmax rows nor sampled negatives, so no gradient can push them down; the loss equals the
    loss over the other items alone."""
    from vmr.model.losses import full_softmax_loss
    from vmr.model.registry import exclude_from_training

    model = _model(kind=kind).train() if kind == "vmr" else \
        build_model(make_model_args(dataclasses.replace(ModelConfig(), kind="sasrec", d_model=16),
                                    N, {})).train()
    for mod in model.modules():            # deterministic: dropout would draw differently
        if hasattr(mod, "p"):
            mod.p = 0.0
    absent = torch.tensor([2, 5, 40, 59])
    g = torch.Generator().manual_seed(3)
    known = torch.tensor([i for i in range(N) if i not in absent.tolist()])
    inp = known[torch.randint(0, len(known), (6, 5), generator=g)]
    tgt = known[torch.randint(0, len(known), (6, 5), generator=g)]
    neg = torch.arange(N) if sampled else None     # every item offered as a negative
    full = model(inp, tgt, None, neg)
    exclude_from_training(model, absent)
    model.zero_grad()
    loss = model(inp, tgt, None, neg)
    loss.backward()
    assert loss.item() < full.item()               # four fewer competitors
    table = model.item_embeddings().detach()
    keep = torch.ones(N, dtype=torch.bool)
    keep[absent] = False
    out = model.encode(inp, table, None).detach()[tgt >= 0]
    rank = keep.long().cumsum(0) - 1
    want = full_softmax_loss(out, table[keep], rank[tgt[tgt >= 0]], model.cfg.temperature)
    assert torch.allclose(loss.detach(), want, atol=1e-4)
    ids = model.items.id_emb.weight if kind == "vmr" else model.item_table.weight
    assert ids.grad[absent].abs().max() == 0
    assert ids.grad[known].abs().max() > 0
    exclude_from_training(model, [])               # an empty list changes nothing
    assert not model.all_items_train


def test_imputed_ids_recover_a_linear_map_from_content():
    """untrained_ids = imputed: at evaluation an unknown item's ID row is predicted from its
    content by a ridge map fitted on the trained items; with ID rows that *are* a linear
    function of content, a weak ridge recovers them for the unknown items."""
    model = _model(untrained_ids="imputed")
    enc = model.items
    enc.eval()
    idx = torch.arange(N)
    content = _content(enc, idx).detach()
    a = torch.randn(16, 16, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.no_grad():
        enc.id_emb.weight.copy_(content @ a + 0.05)
    unknown = torch.zeros(N, dtype=torch.bool)
    unknown[:10] = True
    mark_unknown_ids(model, torch.nonzero(unknown).flatten().tolist())
    pred = enc.imputed_ids(alpha=1e-6)
    assert torch.allclose(pred[:10], content[:10] @ a + 0.05, atol=1e-3)
    got = enc(idx)
    assert torch.allclose(got[:10], content[:10] + enc.imputed_ids()[:10], atol=1e-5)
    assert torch.allclose(got[10:], content[10:] + enc.id_emb.weight[10:], atol=1e-5)
    enc.p, enc.drop.p = 0.0, 0.0
    enc.train()                      # training never sees unknown items: zero, as before
    assert torch.allclose(enc(idx)[:10], content[:10], atol=1e-5)
    # nothing trained (zero-shot): nothing to fit, the rows stay zero
    mark_unknown_ids(model, list(range(N)))
    assert torch.count_nonzero(enc.imputed_ids()) == 0


def test_imputed_ids_config_and_training(tmp_path):
    with pytest.raises(VmrError, match="untrained_ids = imputed"):
        load_config(None, ["model.untrained_ids=imputed", "model.item_id_emb=false"])
    from helpers.synth import make_dataset

    ds = make_dataset(tmp_path / "d", n_users=40, length=6, seed=0)
    code, _, err = run_cli("train", "--data", ds, "--out",
                           tmp_path / "run", "--set", "model.d_model=16", "--set",
                           "train.epochs=1", "--set", "model.untrained_ids=imputed")
    assert code == 0, err
    assert 'untrained_ids = "imputed"' in (tmp_path / "run" / "config.toml").read_text()
    code, _, err = run_cli("eval", "--run", tmp_path / "run")
    assert code == 0, err
    assert (tmp_path / "run" / "metrics_test.json").exists()
