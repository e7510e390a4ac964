"""`vmr train --seeds 1 2 3 --out OUT`: the same training once per seed.

    OUT/seed-1/, OUT/seed-2/, ...   ordinary run directories (`vmr eval`, `recommend`, ...)
    OUT/seeds.json                  the seeds, the run folders, and the mean ± sample std (and
                                    the values) of each best validation metric over the seeds

`vmr eval --run OUT` evaluates every seed run and `vmr report OUT` puts them in one row
(vmr/evaluate/report.py reads seeds.json). With --resume, finished seed runs are kept, an
interrupted one is continued and the missing ones are started."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from vmr.errors import VmrError
from vmr.evaluate.report import SEEDS_JSON
from vmr.fsio import os_reason, write_json_atomic
from vmr.model.config import load_config
from vmr.model.rundir import RunDir
from vmr.train.session import TrainRequest, start_training


def seed_dir(parent: Path, seed: int) -> Path:
    return parent / f"seed-{seed}"


def train_seeds(req: TrainRequest, seeds: list[int]) -> tuple[list[Path], dict]:
    """Train `req` once per seed under req.out; returns (run directories, seeds.json)."""
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise VmrError("--seeds: give at least one seed, e.g. --seeds 1 2 3")
    if req.seed is not None:
        raise VmrError("give --seed or --seeds, not both")
    if req.out is None:
        if req.resume:
            raise VmrError("--resume needs --out DIR (the --seeds directory to continue)")
        kind = load_config(req.config, req.overrides).model.kind
        req = replace(req, out=str(Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"))
    parent = Path(req.out)
    if RunDir(parent).holds_run() or RunDir(parent).info.is_file():
        raise VmrError(f"{parent} holds a single run; --seeds writes its runs into "
                       "seed-<N> folders of a directory of its own: choose another --out")
    runs = []
    for s in seeds:
        out = seed_dir(parent, s)
        run = RunDir(out)
        info = run.read_info() if run.info.is_file() else {}
        if req.resume and info.get("status") == "finished":
            print(f"seed {s}: {out} already trained", flush=True)
        else:
            print(f"== seed {s} -> {out}", flush=True)
            resume = req.resume and run.last.is_file()
            start_training(replace(req, out=str(out), seed=None if resume else s,
                                   resume=resume, overrides=list(req.overrides)))
        runs.append(out)
    summary = summarise(parent, seeds, runs)
    try:
        write_json_atomic(parent / SEEDS_JSON, summary)
    except OSError as e:
        raise VmrError(f"cannot write {parent / SEEDS_JSON}: {os_reason(e)}") from None
    return runs, summary


def summarise(parent: Path, seeds: list[int], runs: list[Path]) -> dict:
    """seeds.json: per best-validation metric, mean ± sample std and the per-seed values."""
    infos = [RunDir(r).read_info() for r in runs]
    bests = [i.get("best_valid") or {} for i in infos]
    metrics = sorted(set.intersection(*(set(b) for b in bests)), key=_metric_order) if bests \
        else []
    stats = {}
    for m in metrics:
        values = [float(b[m]) for b in bests]
        mean, std = _mean_std(values)
        stats[m] = {"mean": mean, "std": std, "values": values}
    return {"format": 1, "seeds": seeds, "runs": [r.name for r in runs],
            "label": infos[0].get("label") if infos else None,
            "best_epoch": [i.get("best_epoch") for i in infos], "best_valid": stats,
            "std": "sample (n - 1); null for a single seed"}


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _metric_order(name: str):
    kind, _, k = name.partition("@")
    return (not k, int(k) if k.isdigit() else 0, kind != "HR", name)


def format_seeds(parent: Path, summary: dict) -> str:
    """What `vmr train --seeds` prints at the end."""
    lines = [f"seeds {' '.join(map(str, summary['seeds']))}: best validation, mean ± std"]
    for m, st in summary["best_valid"].items():
        std = "" if st["std"] is None else f" ± {st['std']:.4f}"
        lines.append(f"  valid {m:<8} {st['mean']:.4f}{std}")
    lines.append(f"runs: {', '.join(str(parent / r) for r in summary['runs'])}")
    lines.append(f"wrote {parent / SEEDS_JSON}; evaluate with `vmr eval --run {parent}`, "
                 f"compare with `vmr report {parent}`")
    return "\n".join(lines)
