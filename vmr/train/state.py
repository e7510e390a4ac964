"""TrainState: what every stage of the trainer works on (the model, its data, the run directory,
the log), and the one checkpoint dict it saves (vmr/model/rundir.py holds the schema)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vmr._version import __version__
import vmr.parallel as parallel
from vmr.model.config_keys import Config
from vmr.model.pretrain import PretrainHeads
from vmr.model.rundir import CHECKPOINT_FORMAT, RunDir, save_checkpoint
from vmr.train.anchor import StartAnchor
from vmr.train.data import TrainData
from vmr.train.device_rng import rng_state
from vmr.train.distributed import Dist
from vmr.train.ema import WeightAverage
from vmr.train.lowrank import LowRankUpdate
from vmr.train.runlog import MetricsLog


@dataclass
class TrainState:
    """What every stage works on."""
    cfg: Config
    data: TrainData
    model: torch.nn.Module
    heads: PretrainHeads
    run: RunDir
    log: MetricsLog
    device: torch.device
    dist: Dist
    quiet: bool
    model_args: dict
    t0: float = field(default_factory=time.time)
    transferred: bool = False        # starts now from another run's weights (--init-from)
    from_source: bool = False        # a --init-from run, fresh or resumed
    threads: parallel.EpochThreads | None = None   # the thread count, re-checked per epoch
    ema: WeightAverage | None = None  # train.ema: the averaged weights validation uses
    anchor: StartAnchor | None = None  # train.anchor: the loaded weights' start, pulled toward
    lowrank: LowRankUpdate | None = None  # train.lowrank: the loaded matrices' start and factors

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def checkpoint(self, opt, stage: str, epoch: int, best=None, bad: int = 0) -> dict:
        return {"format": CHECKPOINT_FORMAT, "model_args": self.model_args, "model": self.model.state_dict(),
                "heads": self.heads.state_dict(), "optimizer": opt.state_dict() if opt else None,
                "config": self.cfg.to_dict(), "stage": stage, "epoch": epoch, "best": best,
                "bad_epochs": bad, "rng": rng_state(), "vmr_version": __version__,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                **({"anchor": self.anchor.state_dict()} if self.anchor is not None else {}),
                **({"lowrank": self.lowrank.state_dict()} if self.lowrank is not None else {})}

    def save(self, path: Path, ckpt: dict) -> None:
        if self.dist.main:
            save_checkpoint(ckpt, path)
