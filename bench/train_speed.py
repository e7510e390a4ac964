"""Training throughput on Beauty: sequences/s and seconds per epoch of the multimodal model and
of the built-in SASRec, measured in the same run (each in its own process, one after the other,
so peak memory is per model), plus one full-ranking validation pass.

    .venv/bin/python bench/train_speed.py --data bench/out/beauty/dataset \
        --cache bench/out/beauty/features_cls.h5 --epochs 3

Prints a Markdown table; `--json FILE` also writes the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from vmr.model.config import load_config
from vmr.train.data import load_train_data
from vmr.train.trainer import train
data, cache, out = sys.argv[1], sys.argv[2] or None, Path(sys.argv[3])
epochs, threads = sys.argv[4], sys.argv[5]
sets = json.loads(sys.argv[6])
cfg = load_config(None, sets + [f"train.epochs={epochs}", "train.patience=1000", f"train.threads={threads}"])
d = load_train_data(data, cache, cfg)
t0 = time.time()
train(cfg, d, out, quiet=True)
print(json.dumps({"wall": time.time() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--float32", action="store_true",
                    help="also time both models with train.amp=false (ratios in the same run)")
    a = ap.parse_args()
    models = {"sasrec": ["model.kind=sasrec"], "vmr (text)": ["model.kind=vmr"]}
    if a.float32:          # the same models without bfloat16 autocast, in the same run
        models.update({"sasrec, float32": ["model.kind=sasrec", "train.amp=false"],
                       "vmr (text), float32": ["model.kind=vmr", "train.amp=false"]})
    res = {}
    for name, sets in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            out.mkdir()
            r = subprocess.run([sys.executable, "-c", CHILD, a.data, a.cache if "vmr" in name else "",
                                str(out), str(a.epochs), str(a.threads), json.dumps(sets)],
                               capture_output=True, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
            if r.returncode:
                raise SystemExit(r.stderr[-2000:])
            child = json.loads(r.stdout.strip().splitlines()[-1])
            rows = [x for x in csv.DictReader(open(out / "metrics.csv")) if x["stage"] == "sequence"]
            steady = rows[1:] or rows                    # the first epoch warms up
            res[name] = {
                "seq_per_s": sum(float(x["seq_per_s"]) for x in steady) / len(steady),
                "s_per_epoch": sum(float(x["seconds"]) for x in steady) / len(steady),
                "s_per_eval": sum(float(x["eval_seconds"]) for x in steady) / len(steady),
                "peak_rss_mb": child["peak_rss_mb"]}
    lines = ["| model | sequences/s | s/epoch | s/validation (22,363 users x 12,101 items) | peak RSS MB |",
             "|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['seq_per_s']:.0f} | {r['s_per_epoch']:.1f} | {r['s_per_eval']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    ratio = res["vmr (text)"]["s_per_epoch"] / res["sasrec"]["s_per_epoch"]
    lines.append(f"\nvmr / sasrec seconds per epoch: {ratio:.2f} "
                 f"({platform.machine()}, {os.cpu_count()} cores, threads={a.threads or 'all'})")
    for name in ("sasrec", "vmr (text)"):
        if f"{name}, float32" in res:
            r32, r16 = res[f"{name}, float32"], res[name]
            lines.append(f"{name}: bfloat16 autocast / float32 seconds per epoch "
                         f"{r16['s_per_epoch'] / r32['s_per_epoch']:.2f}, per validation "
                         f"{r16['s_per_eval'] / r32['s_per_eval']:.2f}")
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
