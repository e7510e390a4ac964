"""train.anchor: fine-tuning pulled back toward the source's weights after every step
(vmr/train/anchor.py) -- its arithmetic, that the ID rows stay free, exact resume, refusals."""

import json

import pytest
import torch

from helpers.transfer import (line_without_source, resumed_equals_straight, source_and_target,
                              train_target)
from vmr.errors import VmrError
from vmr.model.config import load_config
from vmr.model.rundir import read_checkpoint
from vmr.train.anchor import StartAnchor


def test_each_pull_closes_its_fraction_of_the_gap_and_leaves_free_weights():
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(0.0)
    anchor = StartAnchor(lin, pull=0.25, free={"bias"})
    with torch.no_grad():
        lin.weight.fill_(5.0)
        lin.bias.fill_(3.0)
    assert anchor.distance() == pytest.approx(4.0 * 2 ** 0.5)
    anchor.step()                       # 5 + 0.25 * (1 - 5) = 4
    assert torch.allclose(lin.weight, torch.full((1, 2), 4.0))
    assert float(lin.bias.detach()) == 3.0      # free: not pulled
    again = StartAnchor(lin, pull=0.25, free={"bias"})
    again.load_state_dict(anchor.state_dict())
    assert torch.equal(again.start[0], torch.ones(1, 2))
    with pytest.raises(ValueError):
        StartAnchor(lin, pull=1.0, free=set())


def test_anchor_outside_its_range_is_a_config_error():
    with pytest.raises(VmrError, match="train.anchor must be in"):
        load_config(None, ["train.anchor=-0.1"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return source_and_target(tmp_path_factory.mktemp("anchor"))


def _drift(a: dict, b: dict, key: str) -> float:
    return float((a[key] - b[key]).abs().max())


def test_a_strong_anchor_holds_the_loaded_weights_and_frees_the_ids(setup, tmp_path):
    src = read_checkpoint(setup["run"] / "best.pt")["model"]
    common = ["train.epochs=2", "train.lr=0.01", "train.patience=100"]
    train_target(setup, tmp_path / "plain", *common)
    train_target(setup, tmp_path / "held", *common, "train.anchor=0.9")
    plain = read_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"]
    held = read_checkpoint(tmp_path / "held" / "checkpoint.pt")
    key = "items.proj.text.weight"
    assert _drift(held["model"], src, key) < _drift(plain, src, key) / 5
    assert float(held["model"]["items.id_emb.weight"].abs().max()) > 0   # the IDs train
    assert held["anchor"]["pull"] == 0.9
    assert torch.equal(held["anchor"]["start"][key], src[key])           # the start is the source
    assert "items.id_emb.weight" not in held["anchor"]["start"]
    assert "anchor" not in torch.load(tmp_path / "held" / "best.pt", weights_only=True)
    info = json.loads((tmp_path / "held" / "run.json").read_text())
    assert info["label"].endswith("-init-anchor0.9")


def test_resume_continues_the_anchored_run_exactly(setup, tmp_path):
    assert resumed_equals_straight(setup, tmp_path, "train.anchor=0.1")


def test_anchor_without_a_source_is_refused(setup, tmp_path):
    line = line_without_source(setup, tmp_path, "train.anchor=0.1")
    assert "train.anchor" in line and "--init-from" in line
