"""Choosing a transfer row over several draws of the target's users (issue 23).

bench/cold_transfer.py --sample-seed N trains the transfer rows on another draw of Scientific's
users, --drop-last on the same users without each one's last item. This script reads the runs
they left (no training, no evaluation) and, per draw and fraction of the users, sets every row
against scratch in the same draw:

- valid: the run's validation NDCG@10 at its chosen similarity weight (run.json), as
  `vmr train` chose everything else by it; mean over the seeds;
- test: NDCG@10 of `vmr eval` (metrics_test.json), mean over the seeds;
- gap (with --drop-last runs): the test NDCG@10 of the same row trained on the users without
  their last item. That split mirrors the full data's test one step back (the history's last
  item is one the model never trained on as that user's target) and holds none of its test items;
- the row each selection rule chooses (highest mean valid, highest mean gap) and its test NDCG@10
  over scratch's.

    .venv/bin/python bench/transfer_draws.py --rows scratch fine-tuned ... \\
        --draw 1=WORK1/full/transfer-sample1/runs,WORK1/full/transfer-sample1-droplast/runs ...

--by-target PCT adds, pooled over the draws, each row's test NDCG@10 / scratch's by how often the
target item occurs in the training prefixes (0, 1-4, 5+), from the runs' ranks_test.parquet, on
the full data and (where given) on the split without the last items.

Writes a markdown table to stdout (and --out FILE).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import use_checkout


def row_means(runs: Path, pct: int, row: str, seeds) -> dict | None:
    """Mean valid (at the chosen weight) and test NDCG@10 over the seeds; None if any is missing."""
    vals, tests = [], []
    for s in seeds:
        run = runs / f"scientific-minilm-{pct}-{row}-s{s}"
        if not (run / "metrics_test.json").exists():
            return None
        info = json.loads((run / "run.json").read_text())
        curve = info.get("similarity_weight_valid") or {}
        vals.append(curve.get(f"{info.get('similarity_weight', 0):g}",
                              (info.get("best_valid") or {}).get("NDCG@10")))
        tests.append(json.loads((run / "metrics_test.json").read_text())["NDCG@10"])
    return {"valid": statistics.fmean(vals), "test": statistics.fmean(tests)}


def draw_table(draws: dict, rows: list[str], pct: int, seeds) -> tuple[list[str], dict]:
    lines = [f"### {pct} % of the users", "",
             "| draw | " + " | ".join(rows) + " | chosen by valid | by gap |",
             "|---|" + "---|" * (len(rows) + 2)]
    chosen = {"valid": {}, "gap": {}}
    for name, (full, gap) in draws.items():
        full, gap = (Path(str(x).replace("{pct}", str(pct))) if x else None for x in (full, gap))
        m = {r: row_means(full, pct, r, seeds) for r in rows}
        g = {r: row_means(gap, pct, r, seeds) for r in rows} if gap else {}
        if any(v is None for v in m.values()) or "scratch" not in m:
            lines.append(f"| {name} | incomplete |")
            continue
        base_v, base_t = m["scratch"]["valid"], m["scratch"]["test"]
        cells = []
        for r in rows:
            cell = f"v {m[r]['valid'] / base_v:.3f}, t {m[r]['test'] / base_t:.3f}"
            if g.get(r):
                cell += f", gap {g[r]['test'] / g['scratch']['test']:.3f}"
            cells.append(cell)
        pick_v = max(rows, key=lambda r: m[r]["valid"])
        chosen["valid"][name] = m[pick_v]["test"] / base_t
        pick = f"{pick_v}: {chosen['valid'][name]:.3f}"
        pick_g = "–"
        if g and all(g.get(r) for r in rows):
            best = max(rows, key=lambda r: g[r]["test"])
            chosen["gap"][name] = m[best]["test"] / base_t
            pick_g = f"{best}: {chosen['gap'][name]:.3f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {pick} | {pick_g} |")
    return lines + [""], chosen


def by_target(draws: dict, rows: list[str], pct: int, seeds) -> list[str]:
    """Test NDCG@10 / scratch's per group of the target's training count, pooled over draws."""
    use_checkout()
    import numpy as np

    from vmr.data.dataset import load_dataset
    from vmr.evaluate.paired import per_user, read_ranks

    pooled: dict = {}
    for full, gap in draws.values():
        for kind, runs in (("test", full), ("without the last items", gap)):
            if runs is None:
                continue
            runs = Path(str(runs).replace("{pct}", str(pct)))
            first = runs / f"scientific-minilm-{pct}-scratch-s{seeds[0]}"
            ds = load_dataset(json.loads((first / "run.json").read_text())["data"])
            count = np.zeros(ds.n_items, dtype=np.int64)
            for prefix in ds.split_sequences("train"):
                np.add.at(count, prefix, 1)
            users = [ds.user_ids[int(u)] for u in ds.split_users("test")]
            n = {u: count[t] for u, (_, t) in zip(users, ds.split_sequences("test"))}
            group = {u: "0" if n[u] == 0 else "1-4" if n[u] < 5 else "5+" for u in users}
            for split in ("valid", "test"):      # is the history's last item a trained one?
                cold = [count[h[-1]] == 0 for h, _ in ds.split_sequences(split) if len(h)]
                pooled.setdefault(("last", kind, split), []).extend(cold)
            for r in rows:
                ranks = [read_ranks(runs / f"scientific-minilm-{pct}-{r}-s{s}" / "ranks_test.parquet")
                         for s in seeds]
                score = np.mean([per_user([rk[u][1] for u in users], "NDCG@10") for rk in ranks], 0)
                for u, v in zip(users, score):
                    pooled.setdefault((kind, group[u], r), []).append(v)
    lines = [f"### {pct} % of the users: test NDCG@10 / scratch's by the target's training "
             "interactions, pooled over the draws", "",
             "| split | target's training interactions | targets | scratch | "
             + " | ".join(r for r in rows if r != "scratch") + " |",
             "|---|---|---:|---:|" + "---:|" * (len(rows) - 1)]
    for kind in ("test", "without the last items"):
        for g in ("0", "1-4", "5+"):
            if (kind, g, "scratch") not in pooled:
                continue
            base = float(np.mean(pooled[kind, g, "scratch"]))
            lines.append(f"| {kind} | {g} | {len(pooled[kind, g, 'scratch'])} | {base:.4f} | "
                         + " | ".join(f"{np.mean(pooled[kind, g, r]) / base:.3f}"
                                      for r in rows if r != "scratch") + " |")
    lines.append("")
    for kind in ("test", "without the last items"):
        if ("last", kind, "test") in pooled:
            lines.append(f"- {kind}: the history's last item has no training interaction for "
                         + ", ".join(f"{np.mean(pooled['last', kind, sp]):.1%} of the {sp} users"
                                     for sp in ("valid", "test")))
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draw", action="append", required=True,
                    help="NAME=FULL_RUNS[,GAP_RUNS]: a draw's runs folder (and its --drop-last one); "
                         "'{pct}' in a path is replaced by the fraction")
    ap.add_argument("--rows", nargs="+", required=True, help="row labels; scratch among them")
    ap.add_argument("--fractions", nargs="+", type=int, default=[10, 25])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--by-target", type=int, nargs="*", default=[],
                    help="fractions to break down by the target's training interactions")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    draws = {}
    for spec in a.draw:
        name, _, paths = spec.partition("=")
        full, _, gap = paths.partition(",")
        draws[name] = (Path(full), Path(gap) if gap else None)
    md = ["Ratios to scratch in the same draw (v: validation, t: test, gap: test without each "
          "user's last item); mean of the seeds. The chosen row's test / scratch's:", ""]
    for pct in a.fractions:
        lines, chosen = draw_table(draws, a.rows, pct, a.seeds)
        md += lines
        for rule, got in chosen.items():
            if got:
                md.append(f"- chosen by {rule}: mean {statistics.fmean(got.values()):.3f} over "
                          f"{len(got)} draws ({', '.join(f'{k} {v:.3f}' for k, v in got.items())})")
        md.append("")
    for pct in a.by_target:
        md += by_target(draws, a.rows, pct, a.seeds)
    text = "\n".join(md) + "\n"
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
