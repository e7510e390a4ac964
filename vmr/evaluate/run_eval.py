"""`vmr eval`: full-ranking leave-one-out evaluation of a trained run.

Loads the run (`vmr.train.inference.load_run`), ranks every user's valid or test target among
ALL items, prints a table and writes `RUN_DIR/metrics_<split>.json` atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from vmr.errors import VmrError

CHECKPOINT_FILES = {"best": "best.pt", "last": "checkpoint.pt"}


def open_run(run: str | Path, checkpoint: str = "best", device: str = "cpu"):
    """Check that `run` is a run directory holding the checkpoint, then `load_run` it.

    checkpoint: 'best' (best.pt), 'last' (checkpoint.pt) or 'auto' (best.pt, else checkpoint.pt).
    """
    run_dir = Path(run)
    if not run_dir.exists():
        raise VmrError(f"run directory not found: {run_dir}")
    if not run_dir.is_dir():
        raise VmrError(f"{run_dir}: not a directory (--run wants a run directory written by "
                       "`vmr train`)")
    if not (run_dir / "run.json").is_file():
        raise VmrError(f"{run_dir}: not a vmr run directory (no run.json; is it the --out of "
                       "`vmr train`?)")
    if checkpoint == "auto":
        checkpoint = "best" if (run_dir / "best.pt").is_file() else "last"
    name = CHECKPOINT_FILES[checkpoint]
    if not (run_dir / name).is_file():
        other = "last" if checkpoint == "best" else "best"
        hint = (f"; try --checkpoint {other}" if (run_dir / CHECKPOINT_FILES[other]).is_file()
                else "; has training finished its first epoch?")
        raise VmrError(f"{run_dir}: no checkpoint {name}{hint}")
    from vmr.train.inference import load_run

    return load_run(run_dir, checkpoint=checkpoint, device=device)


def eval_pairs(dataset, split: str) -> tuple[list, list[int]]:
    """(histories, targets) of every user with a `split` target, from Dataset.split_sequences."""
    pairs = dataset.split_sequences(split)
    histories = [h for h, _ in pairs]
    targets = [int(t) for _, t in pairs]
    if not targets:
        where = getattr(dataset, "path", None) or "the dataset"
        raise VmrError(f"{where}: no user has a {split} target (users need at least "
                       f"{3 if split == 'valid' else 2} interactions)")
    return histories, targets


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to a temp file beside `path`, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_table(rows: list[tuple[str, str]]) -> str:
    """Two left-aligned columns."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def evaluate_run(run: str | Path, ks: list[int] = (5, 10), split: str = "test",
                 include_history: bool = False, checkpoint: str = "best") -> str:
    """Evaluate a run on `split`; write RUN_DIR/metrics_<split>.json; return the printed table."""
    import torch

    from vmr.evaluate.metrics import evaluate_model

    ks = sorted(set(int(k) for k in ks)) or [5, 10]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = open_run(run, checkpoint, device=device)
    histories, targets = eval_pairs(loaded.dataset, split)
    result = evaluate_model(loaded, histories, targets, ks, include_history=include_history,
                            progress=True)
    metrics = {}
    for k in ks:
        metrics[f"HR@{k}"] = result[f"HR@{k}"]
        metrics[f"NDCG@{k}"] = result[f"NDCG@{k}"]
    metrics["MRR"] = result["MRR"]
    metrics["users"] = result["users"]
    metrics["items"] = result["items"]
    out = Path(run) / f"metrics_{split}.json"
    try:
        write_json_atomic(out, metrics)
    except OSError as e:  # a full disk, a read-only run directory
        from vmr.cache.store import os_reason

        raise VmrError(f"cannot write {out}: {os_reason(e)}") from None

    rows = [("metric", "value")]
    rows += [(k, f"{v:.4f}") for k, v in metrics.items() if k not in ("users", "items")]
    rows += [("users", str(metrics["users"])), ("items", str(metrics["items"]))]
    head = (f"{Path(run)}: {CHECKPOINT_FILES[checkpoint]}, split {split}, full ranking over all "
            f"items, history {'included' if include_history else 'excluded'}")
    return f"{head}\n{format_table(rows)}\nwrote {out}"
