"""`vmr report`: compare evaluated runs.

Runs that share a configuration except the seed form a group (a `vmr train --seeds` parent
directory stands for its seed runs, listed in its seeds.json); each group becomes one row of a
Markdown table (mean ± sample std over its seeds, and the number of seeds) and one pair of bars
(HR@10, NDCG@10 with std error bars) in a PNG chart. When the runs' `vmr eval` wrote each
user's rank, every group is also set against the first user by user, with a 95 % interval over
resampled users (vmr/evaluate/paired.py): how much of a difference the split's users resolve.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from vmr.errors import VmrError
from vmr.fsio import atomic_write_text, os_reason, save_figure
from vmr.model.rundir import RunDir, read_json_object

# Config keys that do not change what a run learns: ignored when grouping runs.
PER_RUN_KEYS = {"seed", "device", "threads", "eval_batch", "tensorboard"}
# `vmr train --seeds 1 2 3 --out OUT` writes OUT/seed-1, ... and this summary of them
SEEDS_JSON = "seeds.json"


def read_seeds(parent: str | Path) -> dict | None:
    """OUT/seeds.json of a `vmr train --seeds` parent directory (None when `parent` is not one):
    {"seeds", "runs" (folder names inside OUT), "best_valid" ({metric: {mean, std, values}})}."""
    parent = Path(parent)
    path = parent / SEEDS_JSON
    if not path.is_file() or RunDir(parent).info.is_file():
        return None
    doc = read_json_object(path)
    runs = doc.get("runs")
    if not isinstance(runs, list) or not runs or not all(
            isinstance(r, str) and r and Path(r).name == r for r in runs):
        raise VmrError(f"{path}: 'runs' must list the seed run folders inside {parent}")
    return doc


def expand_seed_runs(runs: list[str | Path]) -> list[str]:
    """Run directories, with each `vmr train --seeds` parent replaced by its seed runs."""
    out = []
    for r in runs:
        doc = read_seeds(r)
        out += [str(Path(r) / name) for name in doc["runs"]] if doc else [str(r)]
    return out


@dataclass
class RunInfo:
    path: Path
    config: dict          # flattened: {"model.kind": "vmr", ...}
    meta: dict            # run.json
    metrics: dict
    seed: object = None
    protocol: dict | None = None     # how metrics_<split>.json was measured (vmr eval)
    buckets: dict | None = None      # metrics per group of targets (vmr/evaluate/buckets.py)
    ranks: Path | None = None        # each user's rank (vmr/evaluate/paired.py), if written


@dataclass
class Group:
    key: tuple
    runs: list[RunInfo] = field(default_factory=list)
    label: str = ""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _hashable(v):
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def read_run(run: str | Path, split: str, on: str | None = None) -> RunInfo:
    """Read a run's config.toml, run.json and metrics_<split>.json (metrics_<split>@<on>-FP.json:
    its zero-shot evaluation on the dataset folder named `on`; see RunDir.find_zero_shot)."""
    import tomllib

    rd = RunDir(run)
    path = rd.path
    if not path.is_dir():
        raise VmrError(f"run directory not found: {path}")
    cfg_path, meta_path = rd.config_toml, rd.info
    if not cfg_path.is_file() and not meta_path.is_file():
        raise VmrError(f"{path}: not a vmr run directory (no config.toml or run.json)")
    config: dict = {}
    if cfg_path.is_file():
        try:
            config = _flatten(tomllib.loads(cfg_path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise VmrError(f"{cfg_path}: unreadable ({e.__class__.__name__}: {e})") from None
    meta = read_json_object(meta_path) if meta_path.is_file() else {}
    metrics_path = (rd.find_zero_shot(split, on) if on else None) or rd.metrics_json(split, on)
    if not metrics_path.is_file():
        how = f" --data .../{on}" if on else ""
        raise VmrError(f"{path}: no {metrics_path.name}; run `vmr eval --run {path} "
                       f"--split {split}{how}` first")
    metrics = read_json_object(metrics_path)
    protocol = metrics.pop("protocol", None)
    buckets = metrics.pop("buckets", None)
    # the table compares numbers; anything else a newer `vmr eval` may write is skipped
    metrics = {k: v for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    seed = next((v for k, v in config.items() if k.rsplit(".", 1)[-1] == "seed"), None)
    ranks = rd.ranks_of(metrics_path)
    return RunInfo(path=path, config=config, meta=meta, metrics=metrics, seed=seed,
                   protocol=protocol, buckets=buckets if isinstance(buckets, dict) else None,
                   ranks=ranks if ranks.is_file() else None)


def _group_key(r: RunInfo) -> tuple:
    cfg = tuple(sorted((k, _hashable(v)) for k, v in r.config.items()
                       if k.rsplit(".", 1)[-1] not in PER_RUN_KEYS))
    data = r.meta.get("data")
    mods = _hashable(r.meta.get("modalities"))
    return (r.meta.get("label"), str(data) if data is not None else None, mods, cfg)


def _kind(r: RunInfo) -> str:
    return str(r.config.get("model.kind") or r.meta.get("model") or "run")


def _fmt_setting(k: str, v) -> str:
    """`key=value` for a label; a dataset shows as its directory name."""
    if k == "data" and v is not None:
        return f"data={Path(str(v)).name}"
    if isinstance(v, float):
        return f"{k}={v:g}"
    if isinstance(v, (list, tuple)):
        return f"{k}={'+'.join(str(x) for x in v) or 'none'}"
    return f"{k}={v}"


def group_runs(runs: list[RunInfo]) -> list[Group]:
    """Group runs by config minus the seed (plus run.json's label, data and modalities); label
    each group by its run.json label or model kind, plus the settings that tell groups apart."""
    groups: dict[tuple, Group] = {}
    for r in runs:
        groups.setdefault(_group_key(r), Group(key=_group_key(r))).runs.append(r)
    out = list(groups.values())

    def settings(g: Group) -> dict:
        r = g.runs[0]
        d = {k: v for k, v in r.config.items() if k.rsplit(".", 1)[-1] not in PER_RUN_KEYS}
        d["modalities"] = r.meta.get("modalities")
        d["data"] = r.meta.get("data")
        return d

    all_settings = [settings(g) for g in out]
    keys = sorted({k for s in all_settings for k in s})
    differing = [k for k in keys if len({repr(s.get(k)) for s in all_settings}) > 1]
    for g, s in zip(out, all_settings):
        r = g.runs[0]
        if r.meta.get("label"):
            g.label = str(r.meta["label"])
        else:
            extra = [_fmt_setting(k, s.get(k)) for k in differing if k != "model.kind"]
            g.label = " ".join([_kind(r)] + extra)
    # labels from run.json may still collide: add what differs between the colliding groups
    by_label: dict[str, list[int]] = {}
    for i, g in enumerate(out):
        by_label.setdefault(g.label, []).append(i)
    for label, idx in by_label.items():
        if len(idx) < 2:
            continue
        sub = [all_settings[i] for i in idx]
        diff = [k for k in keys if len({repr(s.get(k)) for s in sub}) > 1]
        for i in idx:
            s = all_settings[i]
            extra = [_fmt_setting(k, s.get(k)) for k in diff]
            out[i].label = f"{label} ({', '.join(extra)})"
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _metric_columns(runs: list[RunInfo]) -> list[str]:
    """Metrics every run has, ordered HR@k, NDCG@k by k, then MRR."""
    common = set.intersection(*(set(r.metrics) for r in runs)) - {"users", "items"}

    def order(name: str):
        m = re.fullmatch(r"(HR|NDCG)@(\d+)", name)
        if m:
            return (0, int(m.group(2)), m.group(1) != "HR", name)
        return (1, 0, False, name)

    return sorted(common, key=order)


def _cell(mean: float, std: float, bold: bool) -> str:
    text = f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"
    return f"**{text}**" if bold else text


def render_table(groups: list[Group], columns: list[str]) -> list[str]:
    """The Markdown table: one row per group, mean ± std per metric column."""
    stats = {(i, c): _mean_std([float(r.metrics[c]) for r in g.runs])
             for i, g in enumerate(groups) for c in columns}
    best = {c: max(stats[(i, c)][0] for i in range(len(groups))) for c in columns}
    lines = ["| run | seeds | " + " | ".join(columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for i, g in enumerate(groups):
        cells = [_cell(*stats[(i, c)],
                       bold=len(groups) > 1 and stats[(i, c)][0] >= best[c] - 1e-12)
                 for c in columns]
        lines.append(f"| {g.label.replace('|', '/')} | {len(g.runs)} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(groups: list[Group], columns: list[str], split: str) -> str:
    lines = [f"# vmr report ({split} split)", "",
             "Full-ranking leave-one-out metrics: mean ± sample std over seeds "
             "(std omitted for a single seed); best mean per column in bold.", ""]
    lines += render_table(groups, columns)
    lines += ["", "## Runs", ""]
    for g in groups:
        users = sorted({r.metrics.get("users") for r in g.runs}, key=str)
        items = sorted({r.metrics.get("items") for r in g.runs}, key=str)
        seeds = ", ".join(str(r.seed) for r in g.runs)
        weights = [(r.protocol or {}).get("similarity_weight") or 0 for r in g.runs]
        chosen = ("; last-item similarity weight " + ", ".join(f"{w:g}" for w in weights)
                  if any(weights) else "")
        lines.append(f"- **{g.label}** (seeds {seeds}; users {'/'.join(map(str, users))}, "
                     f"items {'/'.join(map(str, items))}{chosen}): "
                     + ", ".join(f"`{r.path}`" for r in g.runs))
    return "\n".join(lines) + "\n"


def render_chart(groups: list[Group], columns: list[str], path: Path) -> None:
    """Bars of HR@10 and NDCG@10 (else the largest common K) per group, std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ks = sorted({int(c.split("@")[1]) for c in columns if "@" in c})
    k = 10 if 10 in ks else (ks[-1] if ks else None)
    metrics = [f"HR@{k}", f"NDCG@{k}"] if k is not None else ["MRR"]
    metrics = [m for m in metrics if m in columns]
    x = np.arange(len(groups))
    width = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(groups) + 2), 3.8))
    for j, m in enumerate(metrics):
        ms = [_mean_std([float(r.metrics[m]) for r in g.runs]) for g in groups]
        means = [a for a, _ in ms]
        stds = [0.0 if math.isnan(b) else b for _, b in ms]
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=m)
    ax.set_xticks(x)
    tilt = len(groups) > 3
    ax.set_xticklabels([f"{g.label}\n(n={len(g.runs)})" for g in groups],
                       rotation=20 if tilt else 0, ha="right" if tilt else "center", fontsize=8)
    ax.set_ylabel("metric (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


def _check_protocols(infos: list[RunInfo], split: str) -> None:
    """Runs measured under different protocols (history included or not, another split) are
    not comparable: refuse to put them in one table."""
    seen = {}
    for r in infos:
        p = r.protocol or {}
        key = (p.get("split", split), p.get("include_history", False))
        seen.setdefault(key, r.path)
    if len(seen) > 1:
        (a, pa), (b, pb) = list(seen.items())[:2]
        raise VmrError(f"runs were evaluated under different protocols: {pa} "
                       f"(split {a[0]}, history {'included' if a[1] else 'excluded'}) vs {pb} "
                       f"(split {b[0]}, history {'included' if b[1] else 'excluded'}); re-run "
                       "`vmr eval` on them with the same options")


def _paired_section(groups: list[Group], metric: str) -> str:
    """Every group against the first, user by user (vmr/evaluate/paired.py)."""
    from vmr.evaluate.paired import DRAWS, paired_lines

    lines = paired_lines([(g.label, [(r.ranks, float(r.metrics[metric])) for r in g.runs]
                           if all(r.ranks for r in g.runs) else []) for g in groups], metric)
    if not lines:
        return ""
    return (f"\n## Paired against {groups[0].label} (the first run named)\n\nThe std above is "
            "the seeds' (training noise). Here every group is set against the first on the "
            f"same users: each user's {metric}, averaged over a group's seeds, and {DRAWS:,} "
            "resamples of the users for a 95 % interval of the ratio of the means. An interval "
            "that leaves out 1 is a difference these users resolve; one that holds 1 could be "
            "which users the split happens to hold.\n\n" + "\n".join(lines) + "\n")


def write_report(runs: list[str], out: str | Path = "report", split: str = "test",
                 on: str | None = None) -> str:
    """Write OUT/report.md and OUT/report.png for the given run directories (with `on`: their
    zero-shot evaluations on the dataset folder of that name)."""
    if not runs:
        raise VmrError("give at least one run directory")
    runs = expand_seed_runs(runs)
    seen: set[Path] = set()
    infos = []
    for r in runs:
        key = Path(r).resolve()
        if key in seen:
            continue  # the same run named twice counts once
        seen.add(key)
        infos.append(read_run(r, split, on))
    _check_protocols(infos, split)
    columns = _metric_columns(infos)
    if not columns:
        raise VmrError("the runs' metrics files share no metric (evaluate them with the same "
                       "`vmr eval --k ...`)")
    groups = group_runs(infos)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise VmrError(f"--out {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    md = render_markdown(groups, columns, split)
    md_path = out_dir / "report.md"
    by_target = [(g.label, [r.buckets for r in g.runs if r.buckets]) for g in groups]
    by_target = [(label, bs) for label, bs in by_target if bs]
    metric = next((m for m in ("NDCG@10", "HR@10") if m in columns), columns[0])
    lines = []
    if by_target:
        from vmr.evaluate.buckets import render_bucket_chart, render_bucket_table

        lines = render_bucket_table(by_target, metric)
        md += ("\n## By target item\n\nTargets grouped by their item's interactions in the "
               "training split, and new items (kept out of training) against seen ones; n = "
               "targets in the group. Chart: report_buckets.png.\n\n" + "\n".join(lines) + "\n")
    paired = _paired_section(groups, metric)
    md += paired
    try:
        atomic_write_text(md_path, md)
        render_chart(groups, columns, out_dir / "report.png")
        if by_target:
            render_bucket_chart(by_target, metric, out_dir / "report_buckets.png")
    except OSError as e:  # a full disk, a read-only folder
        raise VmrError(f"cannot write the report in {out_dir}: {os_reason(e)}") from None
    table = "\n".join(render_table(groups, columns))       # the by-target table: report.md
    extra = f" and {out_dir / 'report_buckets.png'}" if by_target else ""
    if paired:
        table += "\n\n" + paired.split("\n\n", 2)[-1].rstrip()   # the paired table itself
    return f"{table}\nwrote {md_path} and {out_dir / 'report.png'}{extra}"
