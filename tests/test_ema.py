"""train.ema: the moving average of the weights -- its arithmetic, what best.pt holds, exact resume."""

import pytest
import torch

from helpers.synth import make_dataset
from vmr.errors import VmrError
from vmr.model.config import load_config
from vmr.train.ema import WeightAverage
from vmr.train.session import TrainRequest, start_training

FAST = ["model.d_model=16", "model.n_heads=1", "model.n_layers=1", "train.batch_size=32",
        "train.threads=1", "model.max_len=10", "train.patience=100", "train.amp=false"]


def test_average_follows_the_weights_at_its_decay_and_swaps_back():
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    avg = WeightAverage(lin, decay=0.75)
    with torch.no_grad():
        lin.weight.fill_(5.0)
    avg.update()                       # 0.75 * 1 + 0.25 * 5 = 2
    assert torch.allclose(avg.state_dict()["shadow"]["weight"], torch.full((1, 2), 2.0))
    with avg.swapped_in():
        assert torch.allclose(lin.weight, torch.full((1, 2), 2.0))
    assert torch.allclose(lin.weight, torch.full((1, 2), 5.0))   # the raw weights are back
    with pytest.raises(ValueError):
        WeightAverage(lin, decay=1.0)


def test_ema_outside_its_range_is_a_config_error(tmp_path):
    with pytest.raises(VmrError, match="train.ema must be in"):
        load_config(None, ["train.ema=1.5"])


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"), n_users=80)


def _train(ds, out, sets, **kw):
    return start_training(TrainRequest(data=str(ds), overrides=FAST + sets, out=str(out), **kw))


def test_best_holds_the_averaged_weights_and_resume_is_exact(ds, tmp_path):
    ref = _train(ds, tmp_path / "ref", ["train.ema=0.9", "train.epochs=3"])
    last = torch.load(ref / "checkpoint.pt", weights_only=True)
    shadow = last["ema"]["shadow"]
    assert last["ema"]["decay"] == 0.9
    assert any(not torch.equal(shadow[k], last["model"][k]) for k in shadow)   # it averages
    best = torch.load(ref / "best.pt", weights_only=True)
    if best["epoch"] == 3:             # the last epoch's best.pt is the average, not the raw weights
        assert all(torch.equal(best["model"][k], shadow[k]) for k in shadow)
    # two epochs, then resumed to three: the same averaged and raw weights, bit for bit
    part = _train(ds, tmp_path / "part", ["train.ema=0.9", "train.epochs=2"])
    _train(ds, part, ["train.epochs=3"], resume=True)
    again = torch.load(part / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(again["ema"]["shadow"][k], shadow[k]) for k in shadow)
    assert all(torch.equal(again["model"][k], last["model"][k]) for k in last["model"])


def test_off_by_default_and_a_run_without_it_cannot_resume_with_it(ds, tmp_path):
    run = _train(ds, tmp_path / "plain", ["train.epochs=1"])
    assert "ema" not in torch.load(run / "checkpoint.pt", weights_only=True)
    with pytest.raises(VmrError, match="no averaged weights"):
        _train(ds, run, ["train.epochs=2", "train.ema=0.9"], resume=True)
