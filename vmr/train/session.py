"""`vmr train` as a request: resolve the config, check the run directory, load the data, run
the trainer, and say what happened. The CLI and the demo call `start_training`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from vmr.cache import read as cache_read
from vmr.errors import VmrError
from vmr.fsio import atomic_write_text, os_reason, is_disk_full
from vmr.model.config import check_config, load_config, to_toml
from vmr.model.config_keys import Config
from vmr.model.kinds import model_kind
from vmr.model.rundir import RunDir, read_checkpoint


@dataclass
class TrainRequest:
    """What `vmr train` was asked to do (the CLI's options, one field each)."""
    data: str
    out: str | None = None          # default: runs/<model kind>-<time>
    cache: str | None = None        # default: DATA/features.h5 (or, on --resume, the run's cache)
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    stage: str = "all"              # all | pretrain | sequence
    modalities: list[str] | None = None
    seed: int | None = None
    resume: bool = False
    init_from: str | None = None    # a run on another catalogue to start from (vmr/train/init_from.py)
    freeze: bool = False            # with init_from: keep the content encoder fixed


def start_training(req: TrainRequest) -> Path:
    """Train per the request; returns the run directory. Under torchrun every rank calls this."""
    from vmr.train.distributed import init_from_env, shutdown

    d = init_from_env()
    out = req.out
    try:
        return _start(d, req)
    except OSError as e:  # a full disk or a read-only place while writing the run directory
        if not is_disk_full(e) and not isinstance(e, PermissionError):
            raise
        raise VmrError(f"cannot write run directory {out or 'runs/'}: {os_reason(e)}; "
                       "checkpoints saved before are intact (fix it, then rerun the same "
                       "command)") from None
    finally:
        shutdown(d)


def _start(d, req: TrainRequest) -> Path:
    """Check the request, resolve the config, load the data, train, and report the best epoch."""
    from vmr.train.data import load_train_data
    from vmr.train.distributed import barrier
    from vmr.train.trainer import train

    _check_options(req)
    if req.out is None:
        probe = load_config(req.config, req.overrides)
        req.out = str(Path("runs") / f"{probe.model.kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    run = RunDir(req.out)
    cfg, cache, resume = _run_config(req, run)
    if cfg.train.tensorboard:        # missing package: say so before any work
        from vmr.train.runlog import tensorboard_writer_class

        tensorboard_writer_class()
    barrier(d)                       # every rank checked the directory before rank 0 writes
    data = load_train_data(req.data, cache, cfg)
    init = _init(req, run, cfg, data, cache, resume)
    if d.main:
        _write_config(run, cfg)
    barrier(d)
    summary = train(cfg, data, run.path, stage=req.stage, resume=resume,
                    meta=_meta(req, cfg, data, cache, init), dist=d, init=init)
    if summary.get("best_valid") and d.main:
        _report(summary, cfg, data, run)
    return run.path


def _check_options(req: TrainRequest) -> None:
    """Refuse the combinations of options that cannot work (--resume with what a run fixed)."""
    resume = req.resume
    if req.out is None and resume:
        raise VmrError("--resume needs --out RUN_DIR (the run to continue)")
    if resume and req.seed is not None:
        raise VmrError("--seed cannot change a run being resumed (its seed is in config.toml); "
                       "drop --seed, or start a new run")
    if resume and req.modalities:
        raise VmrError("--modalities cannot change a run being resumed; drop --modalities, or "
                       "start a new run")
    if resume and req.config:
        raise VmrError("--config cannot change a run being resumed (it continues with its "
                       "config.toml); drop --config, or start a new run")
    if resume and req.init_from:
        raise VmrError("--init-from starts a new run; a resumed run continues from its own "
                       "checkpoint (drop --init-from)")
    if req.freeze and not req.init_from:
        raise VmrError("--freeze keeps transferred weights fixed: it needs --init-from RUN_DIR")


def _run_config(req: TrainRequest, run: RunDir) -> tuple[Config, str | None, bool]:
    """(config, cache, resume): a resumed run's own config.toml and cache (also `--stage
    sequence` after its pre-training), else a fresh, checked config."""
    resume, cache = req.resume, req.cache
    if not resume and req.stage == "sequence" and run.last.exists():
        resume = _continues_after_pretraining(run)
    if not resume:
        return _fresh_config(req, run), cache, False
    if not run.config_toml.exists():
        raise VmrError(f"{run.path}: not a run directory (no config.toml); nothing to resume")
    cfg = load_config(run.config_toml, req.overrides)
    if cache is None and run.info.exists():        # continue on the cache the run started with
        cache = run.read_info().get("cache")
    return cfg, cache, True


def _write_config(run: RunDir, cfg: Config) -> None:
    """The run directory and its config.toml (rank 0), or a one-line error."""
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_toml, to_toml(cfg))
    except OSError as e:
        raise VmrError(f"cannot write run directory {run.path}: {os_reason(e)}; checkpoints "
                       "saved before are intact (fix it, then rerun the same command)") from None


def _meta(req: TrainRequest, cfg: Config, data, cache, init) -> dict:
    """What run.json records of the inputs: data and cache paths, modalities, the run's label,
    and the transfer it started from."""
    data_dir = Path(req.data)
    cache_path = cache_read.resolve_cache(data_dir, cache)
    meta = {"data": str(data_dir.resolve()), "cache": str(cache_path.resolve()),
            "modalities": sorted(data.feats), "label": model_kind(cfg.model.kind).run_label(cfg, req.stage)}
    if init is not None:
        meta["label"] += init.label_suffix()
        if cfg.train.transfer_lr != 1.0:
            meta["label"] += f"-lr{cfg.train.transfer_lr:g}"
        if cfg.train.freeze_epochs:
            meta["label"] += f"-freeze{cfg.train.freeze_epochs}"
        if cfg.train.anchor:
            meta["label"] += f"-anchor{cfg.train.anchor:g}"
        if cfg.train.lowrank:
            meta["label"] += f"-lowrank{cfg.train.lowrank}"
        meta["init"] = init.record()
    if cfg.train.id_warmup:
        meta["label"] += f"-idwarmup{cfg.train.id_warmup}"
    return meta


def _report(summary: dict, cfg: Config, data, run: RunDir) -> None:
    """Print the best validation scores, then what is chosen on them after training
    (vmr/evaluate/calibrate.py): the last-item similarity weight and the new-item gain."""
    bv = summary["best_valid"]
    print(f"best valid NDCG@10 {bv.get('NDCG@10', float('nan')):.4f} "
          f"HR@10 {bv.get('HR@10', float('nan')):.4f} at epoch {summary['best_epoch']}")
    if not model_kind(cfg.model.kind).uses_features:
        return
    from vmr.evaluate.calibrate import calibrate_run

    chosen = calibrate_run(run.path)
    for key, what, off in (("similarity", "last-item similarity weight", 0.0),
                           ("gain", "new-item gain", 1.0)):
        if key not in chosen:
            continue
        v, scores = chosen[key]
        if v == off:
            print(f"{what} {v:g}: none other helps on validation (NDCG@10 {scores[off]:.4f})")
        else:
            print(f"{what} {v:g}, chosen on validation (NDCG@10 {scores[off]:.4f} at {off:g} "
                  f"-> {scores[v]:.4f})")


def _init(req: TrainRequest, run: RunDir, cfg: Config, data, cache, resume: bool):
    """The transfer a run starts from (--init-from), or continues under (--resume)."""
    from vmr.train import init_from

    if req.init_from:
        cache_name = str(cache_read.resolve_cache(req.data, cache))
        return init_from.prepare_init(req.init_from, cfg, data, cache_name, req.freeze)
    if resume and run.info.exists():
        return init_from.resumed_init(run.read_info().get("init"))
    return None


def _fresh_config(req: TrainRequest, run: RunDir) -> Config:
    if req.init_from:
        from vmr.train.init_from import source_config

        cfg = source_config(req.init_from, req.config, req.overrides)
    else:
        cfg = load_config(req.config, req.overrides)
    if req.seed is not None:
        cfg.train.seed = req.seed
    if req.modalities:
        cfg.data.modalities = list(req.modalities)
    check_config(cfg)
    if cfg.train.transfer_lr != 1.0 and not req.init_from:
        raise VmrError(f"train.transfer_lr = {cfg.train.transfer_lr:g} scales the weights loaded "
                       "by --init-from RUN_DIR; without --init-from leave it at 1")
    if cfg.train.anchor and not req.init_from:
        raise VmrError(f"train.anchor = {cfg.train.anchor:g} holds weights loaded by --init-from "
                       "RUN_DIR near their start; without --init-from leave it at 0")
    if cfg.train.lowrank and not req.init_from:
        raise VmrError(f"train.lowrank = {cfg.train.lowrank} trains low-rank updates of weights "
                       "loaded by --init-from RUN_DIR; without --init-from leave it at 0")
    if cfg.train.freeze_epochs and not req.init_from:
        raise VmrError(f"train.freeze_epochs = {cfg.train.freeze_epochs} keeps weights loaded by "
                       "--init-from RUN_DIR fixed at first; without --init-from leave it at 0")
    if run.holds_run():
        raise VmrError(f"{run.path} already holds a run; continue it with --resume or choose "
                       "another --out")
    if req.stage == "sequence" and model_kind(cfg.model.kind).pretrains and cfg.pretrain.epochs > 0:
        raise VmrError(f"--stage sequence with pretrain.epochs = {cfg.pretrain.epochs}, but "
                       f"{run.path} holds no pre-trained model: run `vmr train --stage pretrain "
                       f"--out {run.path}` first, or set pretrain.epochs=0")
    return cfg


def _continues_after_pretraining(run: RunDir) -> bool:
    """`--stage sequence` on a run whose last checkpoint ends its pre-training: continue it."""
    ckpt = read_checkpoint(run.last)
    pre = ckpt["config"].get("pretrain", {}).get("epochs", 0)
    if ckpt["stage"] == "pretrain" and ckpt["epoch"] >= pre:
        return True
    if ckpt["stage"] == "pretrain":
        raise VmrError(f"{run.path}: pre-training stopped after epoch {ckpt['epoch']} of {pre}; "
                       "finish it with `--stage pretrain --resume` first")
    return False
