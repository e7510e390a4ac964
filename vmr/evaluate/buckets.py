"""Metrics per group of targets: by how often the target item was trained on (frequency
buckets), and new against seen items (the strict new-item protocol of vmr/data/splits.py).

`vmr eval` writes them into metrics_<split>.json under "buckets":

    "buckets": {"edges": [1, 5, 20],
                "frequency": {"0": {"users": 12, "HR@5": ..., "NDCG@5": ..., ..., "MRR": ...},
                              "1-4": {...}, "5-19": {...}, "20+": {...}},
                "new_items": {"new": {...}, "seen": {...}}}       (datasets with new items only)

A target's frequency is the number of interactions of its item in the training split (every
user's training prefix, new items' interactions removed). Edges e1 < e2 < ... cut the counts
into [0, e1), [e1, e2), ..., [e_last, inf). A group without targets holds {"users": 0}.
`vmr report` shows the groups as a table and a bar chart (`render_*` below)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vmr.errors import VmrError
from vmr.fsio import save_figure

DEFAULT_EDGES = (1, 5, 20)


def check_edges(edges) -> list[int]:
    """Strictly increasing positive integers, or a one-line error naming --freq-edges."""
    out = [int(e) for e in edges]
    if not out or out[0] < 1 or any(b <= a for a, b in zip(out, out[1:])):
        raise VmrError(f"--freq-edges {' '.join(map(str, edges))}: give strictly increasing "
                       "counts of at least 1, e.g. --freq-edges 1 5 20")
    return out


def bucket_names(edges: list[int]) -> list[str]:
    """[1, 5, 20] -> ["0", "1-4", "5-19", "20+"]."""
    lows = [0] + list(edges)
    names = []
    for lo, hi in zip(lows, list(edges) + [None]):
        if hi is None:
            names.append(f"{lo}+")
        else:
            names.append(str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}")
    return names


def bucket_of(counts, edges: list[int]) -> np.ndarray:
    """The bucket number (0..len(edges)) of each count."""
    return np.searchsorted(np.asarray(edges), np.asarray(counts), side="right")


def train_counts(dataset) -> np.ndarray:
    """Interactions per item in the training split (vmr.data.splits, new items removed)."""
    prefixes = dataset.split_sequences("train")
    flat = np.concatenate(prefixes) if prefixes else np.zeros(0, dtype=np.int64)
    return np.bincount(flat.astype(np.int64), minlength=dataset.n_items)


def _group(ranks: np.ndarray, ks) -> dict:
    from vmr.evaluate.metrics import metrics_from_ranks

    if not len(ranks):
        return {"users": 0}
    return {"users": int(len(ranks)), **metrics_from_ranks(ranks, ks)}


def bucket_metrics(ranks, targets, counts, edges, ks, new_items=None) -> dict:
    """The "buckets" object: metrics per frequency bucket of the targets (and new vs seen)."""
    ranks = np.asarray(ranks.cpu() if hasattr(ranks, "cpu") else ranks).reshape(-1)
    targets = np.asarray(targets, dtype=np.int64)
    which = bucket_of(np.asarray(counts)[targets], edges)
    out = {"edges": list(edges),
           "frequency": {name: _group(ranks[which == b], ks)
                         for b, name in enumerate(bucket_names(edges))}}
    if new_items is not None and len(new_items):
        is_new = np.isin(targets, np.asarray(new_items, dtype=np.int64))
        out["new_items"] = {"new": _group(ranks[is_new], ks), "seen": _group(ranks[~is_new], ks)}
    return out


def format_buckets(buckets: dict, metric: str) -> list[tuple[str, str]]:
    """(group, "value (n users)") rows for the `vmr eval` table."""
    rows = []
    groups = list(buckets.get("frequency", {}).items())
    groups += [(f"{k} items", v) for k, v in buckets.get("new_items", {}).items()]
    for name, g in groups:
        v = g.get(metric)
        rows.append((name, (f"{v:.4f}" if isinstance(v, (int, float)) else "-")
                     + f"  ({g.get('users', 0)} users)"))
    return rows


# ------------------------------------------------------------------------------ vmr report
def bucket_columns(runs_buckets: list[dict]) -> list[str]:
    """Group names over all runs, in order: frequency buckets, then new / seen."""
    cols: list[str] = []
    for b in runs_buckets:
        for name in list(b.get("frequency", {})) + [f"{k} items" for k in b.get("new_items", {})]:
            if name not in cols:
                cols.append(name)
    freq = [c for c in cols if not c.endswith(" items")]
    return freq + [c for c in cols if c.endswith(" items")]


def _value(b: dict, col: str, metric: str):
    g = (b.get("new_items", {}).get(col[: -len(" items")]) if col.endswith(" items")
         else b.get("frequency", {}).get(col)) or {}
    v = g.get(metric)
    return (float(v), int(g.get("users", 0))) if isinstance(v, (int, float)) else None


def _stats(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd


def render_bucket_table(groups: list[tuple[str, list[dict]]], metric: str) -> list[str]:
    """Markdown: one row per group of runs (label, the runs' "buckets"), one column per target
    group, mean ± std of `metric` over the runs and the number of targets."""
    cols = bucket_columns([b for _, bs in groups for b in bs])
    lines = [f"| {metric} by target | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for label, bs in groups:
        cells = []
        for c in cols:
            vals = [v for v in (_value(b, c, metric) for b in bs) if v is not None]
            if not vals:
                cells.append("–")
                continue
            m, sd = _stats([v for v, _ in vals])
            users = "/".join(sorted({str(n) for _, n in vals}))
            cells.append((f"{m:.4f}" if math.isnan(sd) else f"{m:.4f} ± {sd:.4f}")
                         + f" (n={users})")
        lines.append(f"| {label.replace('|', '/')} | " + " | ".join(cells) + " |")
    return lines


def render_bucket_chart(groups: list[tuple[str, list[dict]]], metric: str, path: Path) -> None:
    """Bars of `metric` per target group (x) and run group (colour), std error bars."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = bucket_columns([b for _, bs in groups for b in bs])
    x = np.arange(len(cols))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(cols) * max(1, len(groups)) / 2 + 2), 3.8))
    for j, (label, bs) in enumerate(groups):
        means, stds = [], []
        for c in cols:
            vals = [v for v, _ in (_value(b, c, metric) for b in bs if _value(b, c, metric))]
            m, sd = _stats(vals) if vals else (0.0, float("nan"))
            means.append(m)
            stds.append(0.0 if math.isnan(sd) else sd)
        ax.bar(x + (j - (len(groups) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(cols, fontsize=8)
    ax.set_xlabel("target item: training interactions, or new / seen")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
