"""End-to-end training on a tiny planted dataset: it learns, it resumes exactly, it fails clearly."""

import json
import signal
import time

import numpy as np
import pytest
import torch

from helpers import run_process, start_process
from helpers.synth import make_dataset
from vmr.errors import VmrError
from vmr.model import precision
from vmr.train.session import TrainRequest, start_training

FAST = ["model.d_model=16", "model.n_heads=1", "model.n_layers=1", "train.batch_size=32",
        "train.threads=1", "model.max_len=10", "train.epochs=3"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"))


def _train(ds, out, sets, **kw):
    return start_training(TrainRequest(data=str(ds), overrides=FAST + sets, out=str(out), **kw))


def test_full_model_and_sasrec_beat_popularity(ds, tmp_path):
    res = {}
    for kind, sets in {"pop": ["model.kind=pop"],
                       "vmr": ["model.kind=vmr", "pretrain.epochs=2", "train.epochs=12"],
                       "sasrec": ["model.kind=sasrec", "train.epochs=12"]}.items():
        run = _train(ds, tmp_path / kind, sets)
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "finished"
        if kind != "pop":
            native = precision.bf16_native(torch.device("cpu"))
            assert info["precision"] == ("bfloat16" if native else "float32")   # amp is on
            rows = (run / "metrics.csv").read_text().splitlines()
            assert rows[0].startswith("stage,epoch,loss")
            assert (run / "curves.png").stat().st_size > 1000
            res[kind] = info["best_valid"]["NDCG@10"]
    from vmr.evaluate.run_eval import evaluate_run
    evaluate_run(str(tmp_path / "pop"), ks=[10], split="valid", include_history=False,
                 checkpoint="best")
    pop = json.loads((tmp_path / "pop" / "metrics_valid.json").read_text())["NDCG@10"]
    assert res["vmr"] > pop + 0.05, (res, pop)
    assert res["sasrec"] > pop + 0.05, (res, pop)
    cfg_text = (tmp_path / "vmr" / "config.toml").read_text()
    assert 'kind = "vmr"' in cfg_text and "epochs = 2" in cfg_text


def test_amp_off_trains_in_float32(ds, tmp_path):
    run = _train(ds, tmp_path / "f32", ["model.kind=sasrec", "train.epochs=1", "train.amp=false"])
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["precision"] == "float32"
    assert "amp = false" in (run / "config.toml").read_text()


def test_pretraining_stage_logs_its_terms(ds, tmp_path):
    run = _train(ds, tmp_path / "r", ["pretrain.epochs=2", "train.epochs=1"])
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    pre = [r for r in rows[1:] if r[0] == "pretrain"]
    assert len(pre) == 2
    assert float(pre[0][header.index("L_is")]) > 0           # text only: the I-S term is active
    assert float(pre[0][header.index("L_pwc")]) == 0         # no visual modality: PWC is off


def test_resume_after_kill_matches_uninterrupted(ds, tmp_path):
    sets = FAST + ["model.kind=vmr", "pretrain.epochs=2", "train.epochs=6", "train.patience=100"]
    args = ["train", "--data", str(ds)] + [a for s in sets for a in ("--set", s)]
    ref = run_process(*args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    # the same run, killed with SIGKILL after its 4th epoch row (2 pretrain + 2 sequence)
    out = tmp_path / "killed"
    p = start_process(*args, "--out", out)
    deadline = time.time() + 120
    csv = out / "metrics.csv"
    while time.time() < deadline:
        if csv.exists() and len(csv.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(csv.read_text().splitlines()) - 1
    assert 4 <= done < 8, "the run was not killed mid-way"
    res = run_process("train", "--data", ds, "--out", out, "--resume")
    assert res.returncode == 0, res.stderr
    a = torch.load(tmp_path / "ref" / "best.pt", weights_only=True)
    b = torch.load(out / "best.pt", weights_only=True)
    assert a["epoch"] == b["epoch"]
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
    ref_rows = (tmp_path / "ref" / "metrics.csv").read_text().splitlines()
    got_rows = csv.read_text().splitlines()
    assert len(ref_rows) == len(got_rows) == 9
    col = ref_rows[0].split(",").index("valid_NDCG@10")
    assert [r.split(",")[col] for r in ref_rows] == [r.split(",")[col] for r in got_rows]


def test_errors_are_clear(tmp_path, ds):
    no_feat = make_dataset(tmp_path / "nf", with_features=False)
    with pytest.raises(VmrError, match="feature cache not found"):
        _train(no_feat, tmp_path / "a", ["model.kind=vmr"])
    with pytest.raises(VmrError, match="modality 'video' is not in the cache"):
        start_training(TrainRequest(data=str(ds), overrides=FAST, out=str(tmp_path / "b"),
                                    modalities=["video"]))
    nan = make_dataset(tmp_path / "nan")
    import h5py
    with h5py.File(nan / "features.h5", "r+") as f:      # a cache damaged outside vmr
        f["text"]["features"][3, 0] = np.nan
    with pytest.raises(VmrError, match=r"NaN/inf features for 1 items \(first: item 'i[0-9]-[0-9]{2}'\)"):
        _train(nan, tmp_path / "c", [])
    with pytest.raises(VmrError, match="n_negatives"):
        _train(ds, tmp_path / "d", ["train.loss=sampled", "train.n_negatives=500"])
    _train(ds, tmp_path / "e", ["model.kind=pop"])
    with pytest.raises(VmrError, match="already holds a run"):
        _train(ds, tmp_path / "e", ["model.kind=pop"])
    with pytest.raises(VmrError, match="nothing to resume"):
        start_training(TrainRequest(data=str(ds), out=str(tmp_path / "f"), resume=True))


def test_empty_split_is_an_error(tmp_path):
    root = tmp_path / "short"
    root.mkdir()
    (root / "seq.txt").write_text("".join(f"u{i} a{i}\n" for i in range(5)))
    from vmr.data.prepare import PrepareOptions, prepare_dataset
    prepare_dataset(PrepareOptions(interactions=str(root / "seq.txt"), out=str(root / "ds"),
                                   fmt="sequences", kcore=1))
    with pytest.raises(VmrError, match="training split is empty"):
        _train(root / "ds", tmp_path / "r", ["model.kind=sasrec"])


def test_sampled_loss_and_masked_objective_train(ds, tmp_path):
    for name, sets in {"sampled": ["train.loss=sampled", "train.n_negatives=16"],
                       "masked": ["model.objective=masked"]}.items():
        run = _train(ds, tmp_path / name, sets + ["train.epochs=2"])
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "finished" and info["best_valid"]["NDCG@10"] > 0


def test_cli_train_bad_set_is_one_line(ds):
    r = run_process("train", "--data", ds, "--set", "model.nope=1")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: --set model.nope: unknown config key")
    assert "Traceback" not in r.stderr
