"""The trainer: item-level pre-training, then the sequence stage, with validation every epoch,
early stopping on valid NDCG@10, checkpoints after every epoch, and exact resume on CPU.

A checkpoint is a plain dict: model, heads, optimizer, stage, epoch, best, bad_epochs, config,
rng (torch, numpy, python). `checkpoint.pt` is the latest, `best.pt` the best on validation."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vmr import __version__
from vmr.errors import VmrError
from vmr.train.batches import (eval_pairs, length_bucketed_batches, mask_for_prediction,
                               train_prefixes, trim_padding, window_rows)
from vmr.train.config import Config, config_from_dict, load_config, to_toml
from vmr.train.model import Recommender
from vmr.train import precision
from vmr.train.allocator import keep_freed_memory
from vmr.train.inference import TowerView
from vmr.train.distributed import Dist, agree, barrier, init_from_env, shutdown
from vmr.train.pretrain import PretrainHeads, PretrainObjective, active_terms

METRIC = "NDCG@10"


# ------------------------------------------------------------------------------- data loading
@dataclass
class TrainData:
    item_ids: list[str]
    sequences: list[np.ndarray]
    feats: dict[str, torch.Tensor]          # standardised float32 [N, d_m] per modality
    present: dict[str, torch.Tensor]        # bool [N] per modality
    feature_attrs: dict[str, dict]


def load_features(cache: Path, item_ids: list[str], modalities: list[str] | None):
    from vmr.cache.store import list_modalities, read_modality

    if not cache.is_file():
        raise VmrError(f"feature cache not found: {cache} (run `vmr extract` or "
                       "`vmr import-features` first, or pass --cache)")
    cached = list_modalities(cache)
    wanted = modalities or cached
    if not wanted:
        raise VmrError(f"{cache}: the cache holds no modality; run `vmr extract` first")
    feats, present, attrs = {}, {}, {}
    for m in wanted:
        if m not in cached:
            raise VmrError(f"{cache}: modality {m!r} is not in the cache (cached: "
                           f"{', '.join(cached) or 'none'}); run `vmr extract --modality {m}`")
        x, p, a = read_modality(cache, item_ids, m)
        x = np.asarray(x, dtype=np.float32)
        p = np.asarray(p, dtype=bool)
        bad = ~np.isfinite(x).all(1) & p
        if bad.any():
            first = item_ids[int(np.flatnonzero(bad)[0])]
            raise VmrError(f"{cache}: modality {m!r} has NaN/inf features for {int(bad.sum())} "
                           f"items (first: item {first!r}); re-extract with --overwrite")
        if not p.any():
            raise VmrError(f"{cache}: modality {m!r} is present for no item")
        mu = x[p].mean(0)
        sd = x[p].std(0) + 1e-6
        x = np.where(p[:, None], (x - mu) / sd, 0.0).astype(np.float32)
        feats[m], present[m], attrs[m] = torch.from_numpy(x), torch.from_numpy(p), dict(a)
    return feats, present, attrs


def load_train_data(data_dir: str | Path, cache: str | Path | None, cfg: Config) -> TrainData:
    from vmr.data.dataset import load_dataset

    ds = load_dataset(data_dir)
    if cfg.model.kind == "vmr":
        cache_path = Path(cache) if cache else Path(data_dir) / "features.h5"
        feats, present, attrs = load_features(cache_path, ds.item_ids, cfg.data.modalities or None)
    else:
        feats, present, attrs = {}, {}, {}
    seqs = [np.asarray(s, dtype=np.int64) for s in ds.sequences]
    data = TrainData(ds.item_ids, seqs, feats, present, attrs)
    check_fits(data, cfg)
    return data


def check_fits(data: TrainData, cfg: Config) -> None:
    prefixes = train_prefixes(data.sequences)
    if not any(len(p) >= 2 for p in prefixes):
        raise VmrError("the training split is empty: no user has 2 or more training items "
                       "(check the dataset's k-core and sequence lengths)")
    if not eval_pairs(data.sequences, "valid")[0]:
        raise VmrError("the validation split is empty: no user has 3 or more interactions")
    if cfg.train.loss == "sampled" and cfg.train.n_negatives >= len(data.item_ids):
        raise VmrError(f"train.n_negatives ({cfg.train.n_negatives}) must be smaller than the "
                       f"number of items ({len(data.item_ids)}); use train.loss = \"full\"")


def build_model(cfg: Config, data: TrainData) -> Recommender:
    dims = {m: int(x.shape[1]) for m, x in data.feats.items()}
    if cfg.model.kind == "vmr" and not dims and not cfg.model.item_id_emb:
        raise VmrError("model.kind = vmr needs at least one cached modality or "
                       "model.item_id_emb = true")
    model = Recommender(cfg.model, len(data.item_ids), dims)
    if model.items is not None and dims:
        model.items.set_features(data.feats, data.present)
    return model


def validate(model: Recommender, data: TrainData, device, ks=(5, 10), split="valid",
             amp: bool = False) -> dict:
    from vmr.evaluate.metrics import evaluate_model

    hist, tgt, _ = eval_pairs(data.sequences, split)
    return evaluate_model(TowerView(model, device, amp), hist, tgt, ks)


# ----------------------------------------------------------------------------------- the loop
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VmrError(f"train.device = {name!r} but no CUDA device is available")
    return torch.device(name)


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def atomic_save(obj, path: Path) -> None:
    """Serialize in memory, write `path.tmp`, rename it over `path`. A failed write (a full disk
    is a plain OSError this way, not torch's cryptic RuntimeError) leaves the old file intact."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path.tmp`, rename it over `path`: `path` is the old or the new text, never a
    truncated mix (a full disk, a kill)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


class Run:
    """Everything that belongs to one training run on disk."""

    def __init__(self, run_dir: Path, main: bool = True):
        self.dir = run_dir
        self.main = main            # only the main process (rank 0) writes
        self.ckpt = run_dir / "checkpoint.pt"
        self.best = run_dir / "best.pt"
        self.csv = run_dir / "metrics.csv"
        self.info = run_dir / "run.json"

    COLUMNS = ("stage", "epoch", "loss", "seconds", "seq_per_s", "valid_HR@5", "valid_NDCG@5",
               "valid_HR@10", "valid_NDCG@10", "valid_MRR", "eval_seconds",
               "L_pwc", "L_pwm", "L_i", "L_s", "L_is")

    def write_info(self, summary: dict) -> None:
        if self.main:
            write_json(self.info, summary)

    def log_row(self, row: dict) -> None:
        unknown = set(row) - set(self.COLUMNS)
        assert not unknown, unknown
        if not self.main:
            return
        new = not self.csv.exists()
        with open(self.csv, "a") as f:
            if new:
                f.write(",".join(self.COLUMNS) + "\n")
            f.write(",".join(_fmt(row[c]) if c in row else "" for c in self.COLUMNS) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_log(self, stage: str, epoch: int) -> None:
        """On resume, forget log rows written after the checkpoint we resume from."""
        if not self.csv.exists():
            return
        lines = self.csv.read_text().splitlines()
        order = {"pretrain": 0, "sequence": 1}
        keep = lines[:1]
        for ln in lines[1:]:
            st, ep = ln.split(",")[:2]
            if (order[st], int(ep)) <= (order[stage], epoch):
                keep.append(ln)
        self.csv.write_text("\n".join(keep) + "\n")


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def train(cfg: Config, data: TrainData, run_dir: Path, stage: str = "all", resume: bool = False,
          meta: dict | None = None, quiet: bool = False, dist: Dist | None = None) -> dict:
    """Train per cfg into run_dir; returns the run summary (also written to run.json).
    With `dist` (torchrun), every rank calls this; only rank 0 writes."""
    d = dist or Dist()
    run = Run(run_dir, d.main)
    quiet = quiet or not d.main
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    keep_freed_memory()
    device = resolve_device(t.device)
    if d.enabled and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed % 2**32)
    random.seed(t.seed)
    model = build_model(cfg, data).to(device)
    heads = PretrainHeads(cfg.model.d_model).to(device)
    if d.enabled:                      # same initial weights everywhere, other dropout draws
        torch.manual_seed(t.seed + 7919 * d.rank)
    summary = {"vmr_version": __version__, "model": cfg.model.kind, "status": "running",
               "precision": "bfloat16" if precision.uses_bf16(device, t.amp) else "float32",
               **(meta or {})}
    if cfg.model.kind == "pop":
        return _train_popularity(cfg, data, model, run, summary) if d.main else summary

    state = None
    if resume:
        if not run.ckpt.exists():
            raise VmrError(f"{run_dir}: nothing to resume (no checkpoint.pt); start without --resume")
        try:
            state = torch.load(run.ckpt, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            heads.load_state_dict(state["heads"])
        except Exception as e:  # truncated, garbage, or another program's file
            msg = (str(e).splitlines() or [""])[0].split(". ")[0][:200]
            raise VmrError(f"{run.ckpt}: cannot resume from this checkpoint, it is damaged or "
                           f"not a vmr checkpoint ({type(e).__name__}: {msg})") from None
        summary = {**json.loads(run.info.read_text()), "status": "running"} if run.info.exists() else summary
        if d.main:
            run.truncate_log(state["stage"], state["epoch"])
    run.write_info(summary)

    stages = []
    if stage in ("all", "pretrain") and cfg.model.kind == "vmr" and cfg.pretrain.epochs > 0:
        stages.append("pretrain")
    if stage in ("all", "sequence"):
        stages.append("sequence")
    if stage == "sequence" and cfg.model.kind == "vmr" and cfg.pretrain.epochs > 0 and not resume:
        pre = run_dir / "pretrain.pt"
        if pre.exists():
            model.load_state_dict(torch.load(pre, map_location="cpu", weights_only=False)["model"])
    t0 = time.time()
    for st in stages:
        if state is not None and state["stage"] == "sequence" and st == "pretrain":
            continue
        resume_state = state if (state is not None and state["stage"] == st) else None
        if st == "pretrain":
            _pretrain(cfg, data, model, heads, run, device, resume_state, quiet, d)
        else:
            summary.update(_sequence_stage(cfg, data, model, heads, run, device, resume_state,
                                           quiet, t0, d))
    summary["status"] = "finished"
    summary["train_seconds"] = round(time.time() - t0, 2)
    if d.enabled:
        summary["world_size"] = d.world
    run.write_info(summary)
    if d.main:
        plot_curves(run)
    barrier(d)
    return summary


def _train_popularity(cfg, data, model, run, summary) -> dict:
    counts = np.zeros(len(data.item_ids), dtype=np.float64)
    for p in train_prefixes(data.sequences):
        np.add.at(counts, p, 1.0)
    pop = torch.from_numpy(np.log1p(counts)).float()
    ckpt = {"model": {"popularity": pop}, "config": cfg.to_dict(), "stage": "sequence",
            "epoch": 0, "best": None, "vmr_version": __version__}
    atomic_save(ckpt, run.best)
    atomic_save(ckpt, run.ckpt)
    summary.update(status="finished", best_epoch=0, train_seconds=0.0)
    write_json(run.info, summary)
    return summary


def _make_optimizer(params, lr, wd):
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def _save(run: Run, model, heads, opt, stage, epoch, best, bad, cfg: Config, extra=None) -> None:
    if not run.main:
        return
    ckpt = {"model": model.state_dict(), "heads": heads.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": None, "stage": stage, "epoch": epoch,
            "best": best, "bad_epochs": bad, "config": cfg.to_dict(), "rng": rng_state(),
            "vmr_version": __version__, **(extra or {})}
    atomic_save(ckpt, run.ckpt)


def _pretrain(cfg, data, model, heads, run, device, state, quiet, d: Dist) -> None:
    from tqdm import tqdm

    p = cfg.pretrain
    enc = model.items
    terms = active_terms(enc, p)
    if not quiet:
        print(f"pre-training terms: {', '.join(f'{k}×{w:g}' for k, w in terms.items()) or 'none'}")
    if not terms:
        return
    objective = PretrainObjective(enc, heads, p, terms)
    opt = _make_optimizer(objective.parameters(), p.lr, 0.0)
    fwd = objective
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        fwd = DDP(objective, find_unused_parameters=True)
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start = state["epoch"] + 1
    n = len(data.item_ids)
    for epoch in range(start, p.epochs):
        model.train(); heads.train()
        g = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + 7919 * epoch + 1)
        perm = torch.randperm(n, generator=g)
        tot, steps, t0 = {}, 0, time.time()
        bar = tqdm(range(0, n, p.batch_size), desc=f"pretrain {epoch + 1}/{p.epochs}",
                   disable=quiet, leave=False, unit="batch", mininterval=1.0)
        for s in bar:
            batch = perm[s: s + p.batch_size]
            batch = batch[: len(batch) - len(batch) % d.world]
            if len(batch) < 2 * d.world:
                continue
            idx = batch[d.rank::d.world].to(device)
            with precision.autocast(device, cfg.train.amp):
                losses = fwd(idx)
            if not losses:
                continue
            loss = sum(terms[k] * v for k, v in losses.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in losses.items():
                tot[k] = tot.get(k, 0.0) + v.item()
            steps += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        row = {"stage": "pretrain", "epoch": epoch,
               "loss": sum(tot.values()) / max(steps, 1), "seconds": time.time() - t0}
        for k in ("pwc", "pwm", "i", "s", "is"):
            row[f"L_{k}"] = tot.get(k, 0.0) / max(steps, 1)
        run.log_row(row)
        _save(run, model, heads, opt, "pretrain", epoch, None, 0, cfg)
        if not quiet:
            print(f"pretrain epoch {epoch + 1}: loss {row['loss']:.4f} ({row['seconds']:.1f}s)")
    if run.main:
        atomic_save({"model": model.state_dict(), "config": cfg.to_dict()}, run.dir / "pretrain.pt")


def _sequence_stage(cfg, data, model, heads, run, device, state, quiet, t_start, d: Dist) -> dict:
    from tqdm import tqdm

    t, m = cfg.train, cfg.model
    masked = m.objective == "masked"
    width = m.max_len if masked else m.max_len + 1
    rows = window_rows(train_prefixes(data.sequences), width, 1 if masked else 2)
    opt = _make_optimizer(model.parameters(), t.lr, t.weight_decay)
    start, best, bad = 0, None, 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start, best, bad = state["epoch"] + 1, state["best"], state["bad_epochs"]
    else:
        model.copy_item_blocks_into_sequence()
    fwd = model
    if t.compile and device.type == "cuda":
        fwd = torch.compile(model)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        fwd = DDP(fwd, find_unused_parameters=True)
    n_items = len(data.item_ids)
    autocast = precision.autocast(device, t.amp)
    for epoch in range(start, t.epochs):
        model.train()
        g = torch.Generator().manual_seed(t.seed * 1_000_003 + 7919 * epoch)
        batches = length_bucketed_batches(rows, t.batch_size, g)
        # Batches are bucketed by length, so their target counts differ a lot: weight every
        # target equally by dividing each batch's summed loss by the mean count per batch.
        per_batch = float((rows[:, 1:] >= 0).sum()) / len(batches) / d.world if not masked else None
        if d.enabled:                    # every rank takes its slice of every global batch
            batches = [b[d.rank::d.world] for b in batches if len(b) >= d.world]
        total, steps, t0 = 0.0, 0, time.time()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{t.epochs}", disable=quiet, leave=False,
                   unit="batch", mininterval=1.0)
        for b in bar:
            x = trim_padding(rows[b]).to(device)
            with autocast:
                ce, n_tgt = _sequence_loss(fwd, x, masked, m, t, n_items, device)
                loss = ce * (n_tgt / per_batch) if per_batch else ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += ce.item() * n_tgt          # the logged loss: mean cross-entropy per target
            steps += n_tgt
            bar.set_postfix(loss=f"{ce.item():.3f}", refresh=False)
        secs = time.time() - t0
        row = {"stage": "sequence", "epoch": epoch, "loss": total / max(steps, 1),
               "seconds": secs, "seq_per_s": len(rows) / max(secs, 1e-9)}
        improved = False
        if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
            te = time.time()
            res = validate(model, data, device, amp=t.amp)
            row.update({f"valid_{k}": res[k] for k in ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")})
            row["eval_seconds"] = time.time() - te
            if best is None or res[METRIC] > best[METRIC]:
                best = {**{k: v for k, v in res.items() if "@" in k or k == "MRR"}, "epoch": epoch}
                bad, improved = 0, True
                if run.main:
                    atomic_save({"model": model.state_dict(), "config": cfg.to_dict(),
                                 "epoch": epoch, "best": best, "vmr_version": __version__}, run.best)
            else:
                bad += 1
        run.log_row(row)
        _save(run, model, heads, opt, "sequence", epoch, best, bad, cfg)
        if not quiet:
            v = row.get(f"valid_{METRIC}")
            print(f"epoch {epoch + 1}: loss {row['loss']:.4f}  {secs:.1f}s "
                  f"({row['seq_per_s']:.0f} seq/s)" + (f"  valid {METRIC} {v:.4f}" if v is not None else "")
                  + ("  *" if improved else ""), flush=True)
        if bad >= t.patience:
            break
        if agree(d, bool(t.max_minutes) and time.time() - t_start > 60 * t.max_minutes):
            if not quiet:
                print(f"stopping: train.max_minutes = {t.max_minutes} reached")
            break
    return {"best_epoch": best["epoch"] if best else None,
            "best_valid": {k: v for k, v in (best or {}).items() if k != "epoch"}}


def _sequence_loss(model, x, masked, m, t, n_items, device):
    """One batch of the sequence stage -> (mean loss, number of targets). x [B, W] rows."""
    neg_idx = None
    if t.loss == "sampled":
        neg_idx = torch.randint(0, n_items, (t.n_negatives,), device=device)
    if masked:
        inp, rm, tgt = mask_for_prediction(x.cpu(), m.mask_rate, n_items)
        inp, rm, tgt = inp.to(device), rm.to(device), tgt.to(device)
    else:
        inp, tgt, rm = x[:, :-1], x[:, 1:], None
    return model(inp, tgt, rm, neg_idx), int((tgt >= 0).sum())


# ------------------------------------------------------------------------------------ curves
def plot_curves(run: Run) -> None:
    """curves.png: training loss per epoch (both stages) and validation HR@10 / NDCG@10."""
    import csv

    if not run.csv.exists():
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(run.csv)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for st, style in (("pretrain", "--"), ("sequence", "-")):
        part = [r for r in rows if r["stage"] == st]
        if part:
            axes[0].plot([int(r["epoch"]) + 1 for r in part], [float(r["loss"]) for r in part],
                         style, label=f"{st} loss")
    axes[0].set_xlabel("epoch"); axes[0].set_ylabel("training loss"); axes[0].legend()
    for col in ("valid_HR@10", "valid_NDCG@10"):
        pts = [(int(r["epoch"]) + 1, float(r[col])) for r in rows
               if r["stage"] == "sequence" and r.get(col)]
        if pts:
            axes[1].plot(*zip(*pts), marker=".", label=col.replace("valid_", "valid "))
    axes[1].set_xlabel("epoch"); axes[1].set_ylabel("metric")
    if axes[1].lines:
        axes[1].legend()
    fig.suptitle(run.dir.name)
    fig.tight_layout()
    tmp = run.dir / "curves.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, run.dir / "curves.png")


# ------------------------------------------------------------------------------------- the CLI
def train_from_cli(data, cache, config, overrides, out, stage, modalities, seed, resume) -> Path:
    d = init_from_env()
    try:
        return _train_from_cli(d, data, cache, config, overrides, out, stage, modalities, seed,
                               resume)
    except OSError as e:  # a full disk while writing the run directory
        import errno

        from vmr.cache.store import os_reason

        if e.errno not in (errno.ENOSPC, errno.EFBIG):
            raise
        raise VmrError(f"cannot write run directory {out}: {os_reason(e)}; checkpoints saved "
                       "before are intact (free space, then rerun with --resume)") from None
    finally:
        shutdown(d)


def _train_from_cli(d: Dist, data, cache, config, overrides, out, stage, modalities, seed,
                    resume) -> Path:
    data_dir = Path(data)
    if out is None:
        if resume:
            raise VmrError("--resume needs --out RUN_DIR (the run to continue)")
        kind = "run"
        out = Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out)
    saved = run_dir / "config.toml"
    if resume:
        if not saved.exists():
            raise VmrError(f"{run_dir}: not a run directory (no config.toml); nothing to resume")
        cfg = load_config(saved, overrides)
        info = run_dir / "run.json"
        if cache is None and info.exists():          # continue on the cache the run started with
            cache = json.loads(info.read_text()).get("cache")
    else:
        cfg = load_config(config, overrides)
        if seed is not None:
            cfg.train.seed = seed
        if modalities:
            cfg.data.modalities = list(modalities)
        from vmr.train.config import validate as validate_cfg
        validate_cfg(cfg)
        if (run_dir / "checkpoint.pt").exists() or (run_dir / "best.pt").exists():
            raise VmrError(f"{run_dir} already holds a run; continue it with --resume or choose "
                           "another --out")
    barrier(d)                       # every rank checked the directory before rank 0 writes
    data_tr = load_train_data(data_dir, cache, cfg)
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.toml", to_toml(cfg))
    barrier(d)
    meta = {"data": str(data_dir.resolve()),
            "cache": str(Path(cache).resolve()) if cache else str((data_dir / "features.h5").resolve()),
            "modalities": sorted(data_tr.feats), "label": _label(cfg)}
    summary = train(cfg, data_tr, run_dir, stage=stage, resume=resume, meta=meta, dist=d)
    if summary.get("best_valid") and d.main:
        bv = summary["best_valid"]
        print(f"best valid NDCG@10 {bv.get('NDCG@10', float('nan')):.4f} "
              f"HR@10 {bv.get('HR@10', float('nan')):.4f} at epoch {summary['best_epoch'] + 1}")
    return run_dir


def _label(cfg: Config) -> str:
    m = cfg.model
    if m.kind != "vmr":
        return m.kind
    parts = ["vmr", m.objective]
    if cfg.pretrain.epochs > 0:
        parts.append("pretrain")
    if m.item_id_emb:
        parts.append("id")
    if m.share != "tie":
        parts.append(f"share-{m.share}")
    return "-".join(parts)


def load_config_from_checkpoint(ckpt: dict) -> Config:
    return config_from_dict(ckpt["config"])
