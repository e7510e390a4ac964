"""`vmr eval`: full-ranking leave-one-out evaluation of a trained run.

Loads the run (`vmr.model.loaded.load_run`), ranks every user's valid or test target (the one
split rule of vmr/data/splits.py) among ALL items, writes `RUN_DIR/metrics_<split>.json`
atomically, with the protocol it was measured under, and returns the same dict
(`evaluate_run`); `format_eval` is the table the CLI prints.
"""

from __future__ import annotations

from pathlib import Path

from vmr.errors import VmrError
from vmr.fsio import os_reason, write_json_atomic


def split_targets(dataset, split: str) -> tuple[list, list[int]]:
    """(histories, targets) of every user with a `split` target."""
    pairs = dataset.split_sequences(split)
    histories = [h for h, _ in pairs]
    targets = [int(t) for _, t in pairs]
    if not targets:
        where = getattr(dataset, "path", None) or "the dataset"
        raise VmrError(f"{where}: no user has a {split} target (users need at least "
                       f"{3 if split == 'valid' else 2} interactions)")
    return histories, targets


def format_table(rows: list[tuple[str, str]]) -> str:
    """Two left-aligned columns."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def evaluate_run(run: str | Path, ks: list[int] = (5, 10), split: str = "test",
                 include_history: bool = False, checkpoint: str = "best", loaded=None,
                 progress: bool = True) -> dict:
    """Evaluate a run on `split`, write RUN_DIR/metrics_<split>.json and return what it holds:
    HR@k, NDCG@k, MRR, users, items and the protocol. `loaded` reuses a run already opened
    with `load_run` (its checkpoint, not `checkpoint`, is evaluated)."""
    from vmr.evaluate.metrics import evaluate_model

    ks = sorted(set(int(k) for k in ks)) or [5, 10]
    if loaded is None:
        import torch

        from vmr.model.loaded import load_run

        device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = load_run(run, checkpoint, device=device)
    histories, targets = split_targets(loaded.dataset, split)
    result = evaluate_model(loaded, histories, targets, ks, include_history=include_history,
                            progress=progress)
    metrics = {}
    for k in ks:
        metrics[f"HR@{k}"] = result[f"HR@{k}"]
        metrics[f"NDCG@{k}"] = result[f"NDCG@{k}"]
    metrics["MRR"] = result["MRR"]
    metrics["users"] = result["users"]
    metrics["items"] = result["items"]
    metrics["protocol"] = {"split": split, "include_history": bool(include_history),
                           "checkpoint": loaded.checkpoint.name, "ranking": "full",
                           "ties": "against the target"}
    out = loaded.run.metrics_json(split)
    try:
        write_json_atomic(out, metrics)
    except OSError as e:  # a full disk, a read-only run directory
        raise VmrError(f"cannot write {out}: {os_reason(e)}") from None
    return metrics


def format_eval(run: str | Path, metrics: dict) -> str:
    """The table `vmr eval` prints for what `evaluate_run` returned."""
    from vmr.model.rundir import RunDir

    p = metrics["protocol"]
    rows = [("metric", "value")]
    rows += [(k, f"{v:.4f}") for k, v in metrics.items() if k not in ("users", "items", "protocol")]
    rows += [("users", str(metrics["users"])), ("items", str(metrics["items"]))]
    head = (f"{Path(run)}: {p['checkpoint']}, split {p['split']}, full ranking over all "
            f"items, history {'included' if p['include_history'] else 'excluded'}")
    return f"{head}\n{format_table(rows)}\nwrote {RunDir(run).metrics_json(p['split'])}"
