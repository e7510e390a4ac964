"""Issue 24: zero-shot evaluation uses the run's own feature normalisation, and its result files
cannot collide (two targets both called `ds`); `vmr report --on NAME` still finds them."""

import json
import shutil

import pytest
import torch

from helpers import cli_one_line, run_cli
from helpers.synth import make_dataset, same_encoder

TINY = ["--set", "model.d_model=16", "--set", "train.device=cpu", "--set", "train.epochs=1"]



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("zs")
    src = make_dataset(root / "src", n_users=60, length=6, seed=0)
    a = make_dataset(root / "a", n_topics=3, per_topic=8, n_users=40, length=6, seed=1)
    b = make_dataset(root / "b", n_topics=3, per_topic=8, n_users=40, length=6, seed=2)
    for ds in (src, a, b):
        same_encoder(ds)
    run = root / "run"
    code, _, err = run_cli("train", "--data", src, "--out", run, "--set",
                           "data.feature_norm=l2", *TINY)
    assert code == 0, err
    return {"root": root, "run": run, "a": a, "b": b}


def test_zero_shot_uses_the_runs_feature_norm(setup):
    from vmr.model.features import load_features
    from vmr.model.cross_catalogue import load_run_on

    loaded = load_run_on(setup["run"], setup["a"])
    assert loaded.config.data.feature_norm == "l2"
    ds = loaded.dataset
    want, _, _ = load_features(setup["a"] / "features.h5", ds.item_ids, ["text"], "l2")
    other, _, _ = load_features(setup["a"] / "features.h5", ds.item_ids, ["text"])
    have = loaded.model.items.feat_text
    assert torch.allclose(have.float().cpu(), want["text"])
    assert not torch.allclose(want["text"], other["text"])


def test_two_targets_of_one_name_do_not_overwrite_each_other(setup):
    run = setup["run"]
    for ds in (setup["a"], setup["b"]):
        code, out, err = run_cli("eval", "--run", run, "--data", ds)
        assert code == 0, err
    files = sorted(run.glob("metrics_test@ds-*.json"))
    assert len(files) == 2
    datas = {json.loads(p.read_text())["protocol"]["data"] for p in files}
    assert datas == {str(setup["a"].resolve()), str(setup["b"].resolve())}
    # `--on data` is ambiguous now: one line naming both tags; the full tag picks one
    line = cli_one_line("report", run, "--on", "ds", "--out", setup["root"] / "r1")
    tags = [p.name[len("metrics_test@"):-len(".json")] for p in files]
    assert all(t in line for t in tags)
    code, _, err = run_cli("report", run, "--on", tags[0], "--out", setup["root"] / "r2")
    assert code == 0, err
    md = (setup["root"] / "r2" / "report.md").read_text()
    assert f"{json.loads(files[0].read_text())['NDCG@10']:.4f}" in md
    # with one target of that name, the bare name is enough (as before)
    solo = setup["root"] / "solo-run"
    shutil.copytree(run, solo)
    files_solo = sorted(solo.glob("metrics_test@ds-*.json"))
    files_solo[1].unlink()
    code, _, err = run_cli("report", solo, "--on", "ds", "--out", setup["root"] / "r3")
    assert code == 0, err
