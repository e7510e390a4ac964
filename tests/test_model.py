import numpy as np
import pytest
import torch

from vmr.data.splits import n_train, target_pairs
from vmr.model.blocks import attention_mask
from vmr.model.config_keys import ModelConfig
from vmr.model.kinds import model_kind
from vmr.model.objectives import Causal, Masked, mask_for_prediction
from vmr.model.towers import histories_to_user_vectors, pad_histories, trim_padding
from vmr.train.batches import length_bucketed_batches, window_rows

OBJECTIVE = {False: Causal(), True: Masked()}      # by "masked"


def _model(**kw):
    cfg = ModelConfig(**{"d_model": 16, "n_heads": 2, "dropout": 0.0, **kw})
    torch.manual_seed(0)
    m = model_kind(cfg.kind)(cfg, 12, {"text": 5, "image": 3})
    if m.items is not None:
        g = torch.Generator().manual_seed(1)
        m.items.set_features({"text": torch.randn(12, 5, generator=g),
                              "image": torch.randn(12, 3, generator=g)},
                             {"text": torch.ones(12, dtype=torch.bool),
                              "image": torch.arange(12) % 3 != 0})
    return m.eval()


def test_item_embeddings_shape_and_unit_tokens():
    m = _model()
    h = m.item_embeddings()
    assert h.shape == (12, 16)
    # max-pool over L2-normalised tokens: no component beyond 1, norm at most sqrt(#tokens)
    assert h.abs().max() <= 1 + 1e-6
    assert (h.norm(dim=1) <= 2 ** 0.5 + 1e-5).all() and (h.norm(dim=1) > 0.3).all()


def test_absent_modality_uses_the_mask_token_not_its_features():
    m = _model()
    before = m.item_embeddings()[0].clone()          # item 0 has no image
    m.items.feat_image[0] = 100.0
    after = m.item_embeddings()[0]
    assert torch.allclose(before, after)
    m.items.feat_image[1] = 100.0                    # item 1 has one: it must change
    assert not torch.allclose(m.item_embeddings()[1], before)


@pytest.mark.parametrize("share", ["tie", "init", "none"])
def test_parameter_sharing_modes(share):
    m = _model(share=share, item_layers=1, n_layers=2)
    item_blk, seq_blk = m.items.blocks[0], m.seq_blocks[0]
    if share == "tie":
        assert item_blk is seq_blk
        assert item_blk.qkv.weight.data_ptr() == seq_blk.qkv.weight.data_ptr()
    else:
        assert item_blk is not seq_blk
        assert not torch.equal(item_blk.qkv.weight, seq_blk.qkv.weight)
        m.copy_item_blocks_into_sequence()
        same = torch.equal(item_blk.qkv.weight, seq_blk.qkv.weight)
        assert same == (share == "init")
        assert item_blk.qkv.weight.data_ptr() != seq_blk.qkv.weight.data_ptr()


def test_tied_blocks_get_gradients_from_both_towers():
    m = _model(share="tie").train()
    table = m.item_embeddings()
    out = m.encode(torch.tensor([[0, 1, 2]]), table)
    out.sum().backward()
    assert m.seq_blocks[0].qkv.weight.grad is not None
    assert len({id(p) for p in m.parameters()}) == len(list(m.parameters()))


def test_causal_attention_ignores_the_future_and_padding():
    m = _model(objective="causal")
    table = m.item_embeddings()
    a = m.encode(torch.tensor([[-1, 3, 4, 5]]), table)
    b = m.encode(torch.tensor([[-1, 3, 4, 9]]), table)
    assert torch.allclose(a[0, 1:3], b[0, 1:3], atol=1e-6)      # earlier positions unchanged
    c = m.encode(torch.tensor([[-1, -1, 4, 5]]), table)
    d = m.encode(torch.tensor([[-1, 7, 4, 5]]), table)[:, 1:]
    assert not torch.allclose(c[0, -1], d[0, -1])                  # real history matters
    e = m.encode(torch.tensor([[-1, -1, 4, 5]]), table)[:, -2:]
    f = m.encode(torch.tensor([[-1, 4, 5]]), table)[:, -2:]
    assert torch.allclose(e, f, atol=1e-5)                          # padding does not


def test_attention_mask_never_leaves_a_row_empty():
    pad = torch.tensor([[True, True, False]])
    mask = attention_mask(pad, causal=True)
    assert torch.isfinite(mask).any(-1).all()
    assert mask[0, 0, 2, 0] == float("-inf") and mask[0, 0, 2, 2] == 0


def test_masked_objective_user_vector_reads_the_appended_mask_slot():
    m = _model(objective="masked", max_len=5)
    seq = pad_histories([np.array([1, 2, 3])], 5, Masked())
    assert seq.tolist() == [[-1, 1, 2, 3, 0]]
    u = m.user_vectors(seq, m.item_embeddings())
    assert u.shape == (1, 16)


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_last_position_shortcut_equals_the_full_encoder(objective):
    m = _model(objective=objective, max_len=6, n_layers=2)
    table = m.item_embeddings()
    seq = pad_histories([np.array([1, 2, 3]), np.array([4]), np.array([5, 6, 7, 8, 9, 10])], 6,
                        m.seq.objective)
    full = m.encode(seq, table)[:, -1]
    last = m.encode(seq, table, last_only=True)
    assert last.shape == (3, 1, 16)
    assert torch.allclose(full, last[:, 0], atol=1e-5)


def test_user_vectors_in_length_chunks_equal_one_by_one():
    m = _model(max_len=6)
    table = m.item_embeddings()
    rng = np.random.default_rng(0)
    hists = [rng.integers(0, 12, rng.integers(1, 9)) for _ in range(23)]
    one = torch.cat([m.user_vectors(pad_histories([h], min(len(h), 6), Causal()), table)
                     for h in hists])
    for tokens, rows in ((1, 1), (12, 4), (10 ** 6, 2048)):   # a chunk per user .. one chunk
        got = histories_to_user_vectors(m, hists, table, torch.device("cpu"), tokens, rows)
        assert torch.allclose(got, one, atol=1e-5)


def test_sasrec_has_an_id_table_and_no_item_encoder():
    m = _model(kind="sasrec")
    assert m.items is None and m.item_embeddings().shape == (12, 16)


def test_leave_one_out_helpers():
    assert [n_train(k) for k in (1, 2, 3, 6)] == [1, 1, 1, 4]
    seqs = [np.array([1, 2, 3, 4]), np.array([5, 6]), np.array([7])]
    h, t, rows = target_pairs(seqs, "valid")
    assert [x.tolist() for x in h] == [[1, 2]] and t.tolist() == [3] and rows.tolist() == [0]
    h, t, rows = target_pairs(seqs, "test")
    assert [x.tolist() for x in h] == [[1, 2, 3], [5]] and t.tolist() == [4, 6]


def test_window_rows_cover_every_transition_once():
    p = [np.arange(10)]
    rows = window_rows(p, width=4, min_len=2)
    pairs = set()
    for r in rows.tolist():
        r = [x for x in r if x >= 0]
        for a, b in zip(r, r[1:]):
            assert (a, b) not in pairs
            pairs.add((a, b))
    assert pairs == {(i, i + 1) for i in range(9)}


def test_trim_padding_and_bucketing():
    rows = torch.tensor([[-1, -1, 1, 2], [-1, 3, 4, 5]])
    assert trim_padding(rows).shape == (2, 3)
    g = torch.Generator().manual_seed(0)
    many = window_rows([np.arange(k + 2) for k in range(40)], 50, 2)
    batches = length_bucketed_batches(many, 8, g)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(many)))


def test_masking_rates_and_last_position():
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 50, (4000, 10))
    seq[:, :2] = -1
    inp, rm, tgt = mask_for_prediction(seq, 0.2, 50, g)
    chosen = tgt != -100
    assert chosen[:, -1].all()
    assert not chosen[:, :2].any()                                  # padding never a target
    share = chosen[:, 2:-1].float().mean().item()
    assert 0.18 < share < 0.22
    assert rm[:, -1].all()                            # the predicted position: always [mask]
    inner = chosen.clone()
    inner[:, -1] = False
    masked_share = rm[inner].float().mean().item()
    assert 0.77 < masked_share < 0.83
    unchanged = (inp == seq)[inner & ~rm].float().mean().item()
    assert 0.45 < unchanged < 0.56                                  # half of the 20% non-[mask]


def _block_reference(blk, x):
    """The general attention path of a Block, written out (no dropout)."""
    B, L, d = x.shape
    h = blk.n_heads
    q, k, v = blk.qkv(x).view(B, L, 3, h, d // h).permute(2, 0, 3, 1, 4)
    att = ((q @ k.transpose(-1, -2)) / (d // h) ** 0.5).softmax(-1)
    y = (att @ v).transpose(1, 2).reshape(B, L, d)
    x = blk.ln1(x + blk.out(y))
    return blk.ln2(x + blk.ff2(torch.nn.functional.gelu(blk.ff1(x))))


def test_single_token_block_equals_the_general_attention():
    from vmr.model.blocks import Block

    torch.manual_seed(0)
    blk = Block(16, 4, 2, dropout=0.3).eval()
    x = torch.randn(7, 1, 16)
    assert torch.allclose(blk(x, None), _block_reference(blk, x), atol=1e-6)
    # a longer sequence still takes the general path
    x2 = torch.randn(3, 4, 16)
    assert torch.allclose(blk(x2, None), _block_reference(blk, x2), atol=1e-5)


def test_single_token_block_drops_whole_heads_in_training():
    from vmr.model.blocks import Block

    torch.manual_seed(0)
    blk = Block(8, 2, 2, dropout=0.0).train()
    x = torch.randn(400, 1, 8)
    # attention dropout alone: each head's weight (exactly 1) is dropped or scaled by 1/(1-p)
    w, b = blk.qkv.weight, blk.qkv.bias
    v = torch.nn.functional.linear(x, w[16:], b[16:]).view(400, 2, 4)
    blk.attn_drop.p = 0.5
    torch.manual_seed(1)
    got = blk(x, None)
    torch.manual_seed(1)
    keep = (torch.rand(400, 1, 2, 1) >= 0.5).float() * 2.0
    y = (v.view(400, 1, 2, 4) * keep).reshape(400, 1, 8)
    h = blk.ln1(x + blk.out(y))
    want = blk.ln2(h + blk.ff2(torch.nn.functional.gelu(blk.ff1(h))))
    assert torch.allclose(got, want, atol=1e-6)
    assert 0.8 < float(keep.mean()) < 1.2     # about half the heads kept, each scaled by 2
    assert not torch.allclose(got, blk.eval()(x, None), atol=1e-3)


def _pad_reference(histories, max_len, masked):
    keep = max_len - 1 if masked else max_len
    out = torch.full((len(histories), max_len), -1, dtype=torch.long)
    for i, h in enumerate(histories):
        h = list(h)[len(h) - min(len(h), keep):]
        end = keep
        for j, item in enumerate(h):
            out[i, end - len(h) + j] = int(item)
        if masked:
            out[i, max_len - 1] = 0
    return out


@pytest.mark.parametrize("masked", [False, True])
def test_pad_histories_matches_a_plain_loop(masked):
    rng = np.random.default_rng(3)
    hists = [rng.integers(0, 50, rng.integers(0, 12)) for _ in range(40)] + [np.array([], dtype=np.int64)]
    for max_len in (1, 2, 5, 11, 20):
        if masked and max_len == 1:
            got = pad_histories(hists, 1, Masked())
            assert got.tolist() == [[0]] * len(hists)
            continue
        assert torch.equal(pad_histories(hists, max_len, OBJECTIVE[masked]),
                           _pad_reference(hists, max_len, masked))
    # lists and tensors are accepted as well as arrays
    assert pad_histories([[1, 2], torch.tensor([3])], 3, Causal()).tolist() == [[-1, 1, 2],
                                                                                 [-1, -1, 3]]
