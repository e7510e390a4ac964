"""A trained run, loaded for evaluation, recommendation and export: `load_run(run_dir)`.

The model is rebuilt from the checkpoint's `model_args` alone; the dataset and the feature
cache the run was trained on are opened again and checked against the identities that
run.json recorded, so a re-prepared dataset or a re-extracted cache is refused, not used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vmr.errors import VmrError
from vmr.model.config import config_from_dict
from vmr.model.features import load_features
from vmr.model.kinds import model_kind
from vmr.model.registry import (attach_features, build_model, check_model_args, check_widths,
                                mark_unknown_ids)
from vmr.model.rundir import (RunDir, dataset_fingerprint, feature_identity, identity_diff,
                              read_checkpoint)
from vmr.model.towers import TowerView


class LoadedRun:
    """A trained model in eval mode as a dual tower:
    score(u, j) = <user_vectors(histories)[u], item_embeddings()[j]>."""

    def __init__(self, run: RunDir, checkpoint: Path, ckpt: dict, config, dataset, model,
                 device: torch.device, info: dict):
        self.run, self.checkpoint, self.ckpt = run, checkpoint, ckpt
        self.run_dir = run.path
        self.config, self.dataset, self.model, self.device, self.info = (config, dataset, model,
                                                                         device, info)
        gain = info.get("new_item_gain", 1.0)
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 < gain < 100:
            raise VmrError(f"{run.info}: new_item_gain must be a positive number, not {gain!r}")
        weight = info.get("similarity_weight", 0.0)
        if (isinstance(weight, bool) or not isinstance(weight, (int, float))
                or not 0 <= weight < 1000):
            raise VmrError(f"{run.info}: similarity_weight must be a number >= 0, not {weight!r}")
        if weight and not hasattr(model, "similarity_weight"):
            raise VmrError(f"{run.info}: similarity_weight {weight:g} given for a model of kind "
                           f"{model.kind}, which has no content to compare")
        if weight:
            model.similarity_weight = float(weight)    # vmr/evaluate/similarity.py
        self.tower = TowerView(model, device, config.train.amp, new_item_gain=gain)

    def item_embeddings(self) -> torch.Tensor:
        return self.tower.item_embeddings()

    def user_vectors(self, histories: list[np.ndarray]) -> torch.Tensor:
        return self.tower.user_vectors(histories)

    def history_bias(self) -> torch.Tensor | None:
        return self.tower.history_bias()

    def item_repeat_bias(self) -> torch.Tensor | None:
        return self.tower.item_repeat_bias()

    def similarity_start(self) -> int | None:
        return self.tower.similarity_start()


def load_run(run: str | Path, checkpoint: str = "best", device: str = "cpu") -> LoadedRun:
    """Open a run directory's checkpoint ('best', 'last' or 'auto') with its dataset and
    features; one-line errors for anything missing, damaged or changed since training."""
    from vmr.data.dataset import load_dataset

    rd = RunDir(run).require()
    path = rd.checkpoint(checkpoint)
    info = rd.read_info()
    ckpt = read_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    if not isinstance(info.get("data"), str):
        raise VmrError(f"{rd.info}: no 'data' entry naming the run's dataset directory")
    args = ckpt["model_args"]
    check_model_args(args, str(path))
    dataset = load_dataset(info["data"])
    _check_dataset(rd, info, dataset, args)
    model = build_model(args, str(path))
    if model_kind(args["kind"]).uses_features and args["dims"]:
        cache = info.get("cache")
        if not isinstance(cache, str):
            raise VmrError(f"{rd.info}: no 'cache' entry naming the run's feature cache")
        feats, present, attrs = load_features(Path(cache), dataset.item_ids, sorted(args["dims"]),
                                              cfg.data.feature_norm)
        _check_features(rd, info, attrs, feats, present, cache)
        check_widths(str(path), args["dims"], feats, cache)
        attach_features(model, feats, present)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = " ".join(str(e).split("\n")[1:2]).strip()[:200]
        raise VmrError(f"{path}: the saved weights do not fit the model its model_args "
                       f"describe ({first})") from None
    mark_unknown_ids(model, untrained_items(cfg, dataset))   # never trained: content alone
    dev = torch.device(device)
    model.to(dev).eval()
    return LoadedRun(rd, path, ckpt, cfg, dataset, model, dev, info)


def untrained_items(cfg, dataset):
    """The items a run scores from content alone: those without a trained ID (new items, and
    with model.untrained_ids = unknown every item with no training interaction)."""
    if cfg.model.untrained_ids == "unknown":
        return dataset.untrained_item_indices()
    return dataset.new_item_indices()


def _check_dataset(rd: RunDir, info: dict, dataset, args: dict) -> None:
    if args["n_items"] != len(dataset.item_ids):
        raise VmrError(f"{rd.path}: the run was trained on {args['n_items']} items but "
                       f"{info['data']} now has {len(dataset.item_ids)}; the dataset was "
                       "re-prepared after training (retrain, or prepare into another folder)")
    want = info.get("dataset_fingerprint")
    if not isinstance(want, str) or not want:
        raise VmrError(f"{rd.info}: no dataset_fingerprint entry, so whether {info['data']} is "
                       "still the dataset this run was trained on cannot be checked (run.json "
                       "was edited or damaged; retrain)")
    if want != dataset_fingerprint(dataset):
        raise VmrError(f"{rd.path}: the dataset {info['data']} changed since this run was "
                       "trained (items or histories differ); retrain, or prepare into another "
                       "folder")


def _check_features(rd: RunDir, info: dict, attrs: dict, feats: dict, present: dict,
                    cache: str) -> None:
    recorded = info.get("features") or {}
    for m, ident in recorded.items():
        now = feature_identity(attrs.get(m, {}), feats.get(m), present.get(m))
        diff = identity_diff(now, ident)
        if diff:
            raise VmrError(f"{rd.path}: the {m} features in {cache} changed since this run was "
                           f"trained ({', '.join(diff[:4])} differ); retrain, or extract into "
                           "another --cache")
