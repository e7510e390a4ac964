"""`vmr eval`: full-ranking leave-one-out evaluation of a trained run.

Loads the run (`vmr.model.loaded.load_run`), ranks every user's valid or test target (the one
split rule of vmr/data/splits.py) among ALL items, writes `RUN_DIR/metrics_<split>.json`
atomically, with the protocol it was measured under and the metrics per group of targets
(vmr/evaluate/buckets.py: by training frequency, new vs seen items), and each user's rank in
ranks_<split>.parquet (for `vmr report`'s paired comparison, vmr/evaluate/paired.py), and
returns the same dict (`evaluate_run`); `format_eval` is the table the CLI prints. With `data`,
the run is evaluated zero-shot on another dataset (vmr/model/cross_catalogue.py) into
metrics_<split>@<name>-<fp>.json (the target folder's name and the first 8 hex digits of its
fingerprint).
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
                 include_history: bool | None = None, checkpoint: str = "best", loaded=None,
                 progress: bool = True, freq_edges=None, data: str | Path | None = None,
                 cache: str | Path | None = None) -> dict:
    """Evaluate a run on `split`, write RUN_DIR/metrics_<split>.json and return what it holds:
    HR@k, NDCG@k, MRR, users, items, buckets (metrics per frequency bucket of the targets,
    edges `freq_edges`, and new vs seen items) and the protocol. `loaded` reuses a run already
    opened with `load_run` (its checkpoint, not `checkpoint`, is evaluated). `data` (and
    `cache`): evaluate zero-shot on that dataset instead, into metrics_<split>@<name>-<fp>.json.
    include_history None: the run's own protocol (its config's eval.history)."""
    import time

    import vmr.parallel as parallel
    from vmr.evaluate.buckets import DEFAULT_EDGES, bucket_metrics, check_edges, train_counts
    from vmr.evaluate.metrics import evaluate_model

    ks = sorted(set(int(k) for k in ks)) or [5, 10]
    edges = check_edges(freq_edges or DEFAULT_EDGES)
    if cache is not None and data is None:
        raise VmrError("--cache names the feature cache of --data; give --data DATASET_DIR too")
    if loaded is None:
        loaded = _open_run(run, data, cache, checkpoint)
    if include_history is None:
        include_history = loaded.config.eval.history == "include"
    histories, targets = split_targets(loaded.dataset, split)
    threads = parallel.apply()          # OMP_NUM_THREADS, else the cores others leave free
    t0 = time.perf_counter()
    weight = float(getattr(loaded.model, "similarity_weight", 0.0))
    result = evaluate_model(loaded, histories, targets, ks, include_history=include_history,
                            progress=progress, return_ranks=True)
    secs = time.perf_counter() - t0
    metrics = {key: result[key] for k in ks for key in (f"HR@{k}", f"NDCG@{k}")}
    metrics.update({key: result[key] for key in ("MRR", "users", "items")})
    ds = loaded.dataset
    metrics["buckets"] = bucket_metrics(result["ranks"], targets, train_counts(ds), edges, ks,
                                        ds.new_item_indices())
    metrics["protocol"] = {"split": split, "include_history": bool(include_history),
                           "checkpoint": loaded.checkpoint.name, "ranking": "full",
                           "ties": "against the target", "similarity_weight": weight}
    metrics["parallelism"] = {**threads, "seconds": round(secs, 3),
                              "users_per_s": round(len(targets) / max(secs, 1e-9), 1)}
    if ds.new_items:
        metrics["protocol"]["new_items"] = len(ds.new_items)     # kept out of training
    target = None
    if "trained_on" in loaded.info:                 # zero-shot on another dataset
        from vmr.model.rundir import zero_shot_tag

        target = zero_shot_tag(ds)
        metrics["protocol"].update({"zero_shot": True, "data": str(ds.path), "target": target,
                                    "trained_on": loaded.info["trained_on"]})
    _save(loaded.run.metrics_json(split, target), metrics, ds, split, targets, result["ranks"])
    return metrics


def _save(out: Path, metrics: dict, ds, split: str, targets: list[int], ranks) -> None:
    """Each user's rank (ranks_<split>.parquet), then the metrics file, both atomically."""
    from vmr.evaluate.paired import ranks_path, write_ranks

    users = [ds.user_ids[int(u)] for u in ds.split_users(split)]
    path = ranks_path(out)
    try:
        write_ranks(path, users, [ds.item_ids[t] for t in targets], ranks.tolist())
        path = out
        write_json_atomic(out, metrics)
    except OSError as e:  # a full disk, a read-only run directory: name the file that failed
        raise VmrError(f"cannot write {path}: {os_reason(e)}") from None


def _open_run(run, data, cache, checkpoint: str):
    """The run on this machine's device: on its own dataset, or zero-shot on `data`."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if data is not None:
        from vmr.model.cross_catalogue import load_run_on

        return load_run_on(run, data, cache, checkpoint, device=device)
    from vmr.model.loaded import load_run

    return load_run(run, checkpoint, device=device)


def format_eval(run: str | Path, metrics: dict) -> str:
    """The table `vmr eval` prints for what `evaluate_run` returned."""
    from vmr.model.rundir import RunDir

    from vmr.evaluate.buckets import format_buckets

    p = metrics["protocol"]
    rows = [("metric", "value")]
    rows += [(k, f"{v:.4f}") for k, v in metrics.items()
             if k not in ("users", "items") and isinstance(v, float)]
    rows += [("users", str(metrics["users"])), ("items", str(metrics["items"]))]
    table = format_table(rows)
    if metrics.get("buckets"):
        ks = sorted(int(k.split("@")[1]) for k in metrics if k.startswith("NDCG@"))
        metric = "NDCG@10" if 10 in ks else f"NDCG@{ks[-1]}"
        table += (f"\n{metric} by target item (training interactions; new / seen items):\n"
                  + "\n".join("  " + ln for ln in format_table(
                      format_buckets(metrics["buckets"], metric)).splitlines()))
    target = (p.get("target") or Path(p["data"]).name) if p.get("zero_shot") else None
    head = (f"{Path(run)}: {p['checkpoint']}, split {p['split']}, full ranking over all "
            f"items, history {'included' if p['include_history'] else 'excluded'}"
            + (f", zero-shot on {p['data']}" if target else ""))
    from vmr.evaluate.paired import ranks_path

    out = RunDir(run).metrics_json(p["split"], target)
    return f"{head}\n{table}\nwrote {out} and {ranks_path(out).name} (each user's rank)"
