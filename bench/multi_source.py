"""Is Beauty + Sports a better transfer source than Beauty alone? (issue 23, part 2)

1. Beauty (5-core, title + brand + categories) and Sports (`amazon_sports_dev`, its generated
   text ids) prepared and encoded with MiniLM; `vmr combine` makes Beauty + Sports one dataset.
2. One source run per `--sources NAME:EPOCHS`, vmr's default config with `train.epochs=EPOCHS`
   (an upper bound: early stopping may end sooner), seed 1, one thread. An epoch of Beauty +
   Sports is 228 batches, one of Beauty 88: `beauty:31` makes as many steps as
   `beauty+sports:12`. `beauty:31:model.id_dropout=0.2` adds --set overrides to the source run.
3. Each source goes through bench/cold_transfer.py's transfer part (Scientific, MiniLM text,
   the given user fractions and seeds, `--source RUN`), in its own work folder, as soon as it
   is trained (--jobs sources at once, one run each); the rows that need no source (scratch,
   SASRec) run once, with the first source.

Writes WORK/summary.md (validation and test tables: source x row x fraction) and
WORK/summary.json. Resumable: finished runs are kept.

    .venv/bin/python bench/multi_source.py --sources beauty:12 beauty:31 beauty+sports:12
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


def source_pipeline(spec: str, first: bool, data: dict, a) -> tuple[list[dict], dict]:
    """Train one source, then its transfer rows; (result rows, the source's summary)."""
    name, epochs, *sets = spec.split(":")
    tag = "".join(f"-{k.rpartition('.')[2]}{v}" for k, _, v in (x.partition("=") for x in sets))
    run = a.work / "runs" / f"{name}-e{epochs}{tag}-s1"
    ct.train(data[name], run, 1, [f"train.epochs={epochs}", "train.threads=1", *sets], [])
    rows = [r for r in a.rows if r in NEEDS_SOURCE or first]
    work = a.work / f"transfer-from-{name}-e{epochs}{tag}"
    cmd = [sys.executable, Path(__file__).parent / "cold_transfer.py", "--datasets",
           "scientific", "--parts", "transfer", "--source", run, "--work", work,
           "--seeds", *a.seeds, "--fractions", *a.fractions, "--transfer-rows", *rows,
           "--jobs", 1]
    subprocess.run([str(c) for c in cmd], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    got = json.loads((work / "full" / "summary.json").read_text())["transfer"]
    info = json.loads((run / "run.json").read_text())
    src = {"run": str(run), "best_valid": (info.get("best_valid") or {}).get("NDCG@10"),
           "best_epoch": info.get("best_epoch"), "epochs": int(epochs),
           "items": json.loads((data[name] / "dataset.json").read_text())["items"]}
    return [{**r, "label": f"{r['label']} (from {spec})" if r["label"] in NEEDS_SOURCE
             else r["label"]} for r in got], src


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "multi_source")
    ap.add_argument("--sources", nargs="+", default=["beauty:12", "beauty:31", "beauty+sports:12"],
                    help="NAME:EPOCHS[:KEY=VALUE...] (--set overrides of the source run), NAME "
                         "one of " + ", ".join(SOURCES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--fractions", nargs="+", type=int, default=[10, 25])
    ap.add_argument("--rows", nargs="+", default=["fine-tuned", "zero-shot", "scratch"],
                    choices=list(ct.TRANSFER_ROWS))
    ap.add_argument("--jobs", type=int, default=2, help="sources at once")
    a = ap.parse_args()
    if any(s.split(":")[0] not in SOURCES or not s.split(":")[1:2] or not s.split(":")[1].isdigit()
           for s in a.sources):
        ap.error(f"--sources: NAME:EPOCHS[:KEY=VALUE...] with NAME in {', '.join(SOURCES)}")
    t0 = time.time()
    data = catalogues(a.work)
    with ThreadPoolExecutor(a.jobs) as pool:
        done = list(pool.map(lambda k: source_pipeline(a.sources[k], k == 0, data, a),
                             range(len(a.sources))))
    results = [r for rows, _ in done for r in rows]
    sources = {spec: src for spec, (_, src) in zip(a.sources, done)}
    md = [f"# Transfer to Scientific from one and from two catalogues, seeds "
          f"{' '.join(map(str, a.seeds))}",
          f"`{' '.join(sys.argv)}` on {platform.node()} ({platform.machine()}, {os.cpu_count()} "
          f"cores), {(time.time() - t0) / 60:.1f} min wall for this invocation", "",
          "Sources (seed 1, vmr's defaults but train.epochs):", ""]
    md += [f"- {n}: {s['items']} items, best valid NDCG@10 {s['best_valid']:.4f} at epoch "
           f"{s['best_epoch']} of at most {s['epochs']}" for n, s in sources.items()] + [""]
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
