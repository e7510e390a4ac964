"""Weight-space interpolation of transfer runs with their start (a WiSE-FT probe, issue 23).

For each fine-tuned `--init-from` run given, the weights w(a) = w0 + a (w_ft - w0), where w0 is
the run's start (the source's weights, the new item-ID rows at zero, as vmr/train/init_from.py
starts them) and w_ft the run's best.pt, are written as best.pt of a copy of the run and
evaluated on validation and test (`vmr eval --split valid|test`). a = 0 is the zero-shot model,
a = 1 the fine-tuned one. Nothing is trained.

    .venv/bin/python bench/transfer_interpolate.py --source SOURCE_RUN --work OUT \\
        --runs RUN_10pct_s1 RUN_10pct_s2 ... [--alphas 0 0.25 0.5 0.75 1]

Prints one line per run and alpha, then the mean ± std per alpha over the runs given (give the
seeds of one row and one fraction together)."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from common import VMR, sh, use_checkout

use_checkout()


def interpolated(source: dict, tuned: dict, a: float) -> dict:
    """The model state at `a` between the start and the fine-tuned weights; a weight the
    source has no tensor of that shape for (the target's ID rows) starts at zero."""
    import torch

    out = {}
    for k, v in tuned.items():
        s = source.get(k)
        s = s if s is not None and s.shape == v.shape else torch.zeros_like(v)
        out[k] = s + a * (v - s) if v.is_floating_point() else v
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, required=True, help="the run the transfers started from")
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="finished --init-from runs")
    ap.add_argument("--work", type=Path, required=True, help="where the interpolated copies go")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    a = ap.parse_args()
    source = torch.load(a.source / "best.pt", weights_only=True)["model"]
    scores: dict[float, list[tuple[float, float]]] = {}
    for run in a.runs:
        tuned = torch.load(run / "best.pt", weights_only=True)
        for alpha in a.alphas:
            d = a.work / f"{run.name}-a{alpha:g}"
            if not (d / "metrics_test.json").exists():
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(run, d, ignore=shutil.ignore_patterns("checkpoint.pt", "metrics_*"))
                torch.save({**tuned, "model": interpolated(source, tuned["model"], alpha)},
                           d / "best.pt")
                for split in ("valid", "test"):
                    sh([*VMR, "eval", "--run", d, "--split", split, "--k", "10"],
                       a.work / f"{d.name}.{split}.log")
            v, t = (json.loads((d / f"metrics_{s}.json").read_text())["NDCG@10"]
                    for s in ("valid", "test"))
            scores.setdefault(alpha, []).append((v, t))
            print(f"{run.name} a={alpha:g}: valid NDCG@10 {v:.4f}  test {t:.4f}", flush=True)
    print("\n| a | runs | valid NDCG@10 | test NDCG@10 |\n|---:|---:|---:|---:|")
    for alpha, xs in sorted(scores.items()):
        cols = []
        for i in (0, 1):
            vals = [x[i] for x in xs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cols.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
        print(f"| {alpha:g} | {len(xs)} | {cols[0]} | {cols[1]} |")


if __name__ == "__main__":
    main()
