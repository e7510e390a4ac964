"""Building models from the kinds of vmr/model/kinds.py.

`model_args` is what a checkpoint stores to rebuild its model without anything else (as
nanoGPT's `model_args`): the kind, the model config, the number of items and the width of each
cached modality. `build_model(model_args)` is the one constructor every reader and the trainer
use."""

from __future__ import annotations

import dataclasses
import importlib

from vmr.errors import VmrError
from vmr.model.config import config_from_dict
from vmr.model.kinds import model_kind


def make_model_args(model_cfg, n_items: int, dims: dict[str, int]) -> dict:
    """The constructor arguments a checkpoint carries (plain types only)."""
    return {"kind": model_cfg.kind, "config": dataclasses.asdict(model_cfg),
            "n_items": int(n_items), "dims": {m: int(d) for m, d in sorted(dims.items())}}


def build_model(model_args: dict):
    """A fresh model of the kind and shape `model_args` describe (see `make_model_args`)."""
    kind = model_kind(model_args["kind"])
    cfg = config_from_dict({"model": model_args["config"]}).model
    module, cls = kind.target.split(":")
    Model = getattr(importlib.import_module(module), cls)
    if kind.fit == "counts":
        return Model(cfg, model_args["n_items"])
    if kind.uses_features and not model_args["dims"] and not cfg.item_id_emb:
        raise VmrError("model.kind = vmr needs at least one cached modality or "
                       "model.item_id_emb = true")
    return Model(cfg, model_args["n_items"], dict(model_args["dims"]))


def attach_features(model, feats: dict, present: dict) -> None:
    """Give a model that reads content its frozen feature buffers (not saved in checkpoints)."""
    items = getattr(model, "items", None)
    if items is not None and feats:
        items.set_features(feats, present)


def exclude_from_training(model, item_indices) -> None:
    """Items that do not exist at training time (the strict new-item protocol): no training
    loss may rank them, not even as negatives. A no-op for counting models."""
    import torch

    if not hasattr(model, "set_training_items") or not len(item_indices):
        return
    mask = torch.zeros(model.n_items, dtype=torch.bool)
    mask[torch.as_tensor(item_indices, dtype=torch.long)] = True
    model.set_training_items(mask)


def mark_unknown_ids(model, item_indices) -> None:
    """Items whose ID row was never trained (new items, another catalogue): the item encoder
    scores them with its unknown vector (or zero) instead. A no-op for models without item-ID
    embeddings in a content encoder (SASRec, popularity) and for an empty list."""
    import torch

    items = getattr(model, "items", None)
    if items is None or getattr(items, "id_emb", None) is None or not len(item_indices):
        return
    mask = torch.zeros(items.n_items, dtype=torch.bool)
    mask[torch.as_tensor(item_indices, dtype=torch.long)] = True
    items.set_unknown_ids(mask.to(items.unknown.device))
