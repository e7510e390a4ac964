"""Cold items and transfer (issue 13), as a user runs them: `vmr prepare [--new-items]` ->
`vmr extract` / `vmr import-features` -> `vmr train [--init-from]` -> `vmr eval [--data]`.

1. New items: Beauty (MiniLM text) and Scientific (CLIP text + image, imported) prepared with
   `--new-items 0.1`; test metrics for new-item targets, seen-item targets and all, for the
   default model, the default with `model.id_dropout`, content only (`item_id_emb = false`),
   SASRec and popularity (Beauty, at 13-30 min a run here, without the id-dropout variant;
   PLAN below).
2. Frequency buckets: the same rows on the normal split, metrics by the target's number of
   training interactions (0, 1-4, 5-19, 20+); `vmr report` draws them (report_buckets.png).
3. Transfer Beauty -> Scientific, MiniLM text on both (Scientific's text extracted from
   Scientific_items.tsv), keeping 100 %, 25 % and 10 % of Scientific's users (a reproducible
   sample: users ordered by sha256 of (seed, id)): fine-tuned from the Beauty default run
   (`--init-from`, also with `--freeze`) vs the same model from scratch vs SASRec and popularity,
   plus zero-shot (`vmr eval --data`).
   Each fraction is its own dataset (its users' train, valid and test), so compare rows within a
   fraction.

Every row over --seeds (mean ± sample std). Resumable: finished runs and evaluations are skipped.

    .venv/bin/python bench/cold_transfer.py --seeds 1 2 3 --jobs 2          # the full study
    .venv/bin/python bench/cold_transfer.py --quick --datasets scientific    # a smoke check

--quick: one seed, 2 epochs, Beauty (if chosen) cut to 10 % of its users, user fractions 100 %
and 10 % only; minutes on 2 cores. Without Beauty the transfer part keeps its scratch and SASRec
rows only (there is no source run to fine-tune or to evaluate zero-shot). Writes
WORK/summary.md, WORK/summary.json and WORK/<dataset>/report/ (bench/out/cold_transfer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from functools import partial

from common import REPO, VMR, use_checkout
from common import sh as _sh

use_checkout()          # the evaluation helpers below import this checkout's vmr

sh = partial(_sh, append=True)   # one log per step, appended across reruns
SHARED = REPO.parent / "shared" / "data"
NEW_FRACTION = 0.1
USER_FRACTIONS = (100, 25, 10)

# row -> --set overrides (on top of vmr's defaults)
ROWS = {
    "default": [],
    "id-dropout": ["model.id_dropout=0.2"],
    "content-only": ["model.item_id_emb=false"],
    "sasrec": ["model.kind=sasrec"],
    "pop": ["model.kind=pop"],
}
# rows per (dataset, split): a Beauty run costs 13-30 min on one core of the shared VM, so Beauty
# keeps the rows the targets need (the normal split's default run is also the transfer
# source); the id-dropout variant runs on Scientific only (about a minute a run); "row:N" would
# run a row on the first N of --seeds only
PLAN = {
    ("beauty", "normal"): ("default", "pop"),
    ("beauty", "new-items"): ("default", "content-only", "sasrec", "pop"),
    ("scientific", "normal"): tuple(ROWS),
    ("scientific", "new-items"): tuple(ROWS),
}
# transfer rows -> (start from the Beauty source, --freeze, --set overrides); "fine-tuned" is
# today's --init-from, the others are issue 23's fine-tuning schedules
TRANSFER_ROWS = {
    "fine-tuned": (True, False, []),
    "fine-tuned-frozen": (True, True, []),
    "fine-tuned-freeze5": (True, False, ["train.freeze_epochs=5"]),
    "fine-tuned-staged3": (True, False, ["train.id_warmup=3"]),
    # before the ninth session's fix a transferred run pre-trained again on the target when its
    # source had pre-trained (Beauty's default run: pretrain.epochs = 5); these rows keep that
    "fine-tuned-pre5": (True, False, ["pretrain.epochs=5"]),
    "fine-tuned-frozen-pre5": (True, True, ["pretrain.epochs=5"]),
    "fine-tuned-lr0.1-pre5": (True, False, ["pretrain.epochs=5", "train.transfer_lr=0.1"]),
    "fine-tuned-staged3-pre5": (True, False, ["pretrain.epochs=5", "train.id_warmup=3"]),
    "fine-tuned-staged3-lr0.1-pre5": (True, False, ["pretrain.epochs=5", "train.id_warmup=3",
                                                    "train.transfer_lr=0.1"]),
    "fine-tuned-noid-pre5": (True, False, ["pretrain.epochs=5", "model.item_id_emb=false"]),
    "scratch": (False, False, []),
    "scratch-noid": (False, False, ["model.item_id_emb=false"]),
    "sasrec": (False, False, ["model.kind=sasrec"]),
    "pop": (False, False, ["model.kind=pop"]),
    "zero-shot": (True, False, []),
}
DEFAULT_TRANSFER = ("fine-tuned", "fine-tuned-frozen", "scratch", "sasrec", "pop", "zero-shot")
GROUPS = ("all", "seen", "new")
METRICS = ("NDCG@10", "HR@10")


def extended_row(table: dict, label: str) -> str:
    """A row of `table`, or BASE+KEY=VALUE[+...]: BASE with more --set overrides, added to
    `table` under that label (so a run's label names exactly what ran)."""
    base, *extra = label.split("+")
    if base not in table or any("=" not in e for e in extra):
        raise argparse.ArgumentTypeError(f"{label!r}: not a row ({', '.join(table)}) or "
                                         "ROW+KEY=VALUE[+KEY=VALUE...]")
    if extra and label not in table:
        entry = table[base]
        table[label] = (entry + extra if isinstance(entry, list)
                        else (*entry[:-1], entry[-1] + extra))
    return label


def _row_seeds(entry: str) -> tuple[str, int]:
    row, _, n = entry.partition(":")
    return row, int(n) if n else 99


def sample_users(src: Path, dst: Path, percent: int, seed: int = 0) -> Path:
    """A sequences file with `percent` % of src's users: those first by sha256(seed, user id),
    so a smaller sample is inside every larger one."""
    if dst.exists():
        return dst
    lines = [ln for ln in src.read_text().splitlines() if ln.strip()]
    key = lambda ln: hashlib.sha256(f"{seed}\0{ln.split()[0]}".encode()).hexdigest()
    keep = set(sorted(lines, key=key)[: max(1, round(len(lines) * percent / 100))])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(ln for ln in lines if ln in keep) + "\n")
    return dst


def without_last(src: Path, dst: Path) -> Path:
    """A sequences file with each user's last item dropped (users left with none are dropped)."""
    if not dst.exists():
        rows = [ln.split() for ln in src.read_text().splitlines() if ln.strip()]
        dst.write_text("\n".join(" ".join(r[:-1]) for r in rows if len(r) > 2) + "\n")
    return dst


def prepare(ds: Path, seqs: Path, items: Path, text_cols: str, kcore: int,
            new: float | bool) -> Path:
    """`vmr prepare` into ds; new: the share of items held out as new (True: NEW_FRACTION)."""
    new = NEW_FRACTION if new is True else new
    if not (ds / "dataset.json").exists():
        cmd = VMR + ["prepare", "--interactions", seqs, "--format", "sequences", "--items", items,
                     "--items-id-col", "item_id", "--text-columns", text_cols, "--kcore", kcore,
                     "--out", ds]
        if new:
            cmd += ["--new-items", new, "--new-items-seed", 0]
        sh(cmd, ds.parent / f"{ds.name}.prepare.log")
    return ds


def minilm(ds: Path, seed_cache: Path | None = None) -> Path:
    """MiniLM text features into DS/features.h5; a cache of a subset of the items (or of the
    same items) is copied in first, so only the missing rows are encoded."""
    cache = ds / "features.h5"
    done = ds / "features.done"
    if not done.exists():
        if seed_cache is not None and seed_cache.exists() and not cache.exists():
            shutil.copy(seed_cache, cache)
        sh(VMR + ["extract", "--data", ds, "--modality", "text", "--model", "minilm"],
           ds.parent / f"{ds.name}.extract.log")
        done.write_text("ok\n")
    return cache


def clip(ds: Path, shared: Path) -> None:
    if not (ds / "imported").exists():
        for m in ("text", "image"):
            sh(VMR + ["import-features", "--data", ds, "--modality", m, "--features",
                      shared / f"Scientific_clip_{m}.npy", "--ids", shared / "Scientific_item_ids.txt",
                      "--overwrite"], ds.parent / f"{ds.name}.import.log")
        (ds / "imported").write_text("ok\n")


def finished(run: Path) -> bool:
    info = run / "run.json"
    return info.exists() and json.loads(info.read_text()).get("status") == "finished"


def _wait_if_busy(run: Path, fresh_s: float = 300.0) -> None:
    """Another process (an earlier copy of this script) is training this run: its log moved
    less than fresh_s ago. Wait for it instead of starting it again."""
    log = run.parent / f"{run.name}.log"
    while (not finished(run) and (run / "run.json").exists() and log.exists()
           and time.time() - log.stat().st_mtime < fresh_s):
        time.sleep(20)


TRAINED: list[Path] = []   # runs trained by this invocation (the others were resumed)


def train(ds: Path, run: Path, seed: int, sets: list[str], extra: list[str],
          init_from: Path | None = None, freeze: bool = False) -> Path:
    _wait_if_busy(run)
    if not finished(run):
        TRAINED.append(run)
        if run.exists():
            shutil.rmtree(run)
        cmd = VMR + ["train", "--data", ds, "--out", run, "--seed", seed]
        if init_from is not None:
            cmd += ["--init-from", init_from] + (["--freeze"] if freeze else [])
        for s in sets + extra:
            cmd += ["--set", s]
        sh(cmd, run.parent / f"{run.name}.log")
    return run


def evaluate(run: Path, data: Path | None = None, split: str = "test") -> dict:
    """`vmr eval` of run (zero-shot on `data` if given) unless done; its metrics."""
    from vmr.data.dataset import load_dataset
    from vmr.model.rundir import RunDir, zero_shot_tag

    # a zero-shot file is found by its full tag: other draws of the users share the folder name
    tag = zero_shot_tag(load_dataset(data)) if data is not None else None

    def done() -> Path | None:
        rd = RunDir(run)
        return rd.find_zero_shot(split, tag) if data is not None else (
            rd.metrics_json(split) if rd.metrics_json(split).exists() else None)
    if done() is None:
        cmd = VMR + ["eval", "--run", run, "--k", "5", "10", "--split", split] + (
            ["--data", data] if data else [])
        sh(cmd, run.parent / f"{run.name}.eval.log")
    return json.loads(done().read_text())


def calibrated(run: Path) -> float | None:
    """The run's new-item gain (vmr/evaluate/new_item_gain.py). `vmr train` chooses it on
    validation since this issue's work; a run trained before gets the same choice here (with
    the last-item similarity weight, vmr/evaluate/calibrate.py), and its test metrics are
    computed again with them."""
    info = json.loads((run / "run.json").read_text())
    if "new_item_gain" not in info and info.get("model") == "vmr":
        from vmr.evaluate.calibrate import calibrate_run

        if calibrate_run(run):
            (run / "metrics_test.json").unlink(missing_ok=True)
        info = json.loads((run / "run.json").read_text())
    return info.get("new_item_gain")


def normal_on_seen(run: Path, new_ds: Path, out: Path) -> dict:
    """A normal-split run's test metrics on the targets that are seen items in the new-item
    split (same users, same targets: prepare marks new items after the k-core), i.e. the
    like-for-like reference of the issue's seen-item target."""
    if not out.exists():
        import torch

        from vmr.evaluate.metrics import evaluate_model, metrics_from_ranks
        from vmr.evaluate.run_eval import split_targets
        from vmr.model.loaded import load_run

        torch.set_num_threads(1)
        new = set(json.loads((new_ds / "dataset.json").read_text())["new_items"]["items"])
        loaded = load_run(run, "best")
        hist, tgt = split_targets(loaded.dataset, "test")
        ranks = evaluate_model(loaded, hist, tgt, [10], return_ranks=True)["ranks"]
        keep = [i for i, x in enumerate(tgt) if loaded.dataset.item_ids[x] not in new]
        m = {**metrics_from_ranks(ranks[keep], [10]), "users": len(keep)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(m) + "\n")
    return json.loads(out.read_text())


def groups_of(m: dict) -> dict:
    """{"all" | "seen" | "new" | bucket name: {metric: value}} of one metrics file."""
    out = {"all": {k: m[k] for k in METRICS}}
    out["all"]["users"] = m["users"]
    b = m.get("buckets") or {}
    for name, g in (b.get("new_items") or {}).items():
        out[name] = {k: g.get(k) for k in METRICS}
        out[name]["users"] = g.get("users", 0)
    for name, g in (b.get("frequency") or {}).items():
        out[f"freq {name}"] = {k: g.get(k) for k in METRICS}
        out[f"freq {name}"]["users"] = g.get("users", 0)
    return out


def mean_std(xs: list) -> tuple[float, float] | None:
    xs = [x for x in xs if isinstance(x, (int, float))]
    if not xs:
        return None
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def cell(ms, n: int = 2) -> str:
    if ms is None:
        return "–"
    return f"{ms[0]:.4f}" if n < 2 else f"{ms[0]:.4f} ± {ms[1]:.4f}"


def table(title: str, results: list[dict], cols: list[str], metric: str) -> list[str]:
    """One row per label of `results` ({label, seed, groups}), mean ± std of metric per col;
    nothing when there are no results."""
    if not results:
        return []
    labels = list(dict.fromkeys(r["label"] for r in results))
    lines = [f"### {title}", "", f"| {metric} | seeds | " + " | ".join(cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for lab in labels:
        rs = [r for r in results if r["label"] == lab]
        n = len({r["seed"] for r in rs})
        cells = [cell(mean_std([(r["groups"].get(c) or {}).get(metric) for r in rs]), n)
                 for c in cols]
        lines.append(f"| {lab} | {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def transfer_part(work: Path, sci: Path, user_fractions, seeds, rows, source, extra,
                  jobs: int, sample_seed: int = 0, drop_last: bool = False) -> list[dict]:
    """Each fraction of Scientific's users prepared with MiniLM text; every row of `rows` per
    fraction and seed: from the Beauty source (`source(seed)`, None: no source, so the rows
    that need one are skipped) or from scratch. sample_seed draws the users (0: the sample of
    every session before the fifteenth; another draw lives in WORK/transfer-sample<N>).
    drop_last: the same users without each one's last interaction (WORK/...-droplast): its test
    split mirrors the full data's one step back and holds none of the full data's test items."""
    prev = None
    fractions = {}
    tdir = work / (("transfer" if sample_seed == 0 else f"transfer-sample{sample_seed}")
                   + ("-droplast" if drop_last else ""))
    for pct in sorted(user_fractions):          # smallest first: each cache seeds the next
        seqs = sample_users(sci / "Scientific_dev.txt", tdir / f"Scientific_{pct}pct.txt", pct,
                            sample_seed)
        if drop_last:
            seqs = without_last(seqs, tdir / f"Scientific_{pct}pct_droplast.txt")
        ds = prepare(tdir / f"scientific-minilm-{pct}", seqs,
                     sci / "Scientific_items.tsv", "text", 1, new=False)
        prev = minilm(ds, prev)
        fractions[pct] = ds
    tjobs = [(pct, row, s) for pct in user_fractions for s in seeds for row in rows
             if source is not None or not TRANSFER_ROWS[row][0]]

    def one(job) -> dict:
        pct, row, s = job
        ds = fractions[pct]
        from_source, freeze, sets_ = TRANSFER_ROWS[row]
        src = source(s) if from_source else None
        if row == "zero-shot":
            m, v = evaluate(src, ds), evaluate(src, ds, "valid")
        else:
            run = train(ds, ds.parent / "runs" / f"{ds.name}-{row}-s{s}", s, sets_, extra,
                        init_from=src, freeze=freeze)
            m, v = evaluate(run), valid_best(run)
        return {"fraction": pct, "label": row, "seed": s, "sample_seed": sample_seed,
                "users": m["users"],
                "groups": {f"{pct} % of users": groups_of(m)["all"], f"valid {pct} %": v}}

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, tjobs))


def valid_best(run: Path) -> dict | None:
    """The run's best validation scores (run.json), for choosing a row by validation."""
    info = run / "run.json"
    return json.loads(info.read_text()).get("best_valid") if info.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["beauty", "scientific"],
                    choices=["beauty", "scientific"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 1 seed, 2 epochs")
    ap.add_argument("--parts", nargs="+", default=["cold", "transfer"], choices=["cold", "transfer"],
                    help="which parts to run (the summary covers what ran)")
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "cold_transfer")
    ap.add_argument("--cold-rows", nargs="+", default=None, type=partial(extended_row, ROWS),
                    help="only these rows of the new-item and frequency parts [default: PLAN]")
    ap.add_argument("--cold-splits", nargs="+", default=["normal", "new-items"],
                    choices=["normal", "new-items"], help="which splits the cold part trains on")
    ap.add_argument("--new-fraction", type=float, default=NEW_FRACTION,
                    help="share of items held out as new (vmr prepare --new-items); another "
                         "value than 0.1 works in WORK/full-new<value> (WORK/quick-new<value>)")
    ap.add_argument("--source", default=None,
                    help="transfer source: an existing Beauty run directory ('{seed}' is replaced "
                         "by the seed) instead of this script's normal-default-s<seed> runs")
    ap.add_argument("--transfer-rows", nargs="+", default=list(DEFAULT_TRANSFER),
                    type=partial(extended_row, TRANSFER_ROWS),
                    help="transfer rows; ROW+KEY=VALUE[+...] adds --set overrides to ROW")
    ap.add_argument("--sample-seed", type=int, default=0,
                    help="which draw of Scientific's users the fractions keep (0: the draw of "
                         "the earlier sessions' tables; each draw has its own datasets)")
    ap.add_argument("--drop-last", action="store_true",
                    help="the transfer part on the same users without each one's last item "
                         "(a selection split that holds none of the full data's test items)")
    ap.add_argument("--fractions", nargs="+", type=int, default=None,
                    help=f"percent of Scientific's users kept [default: {USER_FRACTIONS}]")
    a = ap.parse_args()
    seeds = a.seeds[:1] if a.quick else a.seeds
    user_fractions = tuple(a.fractions or ((100, 10) if a.quick else USER_FRACTIONS))
    extra = ["train.threads=1"] + (["train.epochs=2"] if a.quick else [])
    work = a.work / (("quick" if a.quick else "full")
                     + (f"-new{a.new_fraction:g}" if a.new_fraction != NEW_FRACTION else ""))
    t0 = time.time()
    beauty, sci = SHARED / "amazon_beauty", SHARED / "amazon_scientific_mm"

    # ---- the datasets: (name, normal split, new-item split)
    sets = {}
    if "beauty" in a.datasets:
        seqs = beauty / "Beauty.txt"
        if a.quick:
            seqs = sample_users(seqs, work / "beauty" / "Beauty_10pct.txt", 10)
        norm = prepare(work / "beauty" / "normal", seqs, beauty / "Beauty_items.tsv",
                       "title,brand,categories", 1 if a.quick else 5, new=False)
        new = prepare(work / "beauty" / "new-items", seqs, beauty / "Beauty_items.tsv",
                      "title,brand,categories", 1 if a.quick else 5, new=a.new_fraction)
        minilm(new, minilm(norm))
        sets["beauty"] = (norm, new)
    if "scientific" in a.datasets:
        for kind in ("normal", "new-items"):
            ds = prepare(work / "scientific" / kind, sci / "Scientific_dev.txt",
                         sci / "Scientific_items.tsv", "text", 1,
                         new=a.new_fraction if kind == "new-items" else False)
            clip(ds, sci)
        sets["scientific"] = (work / "scientific" / "normal", work / "scientific" / "new-items")

    # ---- 1 + 2: new items, frequency buckets
    # an extended row (ROW+KEY=VALUE) runs wherever PLAN runs its base row
    plan = {k: v + tuple(r for r in a.cold_rows or () if "+" in r and r.split("+")[0] in v)
            for k, v in PLAN.items()}
    jobs = [(name, split, row, s) for name in sets for split in (0, 1)
            for row, n in map(_row_seeds, plan[name, ("normal", "new-items")[split]])
            if (a.cold_rows is None or row in a.cold_rows)
            and ("normal", "new-items")[split] in a.cold_splits
            for s in seeds[:n]]

    def cold(job) -> dict:
        name, split, row, s = job
        ds = sets[name][split]
        run = train(ds, ds.parent / "runs" / f"{ds.name}-{row}-s{s}", s, ROWS[row], extra)
        gain = calibrated(run) if split == 1 else None
        return {"dataset": name, "split": ds.name, "label": row, "seed": s, "run": str(run),
                "groups": groups_of(evaluate(run)), "new_item_gain": gain}

    if "cold" not in a.parts:
        jobs = []
    with ThreadPoolExecutor(a.jobs) as pool:
        cold_results = list(pool.map(cold, jobs))
    for r in cold_results:       # the normal split's models on the new-item split's seen targets
        if r["split"] == "normal" and r["label"] != "pop":
            seen = normal_on_seen(Path(r["run"]), sets[r["dataset"]][1],
                                  work / r["dataset"] / "seen" / f"{Path(r['run']).name}.json")
            r["groups"]["seen (normal split)"] = {k: seen[k] for k in METRICS} | {
                "users": seen["users"]}
    for name in sets:
        runs = [r["run"] for r in cold_results if r["dataset"] == name and r["split"] == "normal"]
        if runs:
            sh(VMR + ["report", *runs, "--out", work / name / "report"], work / name / "report.log")

    # ---- 3: transfer Beauty -> Scientific, MiniLM text on both
    transfer_results = []
    if "scientific" in a.datasets and "transfer" in a.parts:
        source = (lambda s: Path(a.source.replace("{seed}", str(s)))) if a.source else (
            (lambda s: sets["beauty"][0].parent / "runs" / f"normal-default-s{s}")
            if "beauty" in sets else None)
        transfer_results = transfer_part(work, sci, user_fractions, seeds, a.transfer_rows,
                                         source, extra, a.jobs, a.sample_seed,
                                         a.drop_last)

    # ---- the summary
    md = [f"# Cold items and transfer ({'quick' if a.quick else 'full'}), seeds "
          f"{' '.join(map(str, seeds))}",
          f"`{' '.join(sys.argv)}` on {platform.node()} ({platform.machine()}, {os.cpu_count()} "
          f"cores), {(time.time() - t0) / 60:.1f} min wall for this invocation, which trained "
          f"{len(TRAINED)} run(s); every other run was finished by an earlier invocation", ""]
    for name in sets if cold_results else []:
        rs = [r for r in cold_results if r["dataset"] == name]
        new = [r for r in rs if r["split"] == "new-items"]
        norm = [r for r in rs if r["split"] == "normal"]
        md += [f"## {name}", ""]
        counts = ", ".join(f"{g} {new[0]['groups'].get(g, {}).get('users')}" for g in GROUPS) \
            if new else ""
        for metric in METRICS:
            md += table(f"{name}, --new-items {a.new_fraction}: new-item, seen-item and all targets "
                        f"(targets: {counts})", new, list(GROUPS), metric)
        gains = {}
        for r in new:
            if r.get("new_item_gain") is not None:
                gains.setdefault(r["label"], []).append(f"{r['new_item_gain']:g}")
        if gains:
            md += ["New-item gain chosen on validation, per seed: " + "; ".join(
                f"{k} {', '.join(v)}" for k, v in gains.items()), ""]
        both = [r for r in rs if r["label"] in {x["label"] for x in norm} & {x["label"] for x in new}
                and r["label"] != "pop"]
        pair = [{**r, "label": f"{r['label']} ({r['split']} split)",
                 "groups": {"seen": r["groups"].get("seen (normal split)") or r["groups"].get("seen")}}
                for r in both]
        md += table(f"{name}, seen-item targets: trained with the new items held out vs on the "
                    "normal split (same users, same targets)", pair, ["seen"], "NDCG@10")
        buckets = [c for c in norm[0]["groups"] if c.startswith("freq ")] if norm else []
        users = {c: norm[0]["groups"][c].get("users") for c in buckets} if norm else {}
        md += table(f"{name}, normal split: by the target's training interactions (targets: "
                    + ", ".join(f"{c[5:]} {users[c]}" for c in buckets) + ")",
                    norm, buckets, "NDCG@10")
    if transfer_results:
        md += ["## Transfer Beauty -> Scientific (MiniLM text on both)", "",
               f"Users drawn with sample seed {a.sample_seed}"
               + (", each without their last item (--drop-last)." if a.drop_last else "."), ""]
        if a.source:
            md += [f"Source: `{a.source}`. Validation, best epoch (zero-shot: the source on the "
                   "target's validation split):", ""]
            md += table("validation", transfer_results,
                        [f"valid {pct} %" for pct in user_fractions], "NDCG@10")
        elif "beauty" not in sets:
            md += ["Beauty was not in --datasets: no source run, so only the scratch and SASRec "
                   "rows.", ""]
        users = {r["fraction"]: r["users"] for r in transfer_results}
        cols = [f"{pct} % of users" for pct in user_fractions]
        for metric in METRICS:
            md += table("test targets of the sampled users: "
                        + ", ".join(f"{pct} %: {users.get(pct)}" for pct in user_fractions),
                        transfer_results, cols, metric)
    text = "\n".join(md) + "\n"
    work.mkdir(parents=True, exist_ok=True)
    (work / "summary.md").write_text(text)
    (work / "summary.json").write_text(json.dumps({"cold": cold_results,
                                                   "transfer": transfer_results}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
