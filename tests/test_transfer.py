"""Transfer to another catalogue: `vmr train --init-from RUN [--freeze]` and zero-shot
`vmr eval --run RUN --data OTHER` (vmr/model/cross_catalogue.py, vmr/train/init_from.py)."""

import json

import h5py
import pytest
import torch

from helpers import cli_one_line, run_cli
from helpers.synth import make_dataset, same_encoder
from vmr.model.rundir import read_checkpoint

TINY = ["--set", "model.d_model=16", "--set", "train.device=cpu", "--set", "train.epochs=1"]



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    src = make_dataset(root / "a", n_users=80, length=7, seed=0)
    tgt = make_dataset(root / "b", n_topics=3, per_topic=9, n_users=60, length=7, seed=1)
    other = make_dataset(root / "c", n_topics=3, per_topic=9, n_users=60, length=7, seed=2)
    same_encoder(src)
    same_encoder(tgt)              # `other` keeps its own encoder identity
    run = root / "src_run"
    code, _, err = run_cli("train", "--data", src, "--out", run, "--set", "train.epochs=2",
                           *TINY[:4])
    assert code == 0, err
    return {"root": root, "src": src, "tgt": tgt, "other": other, "run": run}


def _weights(run):
    return read_checkpoint(run / "best.pt")["model"]


def test_init_from_loads_everything_but_the_ids(setup, tmp_path):
    out = tmp_path / "ft"
    # a learning rate so small that training moves no weight visibly: what we see was loaded
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--init-from",
                           setup["run"], "--set", "train.lr=1e-12", "--set", "train.epochs=1")
    assert code == 0, err
    src, new = _weights(setup["run"]), _weights(out)
    assert set(src) == set(new)
    n_tgt = len((setup["tgt"].parent / "ids.txt").read_text().split())
    assert new["items.id_emb.weight"].shape[0] == n_tgt != src["items.id_emb.weight"].shape[0]
    for k, v in src.items():
        if k != "items.id_emb.weight":
            assert torch.allclose(v, new[k], atol=1e-8), k
    info = json.loads((out / "run.json").read_text())
    assert info["init"] == {"run": str(setup["run"].resolve()), "checkpoint": "best.pt",
                            "freeze": False}
    assert info["label"].endswith("-init") and info["data"] == str(setup["tgt"].resolve())
    cfg = (out / "config.toml").read_text()          # the source's config, then --set
    assert "d_model = 16" in cfg and "lr = 1e-12" in cfg


def test_freeze_keeps_the_content_encoder_fixed(setup, tmp_path):
    out = tmp_path / "frozen"
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--init-from",
                           setup["run"], "--freeze", "--set", "train.lr=0.01")
    assert code == 0, err
    src, new = _weights(setup["run"]), _weights(out)
    # share = tie: the item encoder's one fusion block is the first sequence block
    frozen = [k for k in src if k.startswith(("items.proj.", "items.head.", "items.ln.",
                                              "items.mod_emb", "items.mask_tok",
                                              "items.content_scale", "seq_blocks.0."))]
    assert len(frozen) == 21
    assert all(torch.equal(src[k], new[k]) for k in frozen)
    # the rest trained: positions, the second sequence block
    for k in ("seq.pos.weight", "seq_blocks.1.ff1.weight", "seq.ln.weight"):
        assert not torch.equal(src[k], new[k]), k
    info = json.loads((out / "run.json").read_text())
    assert info["init"]["freeze"] is True and info["label"].endswith("-init-frozen")
    # --resume keeps it frozen
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--resume", "--set",
                           "train.epochs=2")
    assert code == 0, err
    last = read_checkpoint(out / "checkpoint.pt")
    assert last["epoch"] == 2 and all(torch.equal(src[k], last["model"][k]) for k in frozen)
    assert json.loads((out / "run.json").read_text())["label"].endswith("-init-frozen")


def test_init_from_refuses_another_encoder_or_shape(setup, tmp_path):
    line = cli_one_line("train", "--data", setup["other"], "--out", tmp_path / "x",
                        "--init-from", setup["run"])
    assert "text features differ" in line and "import:shared-encoder.npy" in line
    assert "import:feat.npy" in line and str(setup["run"]) in line
    line = cli_one_line("train", "--data", setup["tgt"], "--out", tmp_path / "y",
                        "--init-from", setup["run"], "--set", "model.d_model=32")
    assert "model.d_model is 16 there but 32 here" in line
    line = cli_one_line("train", "--data", setup["tgt"], "--out", tmp_path / "z", "--freeze")
    assert "--freeze" in line and "--init-from" in line
    line = cli_one_line("train", "--data", setup["tgt"], "--out", tmp_path / "w",
                        "--init-from", tmp_path / "missing")
    assert "--init-from" in line and "not found" in line


def test_zero_shot_eval_scores_another_catalogue_from_content(setup):
    from vmr.model.cross_catalogue import load_run_on

    run, tgt = setup["run"], setup["tgt"]
    code, out, err = run_cli("eval", "--run", run, "--data", tgt, "--k", "5", "10")
    assert code == 0, err
    from vmr.data.dataset import load_dataset
    from vmr.model.rundir import dataset_fingerprint

    fp = dataset_fingerprint(load_dataset(tgt))[:8]
    path = run / f"metrics_test@{tgt.name}-{fp}.json"
    m = json.loads(path.read_text())
    n_tgt = len((tgt.parent / "ids.txt").read_text().split())
    assert m["items"] == n_tgt and m["users"] == 60
    p = m["protocol"]
    assert p["zero_shot"] is True and p["data"] == str(tgt.resolve())
    assert p["trained_on"] == str(setup["src"].resolve())
    assert str(path) in out and "zero-shot" in out
    assert not (run / "metrics_test.json").exists() or \
        json.loads((run / "metrics_test.json").read_text())["items"] != n_tgt
    # every item is scored from content alone: the source's weights, no ID
    loaded = load_run_on(run, tgt)
    enc = loaded.model.items
    idx = torch.arange(n_tgt)
    with torch.no_grad():          # float32 here (the tower runs in the run's precision)
        want = enc.content_scale * enc.fuse(enc.tokens(idx, with_ids=False))
        assert torch.allclose(loaded.model.item_embeddings(), want, atol=1e-6)
    assert torch.equal(loaded.model.state_dict()["items.head.weight"],
                       _weights(run)["items.head.weight"])
    # `vmr report --on NAME` tables the zero-shot numbers, not the run's own
    code, out, err = run_cli("report", run, "--on", tgt.name, "--out", run.parent / "rep-zs")
    assert code == 0, err
    md = (run.parent / "rep-zs" / "report.md").read_text()
    assert f"{m['NDCG@10']:.4f}" in md
    line = cli_one_line("report", run, "--on", "nowhere", "--out", run.parent / "rep-x")
    assert "metrics_test@nowhere.json" in line and "--data .../nowhere" in line


def test_zero_shot_refusals(setup, tmp_path):
    line = cli_one_line("eval", "--run", setup["run"], "--data", setup["other"])
    assert "text features differ" in line
    line = cli_one_line("eval", "--run", setup["run"], "--cache", setup["tgt"] / "features.h5")
    assert "--cache" in line and "--data" in line
    sas = tmp_path / "sas"
    code, _, err = run_cli("train", "--data", setup["src"], "--out", sas, "--set",
                           "model.kind=sasrec", *TINY)
    assert code == 0, err
    line = cli_one_line("eval", "--run", sas, "--data", setup["tgt"])
    assert "sasrec" in line and "content" in line


def test_a_transferred_run_starts_as_the_zero_shot_model(setup, tmp_path):
    """Epoch 0 of --init-from is the zero-shot model (ID rows at zero), validated and kept as
    best.pt unless fine-tuning beats it: fine-tuning cannot end below its start."""
    import csv

    out = tmp_path / "start"
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--init-from",
                           setup["run"], "--set", "train.lr=1e-12", "--set", "train.epochs=1")
    assert code == 0, err
    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["stage"] == "sequence"]
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[0]["loss"] == ""
    code, _, err = run_cli("eval", "--run", setup["run"], "--data", setup["tgt"], "--split",
                           "valid")
    assert code == 0, err
    zero_shot = [json.loads(p.read_text()) for p in setup["run"].glob("metrics_valid@*.json")]
    assert len(zero_shot) == 1
    assert float(rows[0]["valid_NDCG@10"]) == pytest.approx(zero_shot[0]["NDCG@10"], abs=1e-4)
    info = json.loads((out / "run.json").read_text())
    best = read_checkpoint(out / "best.pt")
    assert info["best_epoch"] in (0, 1) and best["epoch"] == info["best_epoch"]
    if info["best_epoch"] == 0:
        assert torch.count_nonzero(best["model"]["items.id_emb.weight"]) == 0
    assert (out / "curves.png").stat().st_size > 1000


def test_id_warmup_trains_content_first_then_ids(setup, tmp_path):
    """train.id_warmup = 1: epoch 1 leaves the ID rows at their zero start (content only);
    epoch 2 trains them. The label says so."""
    out = tmp_path / "staged"
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--init-from",
                           setup["run"], "--set", "train.id_warmup=1", "--set", "train.epochs=1",
                           "--set", "train.patience=5")
    assert code == 0, err
    src, last = _weights(setup["run"]), read_checkpoint(out / "checkpoint.pt")["model"]
    assert torch.count_nonzero(last["items.id_emb.weight"]) == 0
    assert not torch.equal(src["seq.pos.weight"], last["seq.pos.weight"])   # the rest trained
    info = json.loads((out / "run.json").read_text())
    assert info["label"].endswith("-init-idwarmup1")
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--resume", "--set",
                           "train.epochs=2")
    assert code == 0, err
    assert torch.count_nonzero(read_checkpoint(out / "checkpoint.pt")["model"]
                               ["items.id_emb.weight"]) > 0


def test_transfer_lr_scales_the_loaded_weights_only(setup, tmp_path):
    """train.transfer_lr: two Adam groups, the loaded weights at lr x transfer_lr, the fresh ID
    rows at lr; a resumed run keeps both; without --init-from it is refused."""
    out = tmp_path / "disc"
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--init-from",
                           setup["run"], "--set", "train.transfer_lr=0.01", "--set",
                           "train.lr=0.01", "--set", "train.epochs=1")
    assert code == 0, err
    ckpt = read_checkpoint(out / "checkpoint.pt")
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.0001])
    assert len(groups[0]["params"]) == 1              # the ID table alone
    src = _weights(setup["run"])
    # Adam moves each weight by about lr per step: the loaded ones 100x less than the IDs
    moved = (ckpt["model"]["seq.pos.weight"] - src["seq.pos.weight"]).abs().max().item()
    ids = ckpt["model"]["items.id_emb.weight"].abs().max().item()
    assert 0 < moved < ids / 20
    info = json.loads((out / "run.json").read_text())
    assert info["label"].endswith("-init-lr0.01")
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--resume", "--set",
                           "train.epochs=2")
    assert code == 0, err
    assert len(read_checkpoint(out / "checkpoint.pt")["optimizer"]["param_groups"]) == 2
    line = cli_one_line("train", "--data", setup["tgt"], "--out", tmp_path / "no",
                        "--set", "train.transfer_lr=0.1", *TINY[:4])
    assert "train.transfer_lr" in line and "--init-from" in line
    line = cli_one_line("train", "--data", setup["tgt"], "--out", tmp_path / "neg",
                        "--set", "train.id_warmup=-1", *TINY[:4])
    assert "train.id_warmup" in line


def test_where_the_vectors_were_computed_does_not_matter(setup, tmp_path):
    """A cache's `engine` (local or ray) says where vectors were computed, not what they are:
    a target extracted by another engine transfers, and a run.json written when the engine was
    part of the identity still evaluates. Another encoder is refused naming what differs."""
    import shutil

    tgt = tmp_path / "tgt"
    shutil.copytree(setup["tgt"], tgt)
    with h5py.File(tgt / "features.h5", "r+") as f:
        f["text"].attrs["engine"] = "ray"
    out = tmp_path / "ft"
    code, _, err = run_cli("train", "--data", tgt, "--out", out, "--init-from", setup["run"],
                           "--set", "train.epochs=1")
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    assert "engine" not in info["features"]["text"]
    info["features"]["text"]["engine"] = "local"          # as an older vmr recorded it
    (out / "run.json").write_text(json.dumps(info))
    code, _, err = run_cli("eval", "--run", out)
    assert code == 0, err
    with h5py.File(tgt / "features.h5", "r+") as f:
        f["text"].attrs["pooling"] = "mean"
    line = cli_one_line("train", "--data", tgt, "--out", tmp_path / "x", "--init-from",
                        setup["run"])
    assert "text features differ (pooling" in line and "'mean'" in line


def test_freeze_epochs_keeps_the_content_fixed_then_trains_it(setup, tmp_path):
    """train.freeze_epochs = 1: the first epoch trains around the content parts --freeze fixes,
    the next one trains them too; refused without --init-from."""
    out = tmp_path / "thaw"
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--init-from",
                           setup["run"], "--set", "train.freeze_epochs=1", "--set",
                           "train.epochs=1", "--set", "train.lr=0.01")
    assert code == 0, err
    src, last = _weights(setup["run"]), read_checkpoint(out / "checkpoint.pt")["model"]
    assert torch.equal(src["items.proj.text.weight"], last["items.proj.text.weight"])
    assert not torch.equal(src["seq.pos.weight"], last["seq.pos.weight"])
    assert json.loads((out / "run.json").read_text())["label"].endswith("-init-freeze1")
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--resume", "--set",
                           "train.epochs=2")
    assert code == 0, err
    after = read_checkpoint(out / "checkpoint.pt")["model"]
    assert not torch.equal(src["items.proj.text.weight"], after["items.proj.text.weight"])
    line = cli_one_line("train", "--data", setup["tgt"], "--out", tmp_path / "no",
                        "--set", "train.freeze_epochs=2", *TINY[:4])
    assert "train.freeze_epochs" in line and "--init-from" in line


def test_a_pretrained_source_is_not_pretrained_again(setup, tmp_path):
    """The source's config keeps pretrain.epochs; a transferred run leaves it at 0 (pre-training
    again, with fresh heads, moved the encoder before epoch 0, so epoch 0 was no longer the
    zero-shot model), unless --set asks for it."""
    import csv

    src = tmp_path / "pre_src"
    code, _, err = run_cli("train", "--data", setup["src"], "--out", src, "--set",
                           "pretrain.epochs=2", *TINY)
    assert code == 0, err
    out = tmp_path / "ft"
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", out, "--init-from", src,
                           "--set", "train.epochs=1")
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["stage"] for r in rows] == ["sequence", "sequence"]
    assert "epochs = 0" in (out / "config.toml").read_text().split("[pretrain]")[1].split("[")[0]
    code, _, err = run_cli("eval", "--run", src, "--data", setup["tgt"], "--split", "valid")
    assert code == 0, err
    zero_shot = json.loads(next(src.glob("metrics_valid@*.json")).read_text())
    assert float(rows[0]["valid_NDCG@10"]) == pytest.approx(zero_shot["NDCG@10"], abs=1e-4)
    again = tmp_path / "again"
    code, _, err = run_cli("train", "--data", setup["tgt"], "--out", again, "--init-from", src,
                           "--set", "train.epochs=1", "--set", "pretrain.epochs=1")
    assert code == 0, err
    assert [r["stage"] for r in csv.DictReader(open(again / "metrics.csv"))][0] == "pretrain"
