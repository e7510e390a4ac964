"""The Amazon Beauty reproduction: prepare -> extract text -> train -> eval, every row over
several seeds, plus the RecBole SASRec peer under a wall-clock cap. Everything is resumable:
rerun the same command and finished steps are skipped.

    .venv/bin/python bench/beauty.py --seeds 1 2 3
    .venv/bin/python bench/beauty.py --rows full sasrec pop --seeds 1 --recbole-minutes 0

Writes bench/out/beauty/{summary.md, summary.json, report/report.md, report/report.png}.
Selection is on the validation split only; test numbers are read once, at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VMR = [sys.executable, "-m", "vmr"]

# row label -> (cache pooling, --set overrides). "full" is vmr's default model plus pre-training.
ROWS = {
    "full": ("cls", ["model.kind=vmr", "pretrain.epochs=5"]),
    "no-pretrain": ("cls", ["model.kind=vmr", "pretrain.epochs=0"]),
    "mean-pooling": ("mean", ["model.kind=vmr", "pretrain.epochs=5"]),
    "share-none": ("cls", ["model.kind=vmr", "pretrain.epochs=5", "model.share=none"]),
    "no-item-id": ("cls", ["model.kind=vmr", "pretrain.epochs=5", "model.item_id_emb=false"]),
    "masked-objective": ("cls", ["model.kind=vmr", "pretrain.epochs=5", "model.objective=masked"]),
    "sasrec": (None, ["model.kind=sasrec"]),
    "pop": (None, ["model.kind=pop"]),
}
PAPER = {"HR@5": 0.0558, "HR@10": 0.0620, "NDCG@5": 0.0334, "NDCG@10": 0.0418}
METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")


def sh(cmd: list[str], log: Path | None = None, env: dict | None = None) -> float:
    t0 = time.time()
    print("$", " ".join(map(str, cmd)), flush=True)
    with open(log, "a") if log else open(os.devnull, "w") as f:
        r = subprocess.run(cmd, cwd=REPO, stdout=f if log else None, stderr=subprocess.STDOUT if log else None,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}" + (f" (log: {log})" if log else ""))
    return time.time() - t0


def prepare(shared: Path, work: Path) -> Path:
    ds = work / "dataset"
    if not (ds / "dataset.json").exists():
        sh(VMR + ["prepare", "--interactions", shared / "Beauty.txt", "--format", "sequences",
                  "--items", shared / "Beauty_items.tsv", "--items-id-col", "item_id",
                  "--text-columns", "title,brand,categories", "--out", ds])
    return ds


def extract(ds: Path, work: Path, pooling: str, timings: dict) -> Path:
    cache = work / f"features_{pooling}.h5"
    done = work / f"features_{pooling}.done"
    if not done.exists():
        secs = sh(VMR + ["extract", "--data", ds, "--modality", "text", "--model", "minilm",
                         "--pooling", pooling, "--cache", cache], work / f"extract_{pooling}.log")
        done.write_text(f"{secs:.1f}\n")
    timings[f"extract_{pooling}_s"] = float(done.read_text())
    return cache


def train_and_eval(ds: Path, work: Path, row: str, seed: int, caches: dict, threads: int,
                   extra: list[str]) -> Path:
    pooling, sets = ROWS[row]
    run = work / "runs" / f"{row}-s{seed}"
    info = run / "run.json"
    finished = info.exists() and json.loads(info.read_text()).get("status") == "finished"
    if not finished:
        cmd = VMR + ["train", "--data", ds, "--out", run]
        if (run / "checkpoint.pt").exists():
            cmd += ["--resume"]
            for s in extra:                      # e.g. a new time budget for the continued run
                cmd += ["--set", s]
        else:
            if pooling:
                cmd += ["--cache", caches[pooling]]
            for s in sets + [f"train.seed={seed}", f"train.threads={threads}"] + extra:
                cmd += ["--set", s]
        run.mkdir(parents=True, exist_ok=True)
        sh(cmd, run / "train.log")
        meta = json.loads(info.read_text())
        meta["label"] = row
        info.write_text(json.dumps(meta, indent=2) + "\n")
    if not (run / "metrics_test.json").exists():
        t = sh(VMR + ["eval", "--run", run, "--k", "5", "10", "--split", "test"], run / "eval.log")
        (run / "eval_seconds.txt").write_text(f"{t:.2f}\n")
    return run


def run_stats(run: Path) -> dict:
    rows = [r for r in csv.DictReader(open(run / "metrics.csv"))] if (run / "metrics.csv").exists() else []
    seq = [r for r in rows if r["stage"] == "sequence"]
    info = json.loads((run / "run.json").read_text())
    out = {"test": json.loads((run / "metrics_test.json").read_text()),
           "best_epoch": info.get("best_epoch"), "epochs": len(seq),
           "train_seconds": info.get("train_seconds")}
    if seq:
        out["s_per_epoch"] = sum(float(r["seconds"]) for r in seq) / len(seq)
        ev = [float(r["eval_seconds"]) for r in seq if r.get("eval_seconds")]
        out["s_per_eval"] = sum(ev) / len(ev) if ev else None
        best = info.get("best_epoch")
        if best is not None:
            out["s_to_best"] = sum(float(r["seconds"]) + float(r["eval_seconds"] or 0)
                                   for r in rows if r["stage"] == "pretrain" or int(r["epoch"]) <= best)
    return out


def mean_std(xs):
    m = sum(xs) / len(xs)
    s = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return m, s


def recbole(ds: Path, work: Path, minutes: float, seed: int) -> dict | None:
    py = REPO / ".venv-recbole" / "bin" / "python"
    out = work / "recbole"
    if minutes <= 0:
        return None
    if not py.exists():
        print("RecBole env missing: run `make recbole-env` (skipping the peer row)")
        return None
    if not (out / "recbole.json").exists():
        sh([py, "bench/recbole_peer.py", "--data", ds, "--out", out, "--minutes", str(minutes),
            "--seed", str(seed), "--threads", "1"], work / "recbole.log")
    return json.loads((out / "recbole.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "amazon_beauty")
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "beauty")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--ablation-seeds", nargs="+", type=int, default=None,
                    help="seeds for rows other than full/sasrec/pop [default: --seeds]")
    ap.add_argument("--parallel", type=int, default=2, help="training runs at once (1 thread each)")
    ap.add_argument("--recbole-minutes", type=float, default=12.0)
    ap.add_argument("--set", dest="extra", action="append", default=[],
                    help="extra --set for every vmr/sasrec run")
    a = ap.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict = {}
    ds = prepare(a.shared, work)
    caches = {p: extract(ds, work, p, timings) for p in
              sorted({ROWS[r][0] for r in a.rows if ROWS[r][0]})}
    jobs = []
    for row in a.rows:
        seeds = a.seeds if (row in ("full", "sasrec", "pop") or a.ablation_seeds is None) else a.ablation_seeds
        jobs += [(row, s) for s in seeds]
    threads = 1 if a.parallel > 1 else 0
    with ThreadPoolExecutor(a.parallel) as pool:
        runs = list(pool.map(lambda j: (j, train_and_eval(ds, work, j[0], j[1], caches, threads, a.extra)), jobs))
    peer = recbole(ds, work, a.recbole_minutes, a.seeds[0])
    sh(VMR + ["report", *[r for _, r in runs], "--out", work / "report"])

    table, stats = {}, {}
    for (row, seed), run in runs:
        st = run_stats(run)
        stats.setdefault(row, []).append(st)
    lines = ["| row | seeds | " + " | ".join(METRICS) + " | best epoch | s/epoch | s/eval |",
             "|---" * (len(METRICS) + 5) + "|"]
    for row, sts in stats.items():
        cells = []
        for k in METRICS:
            m, s = mean_std([st["test"][k] for st in sts])
            cells.append(f"{m:.4f} ± {s:.4f}")
            table.setdefault(row, {})[k] = [m, s]
        be = ", ".join(str(st["best_epoch"] + 1) if st["best_epoch"] is not None else "-" for st in sts)
        spe = [st["s_per_epoch"] for st in sts if st.get("s_per_epoch")]
        spv = [st["s_per_eval"] for st in sts if st.get("s_per_eval")]
        lines.append(f"| {row} | {len(sts)} | " + " | ".join(cells) + f" | {be} | "
                     + (f"{sum(spe) / len(spe):.1f}" if spe else "-") + " | "
                     + (f"{sum(spv) / len(spv):.2f}" if spv else "-") + " |")
    lines.append("| paper Table 2 (Beauty) | 10 | " + " | ".join(
        f"{PAPER[k]:.4f}" if k in PAPER else "-" for k in METRICS) + " | - | - | - |")
    if peer:
        t = peer.get("test") or {}
        lines.append("| RecBole SASRec (capped) | 1 | " + " | ".join(
            f"{t[k]:.4f}" if k in t else "-" for k in METRICS) + f" | {peer.get('best_epoch', '-')} | "
            f"{peer.get('s_per_epoch', float('nan')):.1f} | {peer.get('s_per_eval', float('nan')):.2f} |")
    summary = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
               "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "wall_s": round(time.time() - t0, 1), "timings": timings, "table": table,
               "runs": {f"{row}-s{seed}": run_stats(run) for (row, seed), run in runs},
               "recbole": peer}
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (work / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nsummary: {work / 'summary.md'}; report: {work / 'report' / 'report.md'}")


if __name__ == "__main__":
    main()
