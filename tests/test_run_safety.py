"""What a run directory may hold and what vmr does with it: no file can run code, damaged or
foreign metadata is a one-line error, a run refuses a dataset or cache that changed under it,
and the two-call `--stage pretrain` / `--stage sequence` flow trains exactly as `--stage all`."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import cli_one_line, run_cli
from helpers.synth import make_dataset

TINY = ["model.d_model=16", "model.n_heads=1", "model.n_layers=1", "train.epochs=2",
        "train.threads=1", "model.max_len=10"]
SETS = [a for s in TINY for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    ds = make_dataset(root)
    code, _, err = run_cli("train", "--data", ds, *SETS, "--out", root / "run")
    assert code == 0, err
    code, _, err = run_cli("export", "--run", root / "run", "--out", root / "exp")
    assert code == 0, err
    return {"root": root, "data": ds, "run": root / "run", "exp": root / "exp"}


class Planted:
    """Unpickling this creates a marker file: the proof that loading ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> None:
    obj = {"format": 2, "model": {}, "config": {}, "payload": Planted(str(marker))}
    with open(path, "wb") as f:
        torch.save(obj, f, pickle_protocol=pickle.HIGHEST_PROTOCOL)


@pytest.mark.parametrize("target", ["best.pt", "checkpoint.pt", "user_tower.pt"])
def test_a_planted_pickle_is_refused_without_running(trained, tmp_path, target):
    run, exp = tmp_path / "run", tmp_path / "exp"
    shutil.copytree(trained["run"], run)
    shutil.copytree(trained["exp"], exp)
    marker = tmp_path / "pwned"
    if target == "user_tower.pt":
        _plant(exp / target, marker)
        from vmr.errors import VmrError
        from vmr.fsio import sha256_file
        from vmr.serve.export import load_export

        with pytest.raises(VmrError, match="sha256 differs"):     # the manifest's hash
            load_export(exp).user_vectors([["i0-01"]])
        # an attacker who rewrites the manifest too still runs nothing: weights_only refuses
        mpath = exp / "manifest.json"
        doc = json.loads(mpath.read_text())
        doc["files"][target] = {"bytes": (exp / target).stat().st_size,
                                "sha256": sha256_file(exp / target)}
        mpath.write_text(json.dumps(doc))
        with pytest.raises(VmrError, match="refused"):
            load_export(exp).user_vectors([["i0-01"]])
    else:
        _plant(run / target, marker)
        commands = ([["eval", "--run", run], ["recommend", "--run", run, "--user", "u001"],
                     ["export", "--run", run, "--out", tmp_path / "e2"]]
                    if target == "best.pt" else
                    [["train", "--data", trained["data"], "--out", run, "--resume"],
                     ["eval", "--run", run, "--checkpoint", "last"]])
        for args in commands:
            line = cli_one_line(*args)
            assert "refused" in line and target in line, line
    assert not marker.exists(), "loading the file ran code"


@pytest.mark.parametrize("content", ["{not json", "{}", "[1, 2]", "\xff\xfe"])
def test_damaged_run_json_is_one_line(trained, tmp_path, content):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    (run / "run.json").write_bytes(content.encode("latin-1"))
    for args in (["eval", "--run", run], ["recommend", "--run", run, "--user", "u001"]):
        line = cli_one_line(*args)
        assert "run.json" in line, line
    # --resume reads run.json only for the run's cache: it may go on (the dataset's own cache)
    # or stop, but in one line
    code, _, err = run_cli("train", "--data", trained["data"], "--out", run, "--resume")
    if code:
        assert "run.json" in cli_one_line("train", "--data", trained["data"], "--out", run,
                                          "--resume")


def test_damaged_metrics_csv_on_resume_is_one_line(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    (run / "metrics.csv").write_bytes(b"stage,epoch\n\xff\xfe\x00bad\n")
    line = cli_one_line("train", "--data", trained["data"], "--out", run, "--resume")
    assert "metrics.csv" in line, line


def test_options_that_cannot_apply_are_refused(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    data = trained["data"]
    assert "--seed" in cli_one_line("train", "--data", data, "--out", run, "--resume", "--seed", "3")
    assert "--modalities" in cli_one_line("train", "--data", data, "--out", run, "--resume",
                                          "--modalities", "text")
    assert "train.lr must be a finite number" in cli_one_line(
        "train", "--data", data, "--out", tmp_path / "n", "--set", "train.lr=nan")
    line = cli_one_line("train", "--data", data, "--out", "/proc/self/vmr-run", *SETS)
    assert "/proc/self" in line, line


def test_a_changed_dataset_or_cache_is_refused(trained, tmp_path):
    import polars as pl

    data = tmp_path / "ds"
    shutil.copytree(trained["data"], data)
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", data, *SETS, "--out", run)
    assert code == 0, err
    assert run_cli("eval", "--run", run)[0] == 0
    # the same items, re-prepared in another order: every index now means another item
    items = pl.read_parquet(data / "items.parquet")
    items.reverse().write_parquet(data / "items.parquet")
    line = cli_one_line("eval", "--run", run)
    assert "changed since this run was trained" in line, line
    line = cli_one_line("train", "--data", data, "--out", run, "--resume")
    assert "changed since this run started" in line or "built for another dataset" in line, line
    items.write_parquet(data / "items.parquet")
    assert run_cli("eval", "--run", run)[0] == 0
    # the features re-imported from another file
    root = Path(trained["data"]).parent
    other = tmp_path / "other.npy"
    np.save(other, np.load(root / "feat.npy")[::-1].copy())
    code, _, err = run_cli("import-features", "--data", data, "--modality", "text",
                           "--features", other, "--ids", root / "ids.txt", "--overwrite")
    assert code == 0, err
    line = cli_one_line("eval", "--run", run)
    assert "text features" in line and "changed" in line, line


def test_pretrain_then_sequence_equals_all(trained, tmp_path):
    data = trained["data"]
    sets = SETS + ["--set", "pretrain.epochs=2"]
    assert run_cli("train", "--data", data, *sets, "--out", tmp_path / "all")[0] == 0
    two = tmp_path / "two"
    code, _, err = run_cli("train", "--data", data, *sets, "--out", two, "--stage", "pretrain")
    assert code == 0, err
    assert json.loads((two / "run.json").read_text())["label"].endswith("pretrain-only")
    code, _, err = run_cli("train", "--data", data, "--out", two, "--stage", "sequence")
    assert code == 0, err
    a = torch.load(tmp_path / "all" / "best.pt", weights_only=True)
    b = torch.load(two / "best.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] and a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert json.loads((two / "run.json").read_text())["label"] == "vmr-causal-pretrain-id"
    # a fresh --stage sequence cannot claim a pre-training it never had
    line = cli_one_line("train", "--data", data, *sets, "--out", tmp_path / "x",
                        "--stage", "sequence")
    assert "holds no pre-trained model" in line, line
    assert not os.path.exists(tmp_path / "x" / "best.pt")


def test_output_into_a_closed_pipe_ends_quietly(trained):
    """`vmr recommend ... | head -0`: the reader is gone; vmr stops with status 0 and no
    message (it used to exit 1 without a word)."""
    import subprocess

    from helpers import ENV, PY, REPO

    p = subprocess.Popen([PY, "-m", "vmr", "recommend", "--run", str(trained["run"]), "--user",
                          "u001", "--top", "30"], cwd=str(REPO), env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 0 and "Traceback" not in err and "error" not in err, err


def test_ctrl_c_says_interrupted(trained, monkeypatch):
    import vmr.serve.recommend as rec

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rec, "top_items", interrupted)
    code, _, err = run_cli("recommend", "--run", trained["run"], "--user", "u001")
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted", err


def test_a_run_whose_first_checkpoint_never_landed_can_simply_be_rerun(trained, tmp_path):
    """A full disk before the first checkpoint.pt: rerunning the same command starts the run
    again (it used to answer "already holds a run", while --resume answered "nothing to
    resume")."""
    run = tmp_path / "run"
    args = ["train", "--data", trained["data"], *SETS, "--out", run]
    assert run_cli(*args)[0] == 0
    (run / "checkpoint.pt").unlink()              # as if its first write had not fit
    assert "nothing to resume" in cli_one_line("train", "--data", trained["data"], "--out", run,
                                               "--resume")
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert (run / "checkpoint.pt").exists()


def test_exports_and_reports_into_unwritable_places_are_one_line(trained):
    run = trained["run"]
    assert run_cli("eval", "--run", run)[0] == 0
    for args in (["export", "--run", run, "--out", "/proc/self/vmr-export"],
                 ["report", run, "--out", "/proc/self/vmr-report"]):
        line = cli_one_line(*args)
        assert "/proc/self/vmr-" in line, line
