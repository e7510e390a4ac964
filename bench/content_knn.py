"""Nearest neighbours of the last item, no model: how far do the cached features alone rank the
next item? (issue 23: what led to the last-item similarity term, vmr/evaluate/similarity.py)

Every item is scored by the cosine of its features (each cached modality centred over the
catalogue, concatenated, scaled to unit length) with the features of the user's last history
item (with --last K, the largest cosine with any of the last K items); the history is excluded
from the ranking, as vmr's default protocol does. Prints test HR@10 on the new-item and the
seen-item targets of a dataset prepared with `vmr prepare --new-items F` (all targets on
another dataset).

    .venv/bin/python bench/content_knn.py --data DATASET [--last K]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import use_checkout

use_checkout()


def unit_features(data: Path, item_ids: list[str]) -> np.ndarray:
    from vmr.cache.read import list_modalities, read_modality

    cache = str(data / "features.h5")
    x = np.concatenate([read_modality(cache, item_ids, m)[0] for m in list_modalities(cache)],
                       1).astype(np.float32)
    x -= x.mean(0)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)


def knn_hits(data: Path, last: int = 1, k: int = 10, batch: int = 2048) -> dict:
    import torch

    from vmr.data import splits
    from vmr.data.dataset import load_dataset

    ds = load_dataset(data)
    x = torch.from_numpy(unit_features(data, ds.item_ids))
    new = np.zeros(len(ds.item_ids), bool)
    new[ds.new_item_indices()] = True
    hist, tgt, _ = splits.target_pairs(ds.sequences, "test")
    hits = {"new": [], "seen": []}
    for s in range(0, len(hist), batch):
        hs, ts = hist[s:s + batch], np.asarray(tgt[s:s + batch])
        scores = torch.full((len(hs), len(x)), -2.0)
        for back in range(1, last + 1):
            idx = torch.tensor([int(h[-back]) if len(h) >= back else int(h[-1]) for h in hs])
            scores = torch.maximum(scores, x[idx] @ x.T)
        for i, h in enumerate(hs):
            keep = float(scores[i, int(ts[i])])
            scores[i, torch.as_tensor(np.asarray(h))] = float("-inf")
            scores[i, int(ts[i])] = keep                    # a repeated target stays ranked
        top = scores.topk(k, dim=1).indices.numpy()
        for i, t in enumerate(ts):
            hits["new" if new[t] else "seen"].append(bool(t in top[i]))
    return {g: (float(np.mean(v)), len(v)) for g, v in hits.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepared dataset with features.h5")
    ap.add_argument("--last", type=int, default=1, help="compare with the last K history items")
    a = ap.parse_args()
    for group, (hr, n) in knn_hits(a.data, a.last).items():
        print(f"{a.data}: last {a.last}: {group} targets: HR@10 {hr:.4f} ({n} targets)")


if __name__ == "__main__":
    main()
