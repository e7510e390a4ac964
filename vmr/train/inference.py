"""Loading a trained run for evaluation, recommendation and export: `load_run(run_dir)`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vmr.errors import VmrError
from vmr.train import precision
from vmr.train.allocator import keep_freed_memory
from vmr.train.config import config_from_dict
from vmr.train.model import Recommender, histories_to_user_vectors


class TowerView:
    """A Recommender as the dual tower `vmr.evaluate.metrics.evaluate_model` expects, its towers
    run in the precision the model was trained in (amp: bfloat16 autocast where native)."""

    def __init__(self, model: Recommender, device: torch.device, amp: bool = False):
        self.model, self.device, self.amp = model, device, amp
        self._table: torch.Tensor | None = None

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        if self._table is None:
            self.model.eval()
            with precision.autocast(self.device, self.amp):
                self._table = self.model.item_embeddings().detach().float()
        return self._table

    @torch.no_grad()
    def user_vectors(self, histories) -> torch.Tensor:
        with precision.autocast(self.device, self.amp):
            return histories_to_user_vectors(self.model, histories, self.item_embeddings(),
                                             self.device)


class LoadedRun:
    """A trained model in eval mode as a dual tower: score(u, j) = <user_vectors[u], item_embeddings[j]>."""

    def __init__(self, run_dir: Path, config, dataset, model: Recommender | None,
                 popularity: torch.Tensor | None, device: torch.device, info: dict):
        self.run_dir, self.config, self.dataset = run_dir, config, dataset
        self.model, self.popularity, self.device, self.info = model, popularity, device, info
        self._tower = TowerView(model, device, config.train.amp) if model is not None else None

    def item_embeddings(self) -> torch.Tensor:
        if self._tower is None:
            return self.popularity.view(-1, 1).float()
        return self._tower.item_embeddings()

    def user_vectors(self, histories: list[np.ndarray]) -> torch.Tensor:
        if self._tower is None:
            return torch.ones(len(histories), 1)
        return self._tower.user_vectors(histories)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> LoadedRun:
    run_dir = Path(run_dir)
    keep_freed_memory()
    info_path = run_dir / "run.json"
    if not run_dir.is_dir():
        raise VmrError(f"run directory not found: {run_dir}")
    if not info_path.exists():
        raise VmrError(f"{run_dir}: not a vmr run directory (no run.json)")
    name = {"best": "best.pt", "last": "checkpoint.pt"}[checkpoint]
    path = run_dir / name
    if not path.exists():
        raise VmrError(f"{run_dir}: no {name} yet (has training reached its first validation?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        msg = (str(e).splitlines() or [""])[0].split(". ")[0][:200]
        raise VmrError(f"{path}: cannot read checkpoint, the file is truncated or damaged "
                       f"({type(e).__name__}: {msg})") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict)
            and isinstance(ckpt.get("model"), dict)):
        raise VmrError(f"{path}: not a vmr checkpoint (no 'model' and 'config' entries)")
    info = json.loads(info_path.read_text())
    cfg = config_from_dict(ckpt["config"])
    from vmr.data.dataset import load_dataset

    dataset = load_dataset(info["data"])
    dev = torch.device(device)
    if cfg.model.kind == "pop":
        return LoadedRun(run_dir, cfg, dataset, None, ckpt["model"]["popularity"], dev, info)
    from vmr.train.trainer import build_model, load_features, TrainData

    feats, present = {}, {}
    if cfg.model.kind == "vmr" and info.get("modalities"):
        feats, present, _ = load_features(Path(info["cache"]), dataset.item_ids, info["modalities"])
    data = TrainData(dataset.item_ids, [], feats, present, {})
    model = build_model(cfg, data)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = " ".join(str(e).split("\n")[1:2]).strip()[:200]
        raise VmrError(f"{path}: the saved weights do not fit the model its config describes "
                       f"({first})") from None
    model.to(dev).eval()
    return LoadedRun(run_dir, cfg, dataset, model, None, dev, info)
