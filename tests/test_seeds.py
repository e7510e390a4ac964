"""`vmr train --seeds`: one run per seed plus seeds.json, read back by `vmr eval` and
`vmr report`; and the optional TensorBoard log of `train.tensorboard = true`."""

import csv
import json
import math
import sys
import tomllib

import pytest

from helpers import cli_one_line, run_cli
from helpers.synth import make_dataset

SMALL = ["--set", "model.kind=sasrec", "--set", "train.epochs=2", "--set", "model.d_model=16",
         "--set", "train.amp=false", "--set", "train.device=cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("seeds"), n_users=80, with_features=False)


def test_seeds_train_one_run_each_and_summarise(data, tmp_path):
    out = tmp_path / "sas"
    code, stdout, err = run_cli("train", "--data", data, *SMALL, "--seeds", 3, 4, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [3, 4] and summary["runs"] == ["seed-3", "seed-4"]
    values = []
    for s in (3, 4):
        run = out / f"seed-{s}"
        cfg = tomllib.loads((run / "config.toml").read_text())
        assert cfg["train"]["seed"] == s
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "finished"
        values.append(info["best_valid"]["NDCG@10"])
    st = summary["best_valid"]["NDCG@10"]
    assert st["values"] == values
    assert st["mean"] == pytest.approx(sum(values) / 2)
    assert st["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert values[0] != values[1]                   # the seeds really differ
    assert "valid NDCG@10" in stdout and "seeds.json" in stdout

    # `vmr eval OUT` evaluates every seed run, `vmr report OUT` makes one row of them
    code, stdout, err = run_cli("eval", "--run", out, "--k", 10)
    assert code == 0, err
    assert stdout.count("wrote ") == 2
    assert all((out / f"seed-{s}" / "metrics_test.json").is_file() for s in (3, 4))
    code, stdout, err = run_cli("report", out, "--out", tmp_path / "report")
    assert code == 0, err
    rows = [ln for ln in stdout.splitlines() if ln.startswith("| ") and "seeds" not in ln]
    assert len(rows) == 1 and rows[0].split("|")[2].strip() == "2", stdout
    ndcg = [json.loads((out / f"seed-{s}" / "metrics_test.json").read_text())["NDCG@10"]
            for s in (3, 4)]
    assert f"{sum(ndcg) / 2:.4f} ± " in rows[0]

    # --resume keeps the finished runs
    code, stdout, err = run_cli("train", "--data", data, *SMALL, "--seeds", 3, 4, "--out", out,
                                "--resume")
    assert code == 0, err
    assert stdout.count("already trained") == 2


def test_seeds_errors_are_one_line(data, tmp_path):
    line = cli_one_line("train", "--data", data, *SMALL, "--seeds", 1, 2, "--seed", 5,
                        "--out", tmp_path / "x")
    assert "--seed or --seeds" in line
    single = tmp_path / "single"
    assert run_cli("train", "--data", data, "--set", "model.kind=pop", "--out", single)[0] == 0
    line = cli_one_line("train", "--data", data, *SMALL, "--seeds", 1, "--out", single)
    assert "holds a single run" in line
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "seeds.json").write_text(json.dumps({"runs": ["../elsewhere"]}))
    assert "seed run folders" in cli_one_line("report", bad, "--out", tmp_path / "r")


def test_tensorboard_missing_package_is_a_one_line_error(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)        # as if not installed
    line = cli_one_line("train", "--data", data, *SMALL, "--set", "train.tensorboard=true",
                        "--out", tmp_path / "tb")
    assert "pip install 'vmr[tensorboard]'" in line
    assert not (tmp_path / "tb").exists()                        # refused before any work


def test_tensorboard_logs_every_metrics_row(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    code, _, err = run_cli("train", "--data", data, *SMALL, "--set", "train.tensorboard=true",
                           "--out", run)
    assert code == 0, err
    with open(run / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"sequence/loss", "sequence/valid_NDCG@10", "sequence/seconds"} <= set(tags)
    for col in ("loss", "valid_NDCG@10"):
        events = acc.Scalars(f"sequence/{col}")
        assert [e.step for e in events] == [int(r["epoch"]) for r in rows]
        assert [e.value for e in events] == pytest.approx([float(r[col]) for r in rows],
                                                          rel=1e-5)
