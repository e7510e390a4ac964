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

from common import REPO, VMR

# row label -> (cache pooling, --set overrides). "full" is vmr's default model plus pre-training.
ROWS = {
    "full": ("cls", ["model.kind=vmr", "pretrain.epochs=5"]),
    # the same, validated (early stopping, checkpoint choice) with the user's past items ranked
    # too: RecBole's protocol (issue 22)
    "full-inc": ("cls", ["model.kind=vmr", "pretrain.epochs=5", "eval.history=include"]),
    "no-pretrain": ("cls", ["model.kind=vmr", "pretrain.epochs=0"]),
    "mean-pooling": ("mean", ["model.kind=vmr", "pretrain.epochs=5"]),
    "share-none": ("cls", ["model.kind=vmr", "pretrain.epochs=5", "model.share=none"]),
    "no-item-id": ("cls", ["model.kind=vmr", "pretrain.epochs=5", "model.item_id_emb=false"]),
    "masked-objective": ("cls", ["model.kind=vmr", "pretrain.epochs=5", "model.objective=masked"]),
    # the reference SASRec of the issue (64-d, plain dot product, float32 as the reference was
    # trained), and SASRec given the same width and temperature as vmr's defaults (a fairness
    # check: is the gain only capacity?)
    "sasrec": (None, ["model.kind=sasrec", "model.d_model=64", "model.temperature=0",
                      "train.amp=false"]),
    "sasrec-d128-t10": (None, ["model.kind=sasrec", "model.d_model=128", "model.temperature=0.1",
                               "train.amp=false"]),
    "pop": (None, ["model.kind=pop"]),
}
MAIN = ("full", "sasrec", "pop")
PAPER = {"HR@5": 0.0558, "HR@10": 0.0620, "NDCG@5": 0.0334, "NDCG@10": 0.0418}
METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")


def sh(cmd: list[str], log: Path | None = None, env: dict | None = None) -> float:
    t0 = time.time()
    print("$", " ".join(map(str, cmd)), flush=True)
    with open(log, "a") if log else open(os.devnull, "w") as f:
        r = subprocess.run(cmd, cwd=REPO, stdout=f if log else None,
                           stderr=subprocess.STDOUT if log else None,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}"
                         + (f" (log: {log})" if log else ""))
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
        t0 = time.time()
        sh(cmd, run / "train.log")
        (run / "window.json").write_text(json.dumps({"start": t0, "end": time.time()}) + "\n")
        meta = json.loads(info.read_text())
        meta["label"] = row
        info.write_text(json.dumps(meta, indent=2) + "\n")
    # both protocols: the user's past items ranked too (RecBole's), then left out (S3-Rec's)
    inc = run / "metrics_test_include.json"
    if not inc.exists():
        sh(VMR + ["eval", "--run", run, "--k", "5", "10", "--split", "test", "--include-history"],
           run / "eval-inc.log")
        (run / "metrics_test.json").rename(inc)
    if not (run / "metrics_test.json").exists():
        t = sh(VMR + ["eval", "--run", run, "--k", "5", "10", "--split", "test",
                      "--exclude-history"], run / "eval.log")
        (run / "eval_seconds.txt").write_text(f"{t:.2f}\n")
    return run


def run_stats(run: Path) -> dict:
    rows = [r for r in csv.DictReader(open(run / "metrics.csv"))] if (run / "metrics.csv").exists() else []
    seq = [r for r in rows if r["stage"] == "sequence"]
    info = json.loads((run / "run.json").read_text())
    inc = run / "metrics_test_include.json"
    out = {"test": json.loads((run / "metrics_test.json").read_text()),
           "test_include": json.loads(inc.read_text()) if inc.exists() else None,
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


def epochs_inside(run: Path, start: float, end: float) -> list[dict]:
    """The sequence epochs of a run that lay inside [start, end]. metrics.csv holds durations, not
    clock times: epoch ends are placed by walking back from the run's recorded end."""
    wf = run / "window.json"
    if not (run / "metrics.csv").exists() or not wf.exists():
        return []
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    t = json.loads(wf.read_text())["end"]
    spans = []
    for r in reversed(rows):
        d = float(r["seconds"]) + float(r["eval_seconds"] or 0)
        spans.append((t - d, t, r))
        t -= d
    return [r for a, b, r in spans if r["stage"] == "sequence" and a >= start and b <= end]


def same_window(runs, work: Path, peer: dict | None) -> dict | None:
    """vmr's seconds per epoch and per validation, over the epochs that ran while the peer ran."""
    wf = work / "recbole" / "window.json"
    if not peer or not wf.exists():
        return None
    w = json.loads(wf.read_text())
    eps = [(f"{row}-s{seed}", r) for (row, seed), run in runs if row != "pop"
           for r in epochs_inside(run, w["start"], w["end"])]
    if not eps:
        return None
    spe = sum(float(r["seconds"]) for _, r in eps) / len(eps)
    ev = [float(r["eval_seconds"]) for _, r in eps if r["eval_seconds"]]
    spv = sum(ev) / len(ev) if ev else None
    return {"runs": sorted({n for n, _ in eps}), "epochs": len(eps),
            "vmr_s_per_epoch": spe, "vmr_s_per_eval": spv,
            "peer_s_per_epoch": peer.get("s_per_epoch"), "peer_s_per_eval": peer.get("s_per_eval"),
            "epoch_ratio": spe / peer["s_per_epoch"] if peer.get("s_per_epoch") else None,
            "eval_ratio": spv / peer["s_per_eval"] if spv and peer.get("s_per_eval") else None}


def protocol_lines(stats: dict) -> list[str]:
    """Test HR@10 / NDCG@10 with the history ranked too and left out, and their ratio per run
    (issue 22), for the rows whose runs were evaluated both ways."""
    lines = ["", "Both protocols (test; included = the user's past items ranked too, RecBole's; "
             "excluded = left out, S3-Rec's and the table above):", "",
             "| row | seeds | included: HR@10 | included: NDCG@10 | excluded: HR@10 | "
             "excluded: NDCG@10 | included / excluded NDCG@10 |", "|---|---:|---:|---:|---:|---:|---:|"]
    cell = lambda xs: "{:.4f} ± {:.4f}".format(*mean_std(xs))   # noqa: E731
    for row, sts in stats.items():
        sts = [st for st in sts if st.get("test_include")]
        if not sts:
            continue
        inc = [st["test_include"] for st in sts]
        exc = [st["test"] for st in sts]
        ratio = mean_std([i["NDCG@10"] / e["NDCG@10"] for i, e in zip(inc, exc)])
        lines.append(f"| {row} | {len(sts)} | {cell([i['HR@10'] for i in inc])} | "
                     f"{cell([i['NDCG@10'] for i in inc])} | {cell([e['HR@10'] for e in exc])} | "
                     f"{cell([e['NDCG@10'] for e in exc])} | {ratio[0]:.3f} ± {ratio[1]:.3f} |")
    return lines + [""]


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
        t0 = time.time()
        sh([py, "bench/recbole_peer.py", "--data", ds, "--out", out, "--minutes", str(minutes),
            "--seed", str(seed), "--threads", "1"], work / "recbole.log")
        (out / "window.json").write_text(json.dumps({"start": t0, "end": time.time()}) + "\n")
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
    ap.add_argument("--ablation-set", dest="ablation_extra", action="append", default=[],
                    help="extra --set for the ablation rows only (e.g. a time budget)")
    a = ap.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict = {}
    ds = prepare(a.shared, work)
    caches = {p: extract(ds, work, p, timings) for p in
              sorted({ROWS[r][0] for r in a.rows if ROWS[r][0]})}
    def seeds_of(row):
        main_row = row in MAIN or a.ablation_seeds is None
        return a.seeds if main_row else a.ablation_seeds

    # main rows first, then the ablations seed-major (seed 1 of every row first), so a run cut
    # short still covers every row
    main_rows = [r for r in a.rows if r in MAIN]
    abl_rows = [r for r in a.rows if r not in MAIN]
    jobs = [(row, s) for group in (main_rows, abl_rows)
            for s in sorted({s for r in group for s in seeds_of(r)})
            for row in group if s in seeds_of(row)]
    threads = 1 if a.parallel > 1 else 0
    with ThreadPoolExecutor(a.parallel) as pool:
        # the peer takes one slot beside vmr's runs, so its speed is measured in the same minutes
        peer_f = pool.submit(recbole, ds, work, a.recbole_minutes, a.seeds[0])
        runs = list(pool.map(lambda j: (j, train_and_eval(
            ds, work, j[0], j[1], caches, threads,
            a.extra + ([] if j[0] in MAIN else a.ablation_extra))), jobs))
        peer = peer_f.result()
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
        be = ", ".join(str(st["best_epoch"]) if st["best_epoch"] is not None else "-" for st in sts)
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
    speed = same_window(runs, work, peer)
    if speed:
        lines.append(f"\nSame minutes as the peer ({speed['epochs']} vmr epochs of "
                     f"{', '.join(speed['runs'])}): vmr {speed['vmr_s_per_epoch']:.1f} s/epoch, "
                     f"{speed['vmr_s_per_eval'] or float('nan'):.2f} s/validation; RecBole "
                     f"{speed['peer_s_per_epoch']:.1f} s/epoch, {speed['peer_s_per_eval']:.2f} "
                     f"s/validation -> ratios {speed['epoch_ratio']:.3f} and "
                     f"{speed['eval_ratio'] or float('nan'):.3f} (target <= 0.1 each)")
    lines += protocol_lines(stats)
    summary = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
               "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "wall_s": round(time.time() - t0, 1), "timings": timings, "table": table,
               "runs": {f"{row}-s{seed}": run_stats(run) for (row, seed), run in runs},
               "recbole": peer, "same_window": speed}
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (work / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nsummary: {work / 'summary.md'}; report: {work / 'report' / 'report.md'}")


if __name__ == "__main__":
    main()
