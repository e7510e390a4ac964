"""A short source run and a target catalogue encoded the same way, for the tests of the settings
of an `--init-from` run (train.anchor, train.lowrank)."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli
from helpers.synth import make_dataset, same_encoder


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
