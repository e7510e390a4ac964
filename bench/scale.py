"""Scaling on one machine, each ratio measured in one run of this script:
(1) sharded extraction, 2 shards at once vs 1 process, on generated videos;
(2) DDP training, 2 processes (torchrun, gloo, 1 thread each) vs 1 process (2 threads).

    .venv/bin/python bench/scale.py --videos 120 --data bench/out/beauty/dataset --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
VMR = [sys.executable, "-m", "vmr"]


def run(cmd, **kw):
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, **kw)
    if r.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return r


def shards(n_videos: int, work: Path) -> dict:
    from vmr.data.prepare import PrepareOptions, prepare_dataset
    from vmr.data.synthetic import generate_catalogue

    generate_catalogue(work, n_items=n_videos, n_users=max(200, n_videos * 3), n_topics=8, seed=0,
                       video_seconds=4.0, progress=False)
    raw = work / "raw"
    ds = work / "ds"
    prepare_dataset(PrepareOptions(interactions=str(raw / "interactions.csv"), out=str(ds),
                                   items=str(raw / "items.csv"), items_id_col="item_id",
                                   video_column="video", kcore=1))
    common = ["extract", "--data", str(ds), "--modality", "video", "--fps", "2", "--max-frames", "8"]
    t0 = time.time()
    run(VMR + common + ["--cache", str(work / "one.h5")])
    one = time.time() - t0
    t0 = time.time()
    procs = [subprocess.Popen(VMR + common + ["--cache", str(work / "sh.h5"), "--shard", f"{i}/2",
                                              "--workers", "1"],
                              cwd=REPO, env={**ENV, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in (1, 2)]
    for p in procs:
        if p.wait():
            raise SystemExit(p.stderr.read()[-2000:])
    parts = sorted(str(p) for p in work.glob("sh.shard-*"))
    run(VMR + ["cache", "merge", *parts, "--out", str(work / "merged.h5")])
    two = time.time() - t0
    return {"videos": n_videos, "one_process_s": round(one, 1), "two_shards_s": round(two, 1),
            "speedup": round(one / two, 2)}


def ddp(data: str, epochs: int) -> dict:
    sets = ["model.kind=sasrec", f"train.epochs={epochs}", "train.patience=1000",
            "train.eval_every=1000"]
    out = {}
    for name, prefix, extra in (
            ("1 process, 2 threads", VMR, ["train.threads=2"]),
            ("2 processes (DDP), 1 thread each",
             [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
              "--master_port=29531", "-m", "vmr"], ["train.threads=1"])):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["train", "--data", data, "--out", f"{tmp}/run"]
            for s in sets + extra:
                args += ["--set", s]
            run(prefix + args, timeout=3600)
            rows = [r for r in csv.DictReader(open(f"{tmp}/run/metrics.csv"))][1:]
            out[name] = sum(float(r["seq_per_s"]) for r in rows) / len(rows)
    names = list(out)
    return {"seq_per_s": {k: round(v, 1) for k, v in out.items()},
            "ratio": round(out[names[1]] / out[names[0]], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=120)
    ap.add_argument("--data", required=True, help="a prepared dataset (e.g. Beauty) for the DDP part")
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vmr-scale-"))
    try:
        print("sharded extraction:", shards(a.videos, work), flush=True)
        print("DDP training (SASRec on", a.data, "):", ddp(a.data, a.epochs), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
