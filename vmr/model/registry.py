"""Building models of the kinds of vmr/model/kinds.py.

`model_args` is what a checkpoint stores to rebuild its model without anything else (as
nanoGPT's `model_args`): the kind, the model config, the number of items and the width of each
cached modality. `build_model(model_args)` is the one constructor every reader and the trainer
use."""

from __future__ import annotations

import dataclasses

from vmr.errors import VmrError
from vmr.model.config import check_config, config_from_dict
from vmr.model.kinds import MODEL_KINDS, model_kind


def make_model_args(model_cfg, n_items: int, dims: dict[str, int]) -> dict:
    """The constructor arguments a checkpoint carries (plain types only)."""
    return {"kind": model_cfg.kind, "config": dataclasses.asdict(model_cfg),
            "n_items": int(n_items), "dims": {m: int(d) for m, d in sorted(dims.items())}}


MODALITIES = ("text", "image", "video")
MAX_ITEMS, MAX_DIM = 1 << 31, 1 << 16


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_model_args(args, where: str = "model_args") -> None:
    """`model_args` as a checkpoint stores them (see `make_model_args`), checked against that
    schema before anything is built from them: one line naming `where` and the bad field."""
    if not isinstance(args, dict):
        raise VmrError(f"{where}: model_args is a {type(args).__name__}, not a table")
    missing = [k for k in ("kind", "config", "n_items", "dims") if k not in args]
    if missing:
        raise VmrError(f"{where}: model_args lacks {', '.join(missing)} (damaged, or not "
                       "written by vmr)")
    kind, n, dims = args["kind"], args["n_items"], args["dims"]
    if not isinstance(kind, str) or not isinstance(args["config"], dict):
        raise VmrError(f"{where}: model_args has a kind {kind!r} or a config that is not a table")
    if kind not in MODEL_KINDS:
        raise VmrError(f"{where}: unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    if not _is_int(n) or not 1 <= n <= MAX_ITEMS:
        raise VmrError(f"{where}: model_args.n_items must be a positive integer, not {n!r}")
    if not isinstance(dims, dict) or any(
            m not in MODALITIES or not _is_int(d) or not 1 <= d <= MAX_DIM for m, d in dims.items()):
        raise VmrError(f"{where}: model_args.dims must map modalities ({', '.join(MODALITIES)}) "
                       f"to widths 1..{MAX_DIM}, not {str(dims)[:80]}")
    try:
        cfg = config_from_dict({"model": args["config"]})
        check_config(cfg)
    except VmrError as e:
        raise VmrError(f"{where}: model_args.config: {e}") from None
    if cfg.model.kind != kind:
        raise VmrError(f"{where}: model_args kind {kind!r} but its config says "
                       f"{cfg.model.kind!r}")


def build_model(model_args: dict, where: str = "model_args"):
    """A fresh model of the kind and shape `model_args` describe (see `make_model_args`),
    checked against that schema first."""
    check_model_args(model_args, where)
    cfg = config_from_dict({"model": model_args["config"]}).model
    return model_kind(model_args["kind"]).build(cfg, model_args["n_items"], dict(model_args["dims"]))


def check_widths(where: str, dims: dict, feats: dict, cache) -> None:
    """The cached features must have the widths the model was built for."""
    for m, d in sorted(dims.items()):
        have = int(feats[m].shape[1]) if m in feats else None
        if have != d:
            raise VmrError(f"{where}: the model reads {m} features of width {d} but {cache} "
                           f"holds {have if have is not None else 'none'}")


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
