"""How much of an item's popularity its content predicts (issue 23, new items).

A new item (`vmr prepare --new-items`) has no interactions to train on, so a model can rank it
only from its content. Popularity is most of what separates a hit from a miss in these
catalogues, so this script asks one question of each prepared dataset: from the cached
features alone, how well does a ridge regression rank items by their number of interactions?

Fitted on half of the seen items (their training interactions, log(1 + count)), scored by
Spearman's rank correlation on the other half of the seen items and on the new items (their
interactions the protocol excluded from training, and their test targets). The ridge penalty
is chosen on the held-out seen half. No vmr model is involved.

    .venv/bin/python bench/content_popularity.py --data DATASET [--data DATASET ...]

DATASET: a directory made by `vmr prepare --new-items F` with a feature cache (features.h5).
Prints a markdown table (one row per dataset and modality set).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common import use_checkout

use_checkout()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return (sums / counts)[inv]
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def counts(inter, split: str, ids: list[str]) -> np.ndarray:
    import polars as pl

    c = dict(inter.filter(pl.col("split") == split).group_by("item").len().iter_rows())
    return np.array([c.get(i, 0) for i in ids], dtype=np.float64)


def study(data: Path, seed: int = 0) -> list[dict]:
    import polars as pl
    from vmr.cache.read import list_modalities, read_item_ids, read_modality

    meta = json.loads((data / "dataset.json").read_text())
    new = set((meta.get("new_items") or {}).get("items") or [])
    if not new:
        raise SystemExit(f"{data}: prepared without --new-items; nothing to measure")
    cache = str(data / "features.h5")
    ids = read_item_ids(cache)
    inter = pl.read_parquet(data / "interactions.parquet").with_columns(pl.col("item").cast(pl.Utf8))
    is_new = np.array([i in new for i in ids])
    y_train, y_excl, y_test = (counts(inter, s, ids) for s in ("train", "excluded", "test"))
    mods = list_modalities(cache)
    out = []
    for use in [[m] for m in mods] + ([mods] if len(mods) > 1 else []):
        x = np.concatenate([read_modality(cache, ids, m)[0] for m in use], 1).astype(np.float64)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        seen = np.flatnonzero(~is_new)
        np.random.default_rng(seed).shuffle(seen)
        fit, held = seen[: len(seen) // 2], seen[len(seen) // 2:]
        y = np.log1p(y_train[fit])
        gram, rhs = x[fit].T @ x[fit], x[fit].T @ (y - y.mean())
        best = None
        for lam in (1.0, 10.0, 100.0, 1e3, 1e4, 1e5):
            w = np.linalg.solve(gram + lam * np.eye(len(gram)), rhs)
            r = spearman(x[held] @ w, y_train[held])
            if best is None or r > best[0]:
                best = (r, lam, w)
        r_held, lam, w = best
        p_new = x[is_new] @ w
        out.append({"dataset": f"{data.parent.name}/{data.name}", "modalities": "+".join(use),
                    "penalty": lam,
                    "seen_items": int((~is_new).sum()), "new_items": int(is_new.sum()),
                    "spearman_seen_heldout": r_held,
                    "spearman_new_excluded": spearman(p_new, y_excl[is_new]),
                    "spearman_new_test": spearman(p_new, y_test[is_new])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, action="append", required=True,
                    help="a dataset prepared with --new-items (repeat for several)")
    a = ap.parse_args()
    rows = [r for d in a.data for r in study(d)]
    print("| dataset | features | seen / new items | ridge penalty | Spearman, held-out seen items "
          "| new items: excluded interactions | new items: test targets |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['modalities']} | {r['seen_items']} / {r['new_items']} | "
              f"{r['penalty']:g} | {r['spearman_seen_heldout']:.3f} | "
              f"{r['spearman_new_excluded']:.3f} | {r['spearman_new_test']:.3f} |")


if __name__ == "__main__":
    main()
