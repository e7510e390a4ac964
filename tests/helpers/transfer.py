"""A short source run and a target catalogue encoded the same way, for the tests of the settings
of an `--init-from` run (train.anchor, train.lowrank)."""

from __future__ import annotations

from pathlib import Path

import torch

from helpers import cli_one_line, run_cli
from helpers.synth import make_dataset, same_encoder
from vmr.model.rundir import read_checkpoint


def source_and_target(root: Path) -> dict:
    """{"src", "tgt": two synthetic datasets with one encoder; "run": 2 epochs on src}."""
    src = make_dataset(root / "a", n_users=80, length=7, seed=0)
    tgt = make_dataset(root / "b", n_topics=3, per_topic=9, n_users=60, length=7, seed=1)
    same_encoder(src)
    same_encoder(tgt)
    run = root / "src_run"
    code, _, err = run_cli("train", "--data", src, "--out", run, "--set", "train.epochs=2",
                           "--set", "model.d_model=16", "--set", "train.device=cpu")
    assert code == 0, err
    return {"src": src, "tgt": tgt, "run": run}


def train_target(setup: dict, out: Path, *sets: str, resume: bool = False) -> None:
    """`vmr train` on the target from the source run (or --resume OUT), with --set sets."""
    args = ["train", "--data", setup["tgt"], "--out", out]
    args += ["--resume"] if resume else ["--init-from", setup["run"]]
    for s in sets:
        args += ["--set", s]
    code, _, err = run_cli(*args)
    assert code == 0, err


def resumed_equals_straight(setup: dict, root: Path, *sets: str) -> bool:
    """Two epochs in one go and one epoch then --resume to two give the same weights, bit for bit."""
    common = ["train.lr=0.01", "train.patience=100", *sets]
    train_target(setup, root / "ref", "train.epochs=2", *common)
    train_target(setup, root / "part", "train.epochs=1", *common)
    train_target(setup, root / "part", "train.epochs=2", resume=True)
    ref = read_checkpoint(root / "ref" / "checkpoint.pt")["model"]
    again = read_checkpoint(root / "part" / "checkpoint.pt")["model"]
    return all(torch.equal(ref[k], again[k]) for k in ref)


def line_without_source(setup: dict, root: Path, setting: str) -> str:
    """The one-line error of `vmr train --set SETTING` without --init-from."""
    return cli_one_line("train", "--data", setup["tgt"], "--out", root / "no",
                        "--set", setting, "--set", "model.d_model=16")
