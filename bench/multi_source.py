"""Is Beauty + Sports a better transfer source than Beauty alone? (issue 23, part 2)

1. Beauty (5-core, title + brand + categories) and Sports (`amazon_sports_dev`, its generated
   text ids) prepared and encoded with MiniLM; `vmr combine` makes Beauty + Sports one dataset.
2. One source run per catalogue set, the same config (vmr's defaults) and the same budget:
   `train.epochs=EPOCHS` (early stopping may end sooner), seed 1, one thread each.
3. Each source goes through bench/cold_transfer.py's transfer part (Scientific, MiniLM text,
   the given user fractions and seeds, `--source RUN`), each in its own work folder; the rows
   that need no source (scratch, SASRec) run once, with the first source.

Writes WORK/summary.md (validation and test tables: source x row x fraction) and
WORK/summary.json. Resumable: finished runs are kept.

    .venv/bin/python bench/multi_source.py --epochs 10 --seeds 1 2 3 --fractions 10 25
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cold_transfer as ct   # bench/ is on sys.path: the script's own folder
from common import REPO, VMR
from common import sh

SOURCES = {"beauty": ("beauty",), "beauty+sports": ("beauty", "sports")}
NEEDS_SOURCE = [r for r, (from_source, _, _) in ct.TRANSFER_ROWS.items() if from_source]


def catalogues(work: Path) -> dict[str, Path]:
    """The prepared, encoded catalogues and their combinations, by source name."""
    beauty, sports = ct.SHARED / "amazon_beauty", ct.SHARED / "amazon_sports_dev"
    parts = {
        "beauty": ct.prepare(work / "beauty", beauty / "Beauty.txt", beauty / "Beauty_items.tsv",
                             "title,brand,categories", 5, new=False),
        "sports": ct.prepare(work / "sports", sports / "Sports_dev.txt",
                             sports / "Sports_items.tsv", "text", 1, new=False),
    }
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ct.minilm, parts.values()))
    out = {}
    for name, members in SOURCES.items():
        if len(members) == 1:
            out[name] = parts[members[0]]
            continue
        ds = work / name
        if not (ds / "features.h5").exists():
            cmd = VMR + ["combine", "--names", ",".join(members), "--out", ds]
            for m in members:
                cmd += ["--data", parts[m]]
            sh(cmd, work / f"{name}.combine.log")
        out[name] = ds
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "multi_source")
    ap.add_argument("--epochs", type=int, default=10, help="every source run's train.epochs")
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--fractions", nargs="+", type=int, default=[10, 25])
    ap.add_argument("--rows", nargs="+", default=["fine-tuned", "zero-shot", "scratch"],
                    choices=list(ct.TRANSFER_ROWS))
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    t0 = time.time()
    data = catalogues(a.work)
    runs = {name: a.work / "runs" / f"{name}-e{a.epochs}-s1" for name in a.sources}
    with ThreadPoolExecutor(a.jobs) as pool:
        list(pool.map(lambda n: ct.train(data[n], runs[n], 1, [f"train.epochs={a.epochs}",
                                                                "train.threads=1"], []),
                      a.sources))
    results, sources = [], {}
    for k, name in enumerate(a.sources):
        rows = [r for r in a.rows if r in NEEDS_SOURCE or k == 0]
        work = a.work / f"transfer-from-{name}"
        cmd = [sys.executable, Path(__file__).parent / "cold_transfer.py", "--datasets",
               "scientific", "--parts", "transfer", "--source", runs[name], "--work", work,
               "--seeds", *a.seeds, "--fractions", *a.fractions, "--transfer-rows", *rows,
               "--jobs", a.jobs]
        subprocess.run([str(c) for c in cmd], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        got = json.loads((work / "full" / "summary.json").read_text())["transfer"]
        results += [{**r, "label": f"{r['label']} (from {name})" if r["label"] in NEEDS_SOURCE
                     else r["label"]} for r in got]
        info = json.loads((runs[name] / "run.json").read_text())
        sources[name] = {"run": str(runs[name]), "best_valid": info.get("best_valid"),
                         "best_epoch": info.get("best_epoch"), "items": json.loads(
                             (data[name] / "dataset.json").read_text())["items"]}
    md = [f"# Transfer to Scientific from one and from two catalogues, seeds "
          f"{' '.join(map(str, a.seeds))}",
          f"`{' '.join(sys.argv)}` on {platform.node()} ({platform.machine()}, {os.cpu_count()} "
          f"cores), {(time.time() - t0) / 60:.1f} min wall for this invocation", "",
          "Sources (seed 1, vmr's defaults, train.epochs = " f"{a.epochs}):", ""]
    md += [f"- {n}: {s['items']} items, best valid {s['best_valid']} at epoch {s['best_epoch']}"
           for n, s in sources.items()] + [""]
    cols = [f"valid {p} %" for p in a.fractions]
    md += ct.table("validation NDCG@10 (best epoch; zero-shot: the source on the target's "
                   "validation split)", results, cols, "NDCG@10")
    for metric in ct.METRICS:
        md += ct.table("test", results, [f"{p} % of users" for p in a.fractions], metric)
    a.work.mkdir(parents=True, exist_ok=True)
    (a.work / "summary.md").write_text("\n".join(md) + "\n")
    (a.work / "summary.json").write_text(json.dumps({"sources": sources, "transfer": results},
                                                    indent=1) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
