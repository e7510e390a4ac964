"""Paired comparison of evaluated runs on the same users: how much of a difference the split's
users can resolve.

The std over seeds in `vmr report`'s table measures training noise only. Every seed is scored on
the same few users, so a second source of noise is which users happen to be in the split: on
a split of a few hundred users, two rows can differ by 5 % by that chance alone. `vmr eval`
writes each user's rank of the target (ranks_<split>.parquet beside metrics_<split>.json:
user id, target item id, rank; ids as the dataset spells them); `vmr report` then sets every
group against the first one, user by user (the per-user metric averaged over a group's seeds),
and resamples the users (a bootstrap, 2,000 draws, fixed seed) for a 95 % interval of the
ratio of the two means. An interval that leaves out 1 is a difference the users resolve.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from vmr.errors import VmrError
from vmr.fsio import atomic_write_bytes

DRAWS = 2000
SEED = 0
COLUMNS = ("user", "target", "rank")


def ranks_path(metrics_path: str | Path) -> Path:
    """ranks_<split>[@<target>].parquet beside metrics_<split>[@<target>].json (the run
    directory's layout: vmr/model/rundir.py)."""
    from vmr.model.rundir import RunDir

    return RunDir.ranks_of(metrics_path)


def write_ranks(path: str | Path, users: list[str], targets: list[str], ranks) -> None:
    """One row per evaluated user, atomically."""
    import polars as pl

    table = pl.DataFrame({"user": list(users), "target": list(targets),
                          "rank": [int(r) for r in ranks]},
                         schema={"user": pl.Utf8, "target": pl.Utf8, "rank": pl.Int64})
    buf = io.BytesIO()
    table.write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())


def read_ranks(path: str | Path) -> dict[str, tuple[str, int]]:
    """{user id: (target item id, rank)} of a ranks file; a one-line error if it is not one."""
    import polars as pl

    try:
        table = pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - polars raises several kinds for a damaged file
        raise VmrError(f"{path}: unreadable ranks file ({e.__class__.__name__}); "
                       "run `vmr eval` again") from None
    low = table["rank"].min() if tuple(table.columns) == COLUMNS else None
    if tuple(table.columns) != COLUMNS or (low is not None and low < 1):
        raise VmrError(f"{path}: not a vmr ranks file (columns {', '.join(COLUMNS)}, ranks >= 1)")
    return {u: (t, int(r)) for u, t, r in table.iter_rows()}


def per_user(ranks, metric: str):
    """Each user's HR@k or NDCG@k (metric 'HR@10', 'NDCG@10', or 'MRR') from 1-based ranks."""
    import numpy as np

    r = np.asarray(ranks, dtype=np.float64)
    if metric == "MRR":
        return 1.0 / r
    name, _, k = metric.partition("@")
    hit = r <= int(k)
    if name == "HR":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)


def bootstrap_ratio(ref, other, draws: int = DRAWS, seed: int = SEED) -> tuple[float, float, float]:
    """(mean(other) / mean(ref), and the 2.5 and 97.5 percentiles of that ratio over `draws`
    resamples of the users (paired: one draw picks the same users for both)."""
    import numpy as np

    ref, other = np.asarray(ref, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if ref.shape != other.shape or ref.ndim != 1 or len(ref) == 0:
        raise ValueError("ref and other must be equally long, non-empty vectors")
    rng = np.random.default_rng(seed)
    n, out = len(ref), []
    step = max(1, 2_000_000 // n)             # draws per block: a bounded index matrix
    for s in range(0, draws, step):
        idx = rng.integers(0, n, size=(min(step, draws - s), n))
        a, b = ref[idx].mean(axis=1), other[idx].mean(axis=1)
        out.append(np.divide(b, a, out=np.full_like(b, np.nan), where=a > 0))
    ratios = np.concatenate(out)
    ratios = ratios[np.isfinite(ratios)]
    point = other.mean() / ref.mean() if ref.mean() > 0 else math.nan
    if len(ratios) == 0:
        return point, math.nan, math.nan
    return float(point), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def group_values(runs: list[tuple[Path, float]], metric: str) -> tuple[list[str], list[str], object]:
    """(users, targets, per-user metric averaged over the runs) of one group: runs are (ranks
    file, the metric its metrics file holds). One-line errors when a ranks file does not
    reproduce its metrics file (left from an earlier evaluation), or when the runs were not
    scored on the same users and targets."""
    import numpy as np

    paths = [p for p, _ in runs]
    tables = [read_ranks(p) for p in paths]
    users = sorted(tables[0])
    for p, t in zip(paths[1:], tables[1:]):
        if t.keys() != tables[0].keys() or any(t[u][0] != tables[0][u][0] for u in users):
            raise VmrError(f"{p}: scored on other users or targets than {paths[0]}")
    values = [per_user([t[u][1] for u in users], metric) for t in tables]
    for (p, expected), v in zip(runs, values):
        if not math.isclose(float(v.mean()), float(expected), rel_tol=1e-6, abs_tol=1e-9):
            raise VmrError(f"{p}: does not match its metrics file ({metric} {v.mean():.6f} "
                           f"against {expected:.6f}); run `vmr eval` on that run again")
    return users, [tables[0][u][0] for u in users], np.mean(values, axis=0)


def paired_lines(groups: list[tuple[str, list[tuple[Path, float]]]], metric: str) -> list[str]:
    """The Markdown section: every group against the first, or one line saying why not.
    groups: (label, [(ranks file, the metric its metrics file holds), ...]); a group without
    ranks files (evaluated by an older `vmr eval`) has an empty list."""
    if len(groups) < 2:
        return []
    missing = [label for label, paths in groups if not paths]
    if missing:
        return [f"Not available: no ranks files for {', '.join(missing)} (runs evaluated by an "
                "older `vmr eval`; evaluate them again)."]
    try:
        return _ratio_table(groups, metric)
    except VmrError as e:            # a damaged or stale ranks file: the report stands without
        return [f"Not available: {e}"]


def _ratio_table(groups: list[tuple[str, list[tuple[Path, float]]]], metric: str) -> list[str]:
    base_label, base_paths = groups[0]
    users, targets, base = group_values(base_paths, metric)
    lines = [f"| run | {metric}, ratio to {base_label.replace('|', '/')} | 95 % interval "
             "(users resampled) | resolved |", "|---|---:|---|---|"]
    for label, paths in groups[1:]:
        u, t, vals = group_values(paths, metric)
        if u != users or t != targets:
            return [f"Not available: {label} was scored on other users or targets than "
                    f"{base_label} (another dataset or split)."]
        ratio, lo, hi = bootstrap_ratio(base, vals)
        verdict = ("above" if lo > 1 else "below" if hi < 1 else "no: within the users' noise")
        lines.append(f"| {label.replace('|', '/')} | {ratio:.3f} | {lo:.3f} – {hi:.3f} | "
                     f"{verdict} |")
    return lines
