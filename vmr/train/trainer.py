"""The trainer: item-level pre-training, then the sequence stage, with validation every epoch,
early stopping on valid NDCG@10, a checkpoint after every epoch, and exact resume on CPU.

`train(cfg, data, run_dir)` is the whole of it; the stages take one `TrainState`. Checkpoints
follow the one schema of vmr/model/rundir.py. Epochs are 1-based everywhere a person reads them
(console, metrics.csv, run.json, checkpoints' `epoch` = epochs completed)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch

from vmr._version import __version__
from vmr.data import splits
from vmr.errors import VmrError
from vmr.evaluate.metrics import evaluate_model
import vmr.parallel as parallel
from vmr.model import precision
from vmr.model.config_keys import Config
from vmr.model.pretrain import PretrainHeads
from vmr.model.kinds import model_kind
from vmr.model.objectives import Objective, objective_of
from vmr.model.registry import (attach_features, build_model, exclude_from_training,
                                make_model_args, mark_unknown_ids)
from vmr.model.rundir import RunDir, identity_diff, read_checkpoint
from vmr.model.towers import TowerView, trim_padding
from vmr.train.batches import length_bucketed_batches, window_rows
from vmr.train.data import TrainData
from vmr.train.distributed import Dist, agree, barrier
from vmr.train.state import TrainState
from vmr.train.step import batch_step, content_params, id_params, make_optimizer
from vmr.train.runlog import MetricsLog, plot_curves
from vmr.train.device_rng import pick_device, seed_all, set_rng_state
from vmr.train.anchor import StartAnchor
from vmr.train.lowrank import LowRankUpdate
from vmr.train.ema import WeightAverage

METRIC = "NDCG@10"


def train(cfg: Config, data: TrainData, run_dir: Path, stage: str = "all", resume: bool = False,
          meta: dict | None = None, quiet: bool = False, dist: Dist | None = None,
          init=None) -> dict:
    """Train per cfg into run_dir; returns the run summary (also written to run.json).
    With `dist` (torchrun), every rank calls this; only rank 0 writes. `init`
    (vmr.train.init_from.Init) starts from another run's non-ID weights, or keeps them frozen."""
    st = _start_state(cfg, data, run_dir, quiet, dist or Dist(), init)
    summary = _first_summary(st, meta)
    if model_kind(cfg.model.kind).trained_by == "counts":
        st.log.close()                   # nothing per epoch to log
        if st.dist.main:
            summary.update(_fit_counts(st))
            st.run.write_info(summary)
        return summary
    state = None
    if resume:
        state, summary = _resume(st, summary)
    if st.dist.main:
        st.run.write_info(summary)
    for name in _stages(cfg, stage):
        if state is not None and state["stage"] == "sequence" and name == "pretrain":
            continue
        own = state if (state is not None and state["stage"] == name) else None
        if name == "pretrain":
            from vmr.train.pretrain_stage import pretrain_stage

            pretrain_stage(st, own)
        else:
            if own is None and state is not None:     # continuing after a pre-training run
                set_rng_state(state["rng"])
            summary.update(sequence_stage(st, own))
    return _finish(st, summary)


def _start_state(cfg: Config, data: TrainData, run_dir: Path, quiet: bool, d: Dist,
                 init) -> TrainState:
    """The threads, device, seeds, model and pre-training heads, and the run's log."""
    t = cfg.train
    threads = parallel.apply(t.threads)     # train.threads, OMP_NUM_THREADS, else the load
    device = pick_device(t.device)
    if d.enabled and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    seed_all(t.seed)
    args, model = _build(cfg, data, init, device)
    heads = PretrainHeads(cfg.model.d_model).to(device)
    if d.enabled:                      # same initial weights everywhere, other dropout draws
        torch.manual_seed(t.seed + 7919 * d.rank)
    run = RunDir(run_dir)
    return TrainState(cfg, data, model, heads, run, MetricsLog(run, d.main, t.tensorboard),
                      device, d, quiet or not d.main, args,
                      transferred=init is not None and init.state is not None,
                      from_source=init is not None,
                      threads=parallel.EpochThreads(threads))


def _first_summary(st: TrainState, meta: dict | None) -> dict:
    """run.json as the run starts: version, model, precision, threads, and the inputs."""
    cfg = st.cfg
    return {"vmr_version": __version__, "model": cfg.model.kind, "status": "running",
            "precision": "bfloat16" if precision.uses_bf16(st.device, cfg.train.amp) else "float32",
            "parallelism": st.threads.first, "eval_history": cfg.eval.history,
            **(meta or {}), **st.data.identities()}


def _resume(st: TrainState, summary: dict) -> tuple[dict, dict]:
    """(the last checkpoint, loaded into the model and heads; the summary continued from
    run.json); metrics.csv cut back to the checkpoint's epoch."""
    run = st.run
    if not run.last.exists():
        raise VmrError(f"{run.path}: nothing to resume (no checkpoint.pt); start without --resume")
    state = read_checkpoint(run.last)
    try:
        st.model.load_state_dict(state["model"])
        st.heads.load_state_dict(state["heads"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise VmrError(f"{run.last}: its weights do not fit this run's model "
                       f"({str(e).splitlines()[0][:160]})") from None
    if run.info.exists():
        before = run.read_info()
        _check_same_inputs(run, before, st.data)
        summary = {**before, **summary, "status": "running"}
    st.log.truncate(state["stage"], state["epoch"])
    return state, summary


def _stages(cfg: Config, stage: str) -> list[str]:
    """The stages `--stage` asks for that this model has: pretrain, sequence, or both."""
    stages = []
    if stage in ("all", "pretrain") and cfg.pretrain.epochs > 0 \
            and model_kind(cfg.model.kind).pretrains:
        stages.append("pretrain")
    if stage in ("all", "sequence"):
        stages.append("sequence")
    return stages


def _finish(st: TrainState, summary: dict) -> dict:
    """Close the log, write the finished summary and the curves, wait for every rank."""
    st.log.close()                       # the TensorBoard writer, if any (flushed every row)
    summary["status"] = "finished"
    if st.threads is not None:
        summary["parallelism"] = st.threads.record()
    summary["train_seconds"] = round(time.time() - st.t0, 2)
    if st.dist.enabled:
        summary["world_size"] = st.dist.world
    if st.dist.main:
        st.run.write_info(summary)
        plot_curves(st.run)
    barrier(st.dist)
    return summary


def _build(cfg: Config, data: TrainData, init, device) -> tuple[dict, torch.nn.Module]:
    """(model_args, the model on device): its features, the items without a trained ID, the
    items absent at training time (new items), and the transferred weights (`init`)."""
    args = make_model_args(cfg.model, len(data.item_ids), data.dims)
    model = build_model(args)
    attach_features(model, data.feats, data.present)
    new_items = data.new_items if data.new_items is not None else []
    mark_unknown_ids(model, _without_trained_id(cfg, data, new_items))
    exclude_from_training(model, new_items)
    if init is not None:
        init.apply(model)
    return args, model.to(device)


def _without_trained_id(cfg: Config, data: TrainData, new_items):
    """The items scored from content alone (vmr.model.loaded.untrained_items, at training)."""
    if cfg.model.untrained_ids == "unknown":
        return splits.untrained_items(data.sequences, len(data.item_ids), new_items)
    return new_items


def _check_same_inputs(run: RunDir, before: dict, data: TrainData) -> None:
    """--resume continues on the dataset and features the run started with, or refuses."""
    now = data.identities()
    if before.get("dataset_fingerprint") not in (None, now["dataset_fingerprint"]):
        raise VmrError(f"{run.path}: the dataset changed since this run started (items or "
                       "histories differ); start a new run instead of --resume")
    for m, ident in (before.get("features") or {}).items():
        if identity_diff(now["features"].get(m) or {}, ident or {}):
            raise VmrError(f"{run.path}: the cached {m} features changed since this run "
                           "started; start a new run instead of --resume")


def _fit_counts(st: TrainState) -> dict:
    """Models without gradient training (popularity) fit in one pass over the training data."""
    st.model.fit(st.data.prefixes)
    ckpt = st.checkpoint(None, "sequence", 0)
    st.save(st.run.best, ckpt)
    st.save(st.run.last, ckpt)
    return {"status": "finished", "best_epoch": 0, "train_seconds": 0.0}


def validate_epoch(st: TrainState, split: str = "valid", ks=(5, 10)) -> dict:
    hist, tgt, _ = splits.target_pairs(st.data.sequences, split)
    return evaluate_model(TowerView(st.model, st.device, st.cfg.train.amp), hist, tgt, ks,
                          include_history=st.cfg.eval.history == "include")


def sequence_stage(st: TrainState, state: dict | None) -> dict:
    """The sequence stage from `state` (its checkpoint) or its start: an epoch of training, then
    validation, best.pt and checkpoint.pt, until train.epochs, patience or train.max_minutes."""
    t, m = st.cfg.train, st.cfg.model
    objective = objective_of(m)
    rows = window_rows(st.data.prefixes, *objective.window(m.max_len))
    st.lowrank = _lowrank(st, state)
    opt = make_optimizer(st)
    start, best, bad = _resume_or_start(st, opt, state)
    st.ema = _weight_average(st, state)
    st.anchor = _anchor(st, state)
    step = batch_step(st, opt, objective)
    id_ps, content = id_params(st.model), content_params(st)
    for epoch in range(start + 1, t.epochs + 1):
        hold = (id_ps if epoch <= t.id_warmup else []) + (
            content if epoch <= t.freeze_epochs else [])
        loss, secs = _train_epoch(st, step, rows, epoch, objective, hold)
        row = {"stage": "sequence", "epoch": epoch, "loss": loss,
               "seconds": secs, "seq_per_s": len(rows) / max(secs, 1e-9)}
        improved = False
        if epoch % t.eval_every == 0 or epoch == t.epochs:
            best, bad, improved = _validate_epoch_end(st, row, best, bad)
        st.log.append(row)
        st.save(st.run.last, st.checkpoint(opt, "sequence", epoch, best, bad))
        v = row.get(f"valid_{METRIC}")
        st.say(f"epoch {epoch}: loss {row['loss']:.4f}  {secs:.1f}s ({row['seq_per_s']:.0f} seq/s)"
               + (f"  valid {METRIC} {v:.4f}" if v is not None else "") + ("  *" if improved else ""))
        if bad >= t.patience or _out_of_time(st, epoch):
            break
    return {"best_epoch": best["epoch"] if best else None,
            "best_valid": {k: v for k, v in (best or {}).items() if k != "epoch"}}


def _train_epoch(st: TrainState, step, rows, epoch: int, objective: Objective,
                 hold=()) -> tuple[float, float]:
    """(mean cross-entropy per target, seconds) of one epoch over length-bucketed batches;
    the parameters in `hold` are left as they are (train.id_warmup, train.freeze_epochs)."""
    from tqdm import tqdm

    t, d = st.cfg.train, st.dist
    st.model.train()
    g = torch.Generator().manual_seed(t.seed * 1_000_003 + 7919 * (epoch - 1))
    batches = length_bucketed_batches(rows, t.batch_size, g)
    # Batches are bucketed by length, so their target counts differ a lot: weight every
    # target equally by dividing each batch's summed loss by the mean count per batch (where the
    # count does not depend on random draws).
    n_targets = objective.fixed_targets(rows)
    per_batch = n_targets / len(batches) / d.world if n_targets is not None else None
    if d.enabled:                    # every rank takes its slice of every global batch
        batches = [b[d.rank::d.world] for b in batches if len(b) >= d.world]
    total, steps, t0 = 0.0, 0, time.time()
    bar = tqdm(batches, desc=f"epoch {epoch}/{t.epochs}", disable=st.quiet, leave=False,
               unit="batch", mininterval=1.0)
    for b in bar:
        ce, n_tgt = step(trim_padding(rows[b]).to(st.device), per_batch, hold)
        total += ce.item() * n_tgt          # the logged loss: mean cross-entropy per target
        steps += n_tgt
        bar.set_postfix(loss=f"{ce.item():.3f}", refresh=False)
    return total / max(steps, 1), time.time() - t0


def _validate_epoch_end(st: TrainState, row: dict, best: dict | None,
                        bad: int) -> tuple[dict | None, int, bool]:
    """Validate, add the scores to the epoch's row, save best.pt on a new best
    -> (best, epochs without gain, improved)."""
    te = time.time()
    with st.ema.swapped_in() if st.ema is not None else nullcontext():
        res = validate_epoch(st)
        row.update({f"valid_{k}": res[k] for k in ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")})
        row["eval_seconds"] = time.time() - te
        if best is None or res[METRIC] > best[METRIC]:
            return _save_best(st, res, row["epoch"]), 0, True
    return best, bad + 1, False


def _weight_average(st: TrainState, state: dict | None) -> WeightAverage | None:
    """train.ema > 0: the moving average of the weights from here on (vmr/train/ema.py),
    continued from the checkpoint's when resuming."""
    decay = st.cfg.train.ema
    if not decay:
        return None
    return _continued(st, state, WeightAverage(st.model, decay), "ema", "averaged weights",
                      f"train.ema = {decay}")


def _anchor(st: TrainState, state: dict | None) -> StartAnchor | None:
    """train.anchor > 0 (an --init-from run): the loaded weights as they start, every weight but
    the item-ID rows (vmr/train/anchor.py); the checkpoint's when resuming."""
    pull = st.cfg.train.anchor
    if not pull:
        return None
    anchor = StartAnchor(st.model, pull, set(getattr(st.model, "id_keys", ())))
    return _continued(st, state, anchor, "anchor", "starting weights", f"train.anchor = {pull}")


def _lowrank(st: TrainState, state: dict | None) -> LowRankUpdate | None:
    """train.lowrank > 0 (an --init-from run): the loaded weight matrices' start and low-rank
    factors (vmr/train/lowrank.py); the checkpoint's when resuming."""
    rank = st.cfg.train.lowrank
    if not rank:
        return None
    lr = LowRankUpdate(st.model, rank, set(getattr(st.model, "id_keys", ())), st.cfg.train.seed)
    return _continued(st, state, lr, "lowrank", "low-rank factors", f"train.lowrank = {rank}")


def _continued(st: TrainState, state: dict | None, obj, key: str, what: str, setting: str):
    """obj as it starts, or, when resuming, loaded from the checkpoint's `key` (a run must resume
    with the settings it was started with)."""
    if state is not None:
        if key not in state:
            raise VmrError(f"{st.run.last}: this checkpoint has no {what}, but {setting}; "
                           "resume with the run's own config")
        obj.load_state_dict(state[key])
    return obj


def _save_best(st: TrainState, res: dict, epoch: int) -> dict:
    """The new best (its validation scores and epoch), saved as best.pt (no optimizer state)."""
    best = {**{k: v for k, v in res.items() if "@" in k or k == "MRR"}, "epoch": epoch}
    ck = st.checkpoint(None, "sequence", epoch, best)
    resume_only = ("optimizer", "heads", "rng", "anchor", "lowrank")
    st.save(st.run.best, {k: v for k, v in ck.items() if k not in resume_only})
    return best


def _out_of_time(st: TrainState, epoch: int) -> bool:
    """Between epochs: re-check the thread count; True (on every rank) once train.max_minutes
    of wall-clock time are spent."""
    n = st.threads.recheck(epoch) if st.threads is not None else None
    if n is not None:
        st.say(f"other processes' load changed: {n} thread{'s' * (n > 1)} from now on")
    t = st.cfg.train
    if agree(st.dist, bool(t.max_minutes) and time.time() - st.t0 > 60 * t.max_minutes):
        st.say(f"stopping: train.max_minutes = {t.max_minutes} reached")
        return True
    return False


def _resume_or_start(st: TrainState, opt, state: dict | None) -> tuple[int, dict | None, int]:
    """(epochs done, best so far, epochs without gain): the checkpoint's when resuming; else a
    fresh start, where a transferred run's first state is validated as epoch 0 (it is a model
    too, and kept if nothing beats it) and its sequence blocks stay as loaded."""
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        return state["epoch"], state["best"], state["bad_epochs"]
    if st.transferred:
        return 0, _validate_start(st), 0
    st.model.copy_item_blocks_into_sequence()
    return 0, None, 0


def _validate_start(st: TrainState) -> dict:
    """Epoch 0 of a transferred run: its first state (the zero-shot model, vmr/train/init_from.py)
    validated, logged and saved as best.pt, so that fine-tuning can only end at or above it."""
    te = time.time()
    res = validate_epoch(st)
    best = _save_best(st, res, 0)
    st.log.append({"stage": "sequence", "epoch": 0, "eval_seconds": time.time() - te,
                   **{f"valid_{k}": res[k] for k in ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")}})
    st.say(f"epoch 0 (the transferred start, zero-shot): valid {METRIC} {res[METRIC]:.4f}  *")
    return best
