"""Default parallelism beside other work (issue 25): `vmr train`, `vmr eval` and `vmr extract`
(text, video) at the default thread policy (vmr/parallel.py) against one thread, all cores, and
all cores as before this policy (OpenMP's default spin-then-sleep waiting), alone and beside 1
and N busy processes (N = the cores this process may use; a busy process is a pure-Python spin
loop started before and killed after its condition). Every command is the real CLI in a fresh
process; within a condition the settings take turns, `--reps` rounds, and the ratios are of
medians taken in the same run. `os.getloadavg()` is recorded as each measurement starts.

    .venv/bin/python bench/contention.py                      # all four parts, 1 round
    .venv/bin/python bench/contention.py --parts train --reps 3

- train: Amazon Scientific as bench/scientific.py runs it (`vmr prepare --kcore 1`,
  `vmr import-features` text + image), `vmr train --modalities text,image`, `--epochs` epochs
  (validation each epoch); sequences/s of the last epoch from metrics.csv.
- eval: `vmr eval` of one such run (the full model encodes all items, then ranks every test
  user among all of them); users/s of the ranking from metrics_test.json.
- extract text: the first `--texts` Scientific item texts, minilm; extract video: `--videos`
  generated clips (bench/extract.py), efficientnet-lite0, 1 fps; items/s from the summary.
Writes bench/out/contention/{results.json, results.md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, VMR, sh, use_checkout

SHARED = Path(os.environ.get("VMR_SHARED", REPO.parent / "shared")) / "data" / "amazon_scientific_mm"
OUT = REPO / "bench" / "out" / "contention"
SPIN = [sys.executable, "-c", "while True: pass"]
BEFORE = {"OMP_WAIT_POLICY": ""}        # libgomp reads an empty value as unset: its own default


def cores() -> int:
    from vmr.parallel import usable_cores

    return usable_cores()


def settings(part: str, n: int) -> dict[str, tuple[list, dict]]:
    """name -> (extra CLI arguments, extra environment) for one part."""
    if part == "train":
        return {"default": ([], {}), "one": (["--set", "train.threads=1"], {}),
                "all": (["--set", f"train.threads={n}"], {}),
                "before": (["--set", f"train.threads={n}"], BEFORE)}
    workers = ["--workers", str(max(1, n - 1))] if part == "video" else []
    return {"default": ([], {}), "one": (["--workers", "1"] if part == "video" else [],
                                         {"OMP_NUM_THREADS": "1"}),
            "all": (workers, {"OMP_NUM_THREADS": str(n)}),
            "before": (workers, {"OMP_NUM_THREADS": str(n), **BEFORE})}


# ------------------------------------------------------------------------------------ inputs
def scientific(work: Path) -> Path:
    ds = work / "sci"
    if not (work / "sci.ok").exists():
        sh(VMR + ["prepare", "--interactions", SHARED / "Scientific_dev.txt", "--format",
                  "sequences", "--items", SHARED / "Scientific_items.tsv", "--items-id-col",
                  "item_id", "--text-columns", "text", "--kcore", "1", "--out", ds],
           work / "prepare.log")
        for m in ("text", "image"):
            sh(VMR + ["import-features", "--data", ds, "--modality", m, "--features",
                      SHARED / f"Scientific_clip_{m}.npy", "--ids", SHARED / "Scientific_item_ids.txt",
                      "--overwrite"], work / f"import_{m}.log")
        (work / "sci.ok").write_text("ok\n")
    return ds


def eval_run(work: Path, ds: Path, epochs: int) -> Path:
    run = work / "eval-run"
    if not (run / "best.pt").exists():
        shutil.rmtree(run, ignore_errors=True)
        sh(VMR + ["train", "--data", ds, "--out", run, "--modalities", "text,image", "--set",
                  f"train.epochs={epochs}", "--set", "train.threads=1"], work / "eval-run.log")
    return run


def text_items(work: Path, n: int) -> Path:
    import polars as pl

    data = work / f"text{n}"
    if not (data / "items.parquet").exists():
        data.mkdir(parents=True, exist_ok=True)
        items = pl.read_csv(SHARED / "Scientific_items.tsv", separator="\t", quote_char=None,
                            schema_overrides={"item_id": pl.Utf8}).head(n)
        pl.DataFrame({"item": items["item_id"], "text": items["text"], "title": items["text"],
                      "image": [None] * n, "video": [None] * n},
                     schema={c: pl.Utf8 for c in ("item", "text", "title", "image", "video")}
                     ).write_parquet(data / "items.parquet")
    return data


def video_items(work: Path, n: int) -> Path:
    from extract import video_dataset

    root = work / f"video{n}"
    return root / "ds" if (root / "ds" / "items.parquet").exists() else video_dataset(root, n, 10.0)


# ------------------------------------------------------------------------------- measuring
def run(cmd: list, env: dict, log: Path) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                            **env})
    log.write_text(r.stdout + r.stderr)
    if r.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))} (log: {log})")
    return r.stdout + r.stderr


def measure(part: str, name: str, args: list, env: dict, inputs: dict, work: Path,
            epochs: int) -> dict:
    """One run of one part at one setting: {"rate", "unit", "threads", ...}."""
    log = work / "logs" / f"{part}-{name}-{time.time():.0f}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if part == "train":
        out = work / "runs" / name
        shutil.rmtree(out, ignore_errors=True)
        run(VMR + ["train", "--data", inputs["sci"], "--out", out, "--modalities", "text,image",
                   "--set", f"train.epochs={epochs}", *args], env, log)
        rows = (out / "metrics.csv").read_text().splitlines()
        last = dict(zip(rows[0].split(","), rows[-1].split(",")))
        info = json.loads((out / "run.json").read_text())
        return {"rate": float(last["seq_per_s"]), "unit": "sequences/s",
                "threads": info["parallelism"], "valid_NDCG@10": info["best_valid"]["NDCG@10"],
                "loss": float(last["loss"])}
    if part == "eval":
        run(VMR + ["eval", "--run", inputs["run"], *args], env, log)
        m = json.loads((inputs["run"] / "metrics_test.json").read_text())
        return {"rate": m["parallelism"]["users_per_s"], "unit": "users/s",
                "threads": m["parallelism"], "NDCG@10": m["NDCG@10"]}
    data = inputs[part]
    text = run(VMR + ["extract", "--data", data, "--modality", part, "--cache",
                      work / f"{part}.h5", "--overwrite", *args], env, log)
    return extract_rate(text, part, log)


def extract_rate(text: str, part: str, log) -> dict:
    """Items/s (text) or frames/s (video: 10 frames a clip) from the extract summary."""
    m = re.search(r"\(([\d.]+) items/s, ([\d.]+) (?:texts|frames)/s", text)
    used = re.search(rf"{part}: ran on (.*)", text)
    if not m:
        raise SystemExit(f"cannot read the extract summary in {log}")
    return {"rate": float(m.group(2 if part == "video" else 1)),
            "unit": "frames/s" if part == "video" else "items/s",
            "threads": used.group(1) if used else None, "log": str(log)}


def condition(busy: int, parts: list, n: int, inputs: dict, work: Path, a) -> dict:
    """Every part at every setting, `a.reps` rounds, beside `busy` spin loops."""
    procs = [subprocess.Popen(SPIN) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0.0)
        res: dict = {}
        for _ in range(a.reps):
            for part in parts:
                for name, (args, env) in settings(part, n).items():
                    if name not in a.settings:
                        continue
                    load = os.getloadavg()
                    m = measure(part, name, args, env, inputs, work, a.epochs)
                    m["loadavg_at_start"] = [round(x, 2) for x in load]
                    res.setdefault(part, {}).setdefault(name, []).append(m)
                    print(f"busy {busy} {part:5s} {name:8s} {m['rate']:9.1f} {m['unit']}  "
                          f"load {load[0]:.1f}", flush=True)
        return res
    finally:
        for p in procs:
            p.kill()
            p.wait()


def summarise(results: dict) -> list[str]:
    lines = ["| beside | part | default | one thread | all cores | all cores, before | "
             "default / one | default / all | default / before | default's threads | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for busy, parts in results.items():
        for part, by in parts.items():
            med = {k: statistics.median(m["rate"] for m in v) for k, v in by.items()}
            med = {k: med.get(k, float("nan")) for k in ("default", "one", "all", "before")}
            used = by["default"][-1]["threads"]
            used = used if isinstance(used, str) else (
                f"{used['threads']} ({used.get('others_busy', '')} busy)"
                + (" changed" if used.get("changes") else ""))
            loads = [m["loadavg_at_start"][0] for v in by.values() for m in v]
            lines.append(
                f"| {busy} | {part} | " + " | ".join(f"{med[k]:.1f}" for k in
                                                     ("default", "one", "all", "before"))
                + f" | {med['default'] / med['one']:.2f} | {med['default'] / med['all']:.2f} | "
                f"{med['default'] / med['before']:.2f} | {used} | "
                f"{min(loads):.1f}-{max(loads):.1f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["train", "eval", "text", "video"],
                    choices=["train", "eval", "text", "video"])
    ap.add_argument("--busy", nargs="+", default=None, help="busy process counts [0 1 N]")
    ap.add_argument("--settings", nargs="+", default=["default", "one", "before"],
                    choices=["default", "one", "all", "before"],
                    help="all = every core with OpenMP's passive wait (what the default picks "
                         "on an idle machine); before = every core, OpenMP's own wait (the "
                         "default before this policy)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--videos", type=int, default=12)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # the spin loops are killed too
    use_checkout()
    n = cores()
    busy = [int(b) for b in a.busy] if a.busy else sorted({0, 1, n})
    OUT.mkdir(parents=True, exist_ok=True)
    inputs: dict = {}
    if {"train", "eval"} & set(a.parts):
        inputs["sci"] = scientific(OUT)
    if "eval" in a.parts:
        inputs["run"] = eval_run(OUT, inputs["sci"], 2)
    if "text" in a.parts:
        inputs["text"] = text_items(OUT, a.texts)
    if "video" in a.parts:
        inputs["video"] = video_items(OUT, a.videos)
    t0 = time.time()
    results = {b: condition(b, a.parts, n, inputs, OUT, a) for b in busy}
    machine = (f"{platform.node()} {platform.processor() or platform.machine()}, {n} usable "
               f"cores, {os.cpu_count()} CPUs")
    doc = {"command": " ".join(sys.argv), "machine": machine, "minutes": (time.time() - t0) / 60,
           "results": {str(b): r for b, r in results.items()}}
    (OUT / "results.json").write_text(json.dumps(doc, indent=1))
    md = [f"`{doc['command']}` on {machine}, {doc['minutes']:.0f} min; medians of "
          f"{a.reps} round(s); beside = busy spin loops", ""] + summarise(results)
    (OUT / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
