"""The training objectives are one place (vmr/model/objectives.py): each objective on its own
(windows, prediction padding, the corruption of a batch, the repeat term's pairs), the one
lookup `objective_of` and the config's choices from the registry, and no module outside
objectives.py compares an objective's name. (An objective registered at test time that
`vmr train` uses end to end: tests/test_model_kinds.py.)"""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from vmr.errors import VmrError
from vmr.model import history
from vmr.model.config import load_config
from vmr.model.config_keys import ModelConfig
from vmr.model.objectives import (OBJECTIVES, Causal, Masked, Objective, mask_for_prediction,
                                  objective_of, register)
from vmr.model.towers import pad_histories

PKG = Path(__file__).resolve().parent.parent / "vmr"


def _rows():
    """Left-padded windows of 6: two full, one short, one of a single item."""
    return torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 1, 2, 3], [-1, -1, -1, 4, 5, 6],
                         [-1, -1, -1, -1, -1, 9]])


def test_causal_predicts_the_next_item_at_every_position():
    c = Causal()
    assert c.causal_attention and c.prediction_slots == 0
    assert c.window(50) == (51, 2)              # 50 inputs and the item after each
    rows = _rows()
    inp, rm, tgt = c.training_batch(rows, 10, torch.device("cpu"))
    assert rm is None and torch.equal(inp, rows[:, :-1]) and torch.equal(tgt, rows[:, 1:])
    # every item after the first column is a target (a row's first item too, from padding)
    assert c.fixed_targets(rows) == float((tgt >= 0).sum()) == 5 + 5 + 3 + 1
    assert c.prediction_replace_mask(rows) is None
    assert pad_histories([np.array([1, 2, 3, 4])], 3, c).tolist() == [[2, 3, 4]]
    sel = tgt >= 0
    got, want = c.repeat_pairs(inp, tgt, sel), history.training_pairs(inp, sel, True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    # the target at position t saw inputs 0..t: the first target's history is its input alone
    rows_, cols, rec = got
    assert cols[rows_ == 0].tolist() == [1] and rec[rows_ == 0].tolist() == [0]


def test_masked_appends_a_mask_slot_and_attends_both_ways():
    m = Masked()
    assert not m.causal_attention and m.prediction_slots == 1
    assert m.window(50) == (50, 1)
    seq = pad_histories([np.array([1, 2, 3, 4, 5]), np.array([7])], 4, m)
    assert seq.tolist() == [[3, 4, 5, 0], [-1, -1, 7, 0]]     # the last 3 items, then the slot
    rm = m.prediction_replace_mask(seq)
    assert rm.tolist() == [[False, False, False, True]] * 2
    assert m.fixed_targets(_rows()) is None     # the targets are drawn at random


def test_masked_training_batch_is_the_seeded_corruption_at_the_configured_rate():
    m = Masked(ModelConfig(objective="masked", mask_rate=0.3))
    seq = torch.randint(0, 50, (4000, 10), generator=torch.Generator().manual_seed(1))
    seq[:, :2] = -1
    inp, rm, tgt = m.training_batch(seq, 50, torch.device("cpu"),
                                    torch.Generator().manual_seed(0))
    assert inp.shape == rm.shape == tgt.shape == seq.shape and rm.dtype == torch.bool
    want = mask_for_prediction(seq, 0.3, 50, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((inp, rm, tgt), want))
    chosen = tgt >= 0
    assert chosen[:, -1].all() and rm[:, -1].all()          # the predicted position: [mask]
    assert not chosen[:, :2].any()                          # padding is never a target
    assert 0.28 < chosen[:, 2:-1].float().mean().item() < 0.32
    inner = chosen.clone()
    inner[:, -1] = False
    assert 0.77 < rm[inner].float().mean().item() < 0.83
    assert torch.equal(tgt[chosen], seq[chosen]) and (tgt[~chosen] == -100).all()
    again = m.training_batch(seq, 50, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert torch.equal(again[0], inp)                        # the same seed, the same batch


def test_masked_repeat_pairs_read_the_original_items():
    m = Masked()                                            # originally [-1, 5, 6, 5, 7]
    inp = torch.tensor([[-1, 5, 9, 5, 0]])                  # 6 replaced by a random 9
    tgt = torch.tensor([[-100, -100, 6, -100, 7]])
    sel = tgt >= 0
    rows, cols, rec = m.repeat_pairs(inp, tgt, sel)
    want = history.training_pairs(torch.where(sel, tgt, inp), sel, False)
    assert all(torch.equal(a, b) for a, b in zip((rows, cols, rec), want))
    # target 7 (row 1) saw 5 (most recently one step back) and the original 6, not the 9
    assert sorted(zip(cols[rows == 1].tolist(), rec[rows == 1].tolist())) == [(5, 0), (6, 1)]


def test_objective_of_is_the_one_lookup_and_the_config_asks_the_registry():
    cfg = ModelConfig(objective="masked", mask_rate=0.4)
    obj = objective_of(cfg)
    assert type(obj) is Masked and obj.cfg is cfg and obj.name == "masked"
    assert type(objective_of(ModelConfig())) is Causal        # the default
    with pytest.raises(VmrError, match="unknown model.objective 'nope'"):
        objective_of(ModelConfig(objective="nope"))
    assert list(OBJECTIVES) == ["causal", "masked"]
    with pytest.raises(VmrError, match="model.objective must be one of causal, masked, got"):
        load_config(overrides=["model.objective=nope"])
    with pytest.raises(ValueError, match="empty or taken"):
        register(Masked)
    with pytest.raises(ValueError, match="empty or taken"):
        register(Objective)


def _objective_comparisons(source: str) -> list[str]:
    """Comparisons that test an objective by its name: with a registered objective's name (or a
    collection holding one), or of something named *objective* with a string (or strings)."""
    names = set(OBJECTIVES)

    def strings(o, pick):
        if isinstance(o, ast.Constant):
            return isinstance(o.value, str) and pick(o.value)
        return isinstance(o, (ast.Tuple, ast.List, ast.Set)) and any(
            isinstance(e, ast.Constant) and isinstance(e.value, str) and pick(e.value)
            for e in o.elts)

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if any(strings(o, names.__contains__) for o in operands) or (
                any(strings(o, lambda v: True) for o in operands)
                and any("objective" in ast.unparse(o) for o in operands
                        if not strings(o, lambda v: True))):
            found.append(ast.unparse(node))
    return found


def test_no_module_compares_an_objectives_name():
    own = PKG / "model" / "objectives.py"
    bad = {p.relative_to(PKG).as_posix(): hits for p in sorted(PKG.rglob("*.py"))
           if p != own and (hits := _objective_comparisons(p.read_text(encoding="utf-8")))}
    assert bad == {}, "ask the objective's object (vmr/model/objectives.py) instead"
    # the check itself finds the forms it looks for, and leaves other comparisons alone
    planted = ('if cfg.objective == "masked" or m.objective != "x" or "causal" == s '
               'or name in ("a", "masked") or kind == "vmr" or n == 2: pass')
    assert _objective_comparisons(planted) == [
        "cfg.objective == 'masked'", "m.objective != 'x'", "'causal' == s",
        "name in ('a', 'masked')"]
