"""Two CPU processes under torchrun (gloo) train the same model as one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.synth import make_dataset

# Without dropout both runs see the same global batches and average the same gradients; only
# the order of floating-point reductions differs, so weights agree to well under 1e-3 after
# a few epochs and the validation metric to 0.01.
WEIGHT_TOL = 1e-3
METRIC_TOL = 0.01
SETS = ["model.d_model=16", "model.n_heads=1", "model.n_layers=1", "model.max_len=10",
        "model.dropout=0", "model.item_dropout=0", "train.batch_size=32", "train.epochs=3",
        "train.threads=1", "pretrain.epochs=1", "pretrain.batch_size=16", "train.patience=100",
        "train.amp=false"]  # float32: bfloat16 rounding would hide the comparison


def _train(cmd_prefix, ds, out):
    args = ["train", "--data", str(ds), "--out", str(out)] + [a for s in SETS for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd_prefix + args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    ds = make_dataset(tmp_path / "synth")
    _train([sys.executable, "-m", "vmr"], ds, tmp_path / "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_port=29513", "-m", "vmr"]
    _train(torchrun, ds, tmp_path / "ddp")
    a = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3          # epochs completed
    worst = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert worst < WEIGHT_TOL, worst
    ia = json.loads((tmp_path / "single" / "run.json").read_text())
    ib = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert ib["world_size"] == 2 and "world_size" not in ia
    assert abs(ia["best_valid"]["NDCG@10"] - ib["best_valid"]["NDCG@10"]) < METRIC_TOL
    # only rank 0 wrote: one header and one row per epoch (1 pretrain + 3 sequence)
    assert len((tmp_path / "ddp" / "metrics.csv").read_text().splitlines()) == 5


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_host_match_single_process(tmp_path):
    """The multi-node path: two torchrun launchers (--nnodes 2, one process each) meet at a c10d
    rendezvous on localhost, as two machines would at a head node's address."""
    ds = make_dataset(tmp_path / "synth")
    _train([sys.executable, "-m", "vmr"], ds, tmp_path / "single")
    port = _free_port()
    args = ["train", "--data", str(ds), "--out", str(tmp_path / "nodes")] + \
        [a for s in SETS for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
         f"--node-rank={r}", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}",
         "--rdzv-id=vmr-two-nodes", "-m", "vmr", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    a = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "nodes" / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    worst = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert worst < WEIGHT_TOL, worst
    ib = json.loads((tmp_path / "nodes" / "run.json").read_text())
    assert ib["world_size"] == 2
    assert len((tmp_path / "nodes" / "metrics.csv").read_text().splitlines()) == 5
