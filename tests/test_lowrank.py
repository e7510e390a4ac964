"""train.lowrank: fine-tuning each loaded weight matrix as its start plus a trained rank-r update
(vmr/train/lowrank.py) -- the factor gradients, the rank of the update, that the ID rows and
vectors train as they are, exact resume, refusals."""

import json

import pytest
import torch

from helpers.transfer import (line_without_source, resumed_equals_straight, source_and_target,
                              train_target)
from vmr.errors import VmrError
from vmr.model.config import load_config
from vmr.model.rundir import read_checkpoint
from vmr.train.lowrank import LowRankUpdate


def test_factor_gradients_are_the_chain_rule_and_the_update_stays_low_rank():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5)
    w0 = lin.weight.detach().clone()
    lr = LowRankUpdate(lin, rank=2, free=set(), seed=3)
    assert lr.names == ["weight"]                       # the bias is a vector: not factored
    opt = torch.optim.SGD(lr.params() + [lin.bias], lr=0.1)
    x = torch.randn(8, 6)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        lin(x).pow(2).sum().backward()
        g = lin.weight.grad.clone()
        a, b = lr.a[0].detach().clone(), lr.b[0].detach().clone()
        lr.move_grads()
        assert lin.weight.grad is None
        assert torch.allclose(lr.b[0].grad, g @ a.t())
        assert torch.allclose(lr.a[0].grad, b.t() @ g)
        opt.step()
        lr.apply()
    delta = lin.weight.detach() - w0
    assert torch.allclose(delta, lr.b[0].detach() @ lr.a[0].detach(), atol=1e-6)
    assert float(delta.abs().max()) > 0
    assert int(torch.linalg.matrix_rank(delta)) <= 2


def test_the_start_is_the_loaded_model_and_state_round_trips():
    lin = torch.nn.Linear(4, 4)
    lr = LowRankUpdate(lin, rank=1, free=set(), seed=0)
    before = lin.weight.detach().clone()
    lr.apply()                                           # B = 0: nothing moves
    assert torch.equal(lin.weight.detach(), before)
    again = LowRankUpdate(lin, rank=1, free=set(), seed=1)
    again.load_state_dict(lr.state_dict())
    assert torch.equal(again.a[0].detach(), lr.a[0].detach())
    with pytest.raises(KeyError):
        LowRankUpdate(lin, rank=2, free=set()).load_state_dict(lr.state_dict())
    with pytest.raises(ValueError):
        LowRankUpdate(lin, rank=0, free=set())


def test_lowrank_config_errors():
    with pytest.raises(VmrError, match="train.lowrank must be"):
        load_config(None, ["train.lowrank=-1"])
    with pytest.raises(VmrError, match="train.anchor"):
        load_config(None, ["train.lowrank=2", "train.anchor=0.1"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return source_and_target(tmp_path_factory.mktemp("lowrank"))


def test_a_lowrank_run_moves_each_matrix_by_a_low_rank_update_and_frees_the_ids(setup, tmp_path):
    src = read_checkpoint(setup["run"] / "best.pt")["model"]
    train_target(setup, tmp_path / "lr", "train.epochs=2", "train.lr=0.01", "train.patience=100",
           "train.lowrank=2")
    ck = read_checkpoint(tmp_path / "lr" / "checkpoint.pt")
    key = "items.proj.text.weight"
    delta = ck["model"][key] - src[key]
    assert float(delta.abs().max()) > 0
    assert int(torch.linalg.matrix_rank(delta)) <= 2
    assert torch.equal(ck["lowrank"]["start"][key], src[key])
    assert "items.id_emb.weight" not in ck["lowrank"]["start"]
    assert float(ck["model"]["items.id_emb.weight"].abs().max()) > 0       # the IDs train
    assert "lowrank" not in torch.load(tmp_path / "lr" / "best.pt", weights_only=True)
    info = json.loads((tmp_path / "lr" / "run.json").read_text())
    assert info["label"].endswith("-init-lowrank2")


def test_resume_continues_the_lowrank_run_exactly(setup, tmp_path):
    assert resumed_equals_straight(setup, tmp_path, "train.lowrank=2")


def test_lowrank_without_a_source_is_refused(setup, tmp_path):
    line = line_without_source(setup, tmp_path, "train.lowrank=2")
    assert "train.lowrank" in line and "--init-from" in line
