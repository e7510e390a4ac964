"""The last-item similarity term (vmr/evaluate/similarity.py) on finished runs, like for like:
each run is copied twice into WORK, one copy scored as it was trained ("model": its run.json as
it is, the new-item gain it had), the other calibrated as `vmr train` now does after training
("+ similarity": the weight chosen on validation, then the new-item gain with it in place);
both are evaluated on the test split with `vmr eval`, in one invocation.

    .venv/bin/python bench/similarity.py [--include-history] --work WORK RUN_DIR [RUN_DIR ...]

A run directory named NAME-s<seed> counts as seed <seed> of row NAME. Runs trained before the
term existed (no `similarity_weight` in run.json) are what this compares; a run that already
has one is scored with weight 0 in its "model" copy. Writes WORK/summary.md and
WORK/summary.json: per row, validation NDCG@10 at weight 0 and at the chosen one (before the
new-item gain), the weights chosen, and test NDCG@10 / HR@10 over all targets (and seen / new
items on a dataset prepared with --new-items).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import time
from pathlib import Path

from common import VMR, sh, use_checkout
from cold_transfer import cell, groups_of, mean_std

use_checkout()

KEEP = ("best.pt", "run.json", "config.toml", "metrics.csv")


def copy_run(src: Path, dst: Path) -> Path:
    """The files a scored run needs (no checkpoint.pt), unless dst already holds them."""
    if not (dst / "run.json").exists():
        dst.mkdir(parents=True, exist_ok=True)
        for name in KEEP:
            if (src / name).exists():
                shutil.copy2(src / name, dst / name)
    return dst


def score(run: Path, work: Path, include: bool = False) -> dict:
    """{"seed", "row", "model": groups, "term": groups, "weight", "gain", "valid"} of one run."""
    from vmr.evaluate.calibrate import calibrate_run

    m = re.match(r"(.*)-s(\d+)$", run.name)
    row, seed = (m.group(1), int(m.group(2))) if m else (run.name, 0)
    plain = copy_run(run, work / run.name / "model")
    info = json.loads((plain / "run.json").read_text())
    if info.pop("similarity_weight", None) is not None:
        (plain / "run.json").write_text(json.dumps(info, indent=2))
    term = copy_run(run, work / run.name / "term")
    if "similarity_weight" not in json.loads((term / "run.json").read_text()):
        calibrate_run(term)
    out = {"row": row, "seed": seed}
    for key, d in (("model", plain), ("term", term)):
        metrics = d / "metrics_test.json"
        if not metrics.exists():
            sh(VMR + ["eval", "--run", d, "--k", "5", "10", "--split", "test"]
               + (["--include-history"] if include else []), d.parent / f"{key}.eval.log")
        out[key] = groups_of(json.loads(metrics.read_text()))
    t = json.loads((term / "run.json").read_text())
    valid = t.get("similarity_weight_valid") or {}
    out.update(weight=t.get("similarity_weight"), gain=t.get("new_item_gain"),
               gain_before=info.get("new_item_gain"),
               valid0=valid.get("0"), valid=valid.get(f"{t.get('similarity_weight', 0):g}"))
    return out


def summary(results: list[dict]) -> list[str]:
    rows = list(dict.fromkeys(r["row"] for r in results))
    groups = [g for g in ("all", "seen", "new") if any(g in r["model"] for r in results)]
    head = ["valid NDCG@10, w = 0", "valid, chosen w", "w chosen"]
    for g in groups:
        head += [f"test NDCG@10 {g}", f"HR@10 {g}"]
    lines = ["| row | scoring | seeds | " + " | ".join(head) + " |",
             "|---|---|---:|" + "---:|" * len(head)]
    for row in rows:
        rs = [r for r in results if r["row"] == row]
        for key, name in (("model", "model"), ("term", "+ similarity")):
            cells = ([cell(mean_std([r["valid0"] for r in rs])),
                      cell(mean_std([r["valid"] for r in rs])),
                      ", ".join(f"{r['weight']:g}" if r["weight"] is not None else "–" for r in rs)]
                     if key == "term" else ["", "", ""])
            for g in groups:
                for metric in ("NDCG@10", "HR@10"):
                    cells.append(cell(mean_std([(r[key].get(g) or {}).get(metric) for r in rs])))
            lines.append(f"| {row} | {name} | {len(rs)} | " + " | ".join(cells) + " |")
    if any(r["model"].get("new") for r in results):
        lines += ["", "| row | scoring | new / seen HR@10, per seed | gain, per seed |", "|---|---|---|---|"]
        for row in rows:
            rs = [r for r in results if r["row"] == row]
            if not all(r["model"].get("new") for r in rs):
                continue
            for key, name, gk in (("model", "model", "gain_before"), ("term", "+ similarity", "gain")):
                ratios = [r[key]["new"]["HR@10"] / r[key]["seen"]["HR@10"] for r in rs]
                lines.append(f"| {row} | {name} | {sum(ratios) / len(ratios):.2f} ("
                             + ", ".join(f"{x:.2f}" for x in ratios) + ") | "
                             + ", ".join(f"{r[gk]:g}" if r[gk] is not None else "–" for r in rs)
                             + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    ap.add_argument("--work", type=Path, default=Path("bench/out/similarity"))
    ap.add_argument("--include-history", action="store_true",
                    help="score the test split with the history ranked too (RecBole's protocol; "
                         "the weight is still the one chosen under each run's own protocol)")
    a = ap.parse_args()
    t0 = time.time()
    results = [score(r.resolve(), a.work, a.include_history) for r in a.runs]
    flag = " --include-history" if a.include_history else ""
    lines = [f"# The last-item similarity term on {len(results)} finished run(s)", "",
             f"`bench/similarity.py{flag} --work {a.work} {' '.join(map(str, a.runs))}` on "
             f"{platform.node()} ({platform.machine()}), {(time.time() - t0) / 60:.1f} min", "",
             *summary(results)]
    a.work.mkdir(parents=True, exist_ok=True)
    (a.work / "summary.md").write_text("\n".join(lines) + "\n")
    (a.work / "summary.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
