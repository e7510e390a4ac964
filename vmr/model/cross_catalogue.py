"""A trained model on another catalogue: every weight but the item-ID rows carries over.

Item IDs mean nothing outside the catalogue they were trained on, while the content encoder
(projections, modality embeddings, fusion blocks) and the sequence encoder read features and
positions, which mean the same on any catalogue encoded by the same feature encoders. So a
model moves to another dataset by rebuilding it for that item count, loading every weight but
the ID table (and the popularity buffer), and leaving the IDs fresh (`vmr train --init-from`,
vmr/train/init_from.py) or unknown (zero-shot: `load_run_on`, used by `vmr eval --data`).

The encoders must be the same: each modality's cache attributes (encoder, weights, pooling,
dimension, ...) as run.json recorded them, without the hash of the values (another catalogue has
other vectors by definition)."""

from __future__ import annotations

from pathlib import Path

from vmr.cache import read as cache_read
from vmr.errors import VmrError

# present in one model and not the other without harm (model.id_dropout's unknown vector)
# and the repeat term, absent from runs trained before it existed; so are the item-ID weights
OPTIONAL_KEYS = ("items.unk_id", "repeat")
# cache attributes that do not decide what an encoder computes, besides rundir.VOLATILE_ATTRS
# (combined_from: the part caches of a `vmr combine`d dataset)
NOT_ENCODER = ("values_sha256", "decoder", "combined_from")


def encoder_parts(identity: dict) -> dict:
    """The attribute part of a feature identity (vmr.model.rundir.feature_identity)."""
    return {k: v for k, v in identity.items() if k not in NOT_ENCODER}


def describe_encoder(identity: dict, dim: int | None) -> str:
    weights = str(identity.get("weights", "?"))
    if len(weights) > 24:
        weights = weights[:24] + "…"
    extra = [f"{k} {identity[k]}" for k in ("pooling", "fps", "max_frames")
             if identity.get(k) not in (None, 0, 0.0, "none", "unknown")]
    return (f"encoder {identity.get('encoder', '?')} (weights {weights}"
            + "".join(f", {e}" for e in extra) + f", {dim if dim is not None else '?'}-d)")


def check_same_encoders(src_name: str, src_features: dict, src_dims: dict, tgt_name: str,
                        tgt_attrs: dict, tgt_dims: dict) -> None:
    """The target's features must come from the encoders the source run was trained on, with
    the same widths and the same modalities; one-line errors naming both sides."""
    from vmr.model.rundir import feature_identity, identity_diff

    if sorted(src_dims) != sorted(tgt_dims):
        raise VmrError(f"{src_name} was trained on modalities {'+'.join(sorted(src_dims)) or 'none'}"
                       f" but {tgt_name} gives {'+'.join(sorted(tgt_dims)) or 'none'}; transfer "
                       "needs the same modalities (--modalities)")
    for m in sorted(src_dims):
        a = encoder_parts(src_features.get(m) or {})
        b = encoder_parts(feature_identity(tgt_attrs.get(m) or {}))
        diff = identity_diff(a, b, NOT_ENCODER)
        if diff or int(src_dims[m]) != int(tgt_dims[m]):
            what = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in diff[:3]) or "width"
            raise VmrError(f"the {m} features differ ({what}): {src_name} was trained on "
                           f"{describe_encoder(a, src_dims[m])} but {tgt_name} holds "
                           f"{describe_encoder(b, tgt_dims[m])}; transfer needs the same encoder "
                           f"(extract the target with the source's --model and settings)")


def load_non_id(model, state: dict, where: str) -> list[str]:
    """Load every weight of `state` except the item-ID ones (the kind's `id_keys`) into `model`
    (whose IDs stay as they are); a weight missing, left over or of another shape is a one-line
    error naming `where`. Returns the names of the weights loaded."""
    own = model.state_dict()
    ids = tuple(model.id_keys)
    optional = ids + OPTIONAL_KEYS
    src = {k: v for k, v in state.items() if k not in ids and (k in own or k not in optional)}
    unexpected = sorted(set(src) - set(own))
    missing = sorted(k for k in set(own) - set(src) if k not in optional)
    if unexpected or missing:
        names = ", ".join((unexpected + missing)[:3])
        raise VmrError(f"{where}: its weights do not fit this model ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected: {names}); the model settings differ")
    for k, v in src.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise VmrError(f"{where}: weight {k} has shape {tuple(v.shape)}, this model's "
                           f"{tuple(own[k].shape)}; the model settings differ")
    model.load_state_dict(src, strict=False)
    return sorted(src)


def load_run_on(run: str | Path, data: str | Path, cache: str | Path | None = None,
                checkpoint: str = "best", device: str = "cpu"):
    """A trained run rebuilt for another dataset's catalogue (zero-shot): its non-ID weights,
    the target's features (same encoders required), every item's ID unknown -- items are
    scored from content alone. Returns a `vmr.model.loaded.LoadedRun` on the target dataset."""
    import numpy as np
    import torch

    from vmr.data.dataset import load_dataset
    from vmr.extract.freshness import check_fresh
    from vmr.model.config import config_from_dict
    from vmr.model.features import load_features
    from vmr.model.kinds import model_kind
    from vmr.model.loaded import LoadedRun
    from vmr.model.registry import (attach_features, build_model, check_model_args,
                                    mark_unknown_ids)
    from vmr.model.rundir import RunDir, read_checkpoint

    rd = RunDir(run).require()
    path = rd.checkpoint(checkpoint)
    info = rd.read_info()
    ckpt = read_checkpoint(path)
    check_model_args(ckpt["model_args"], str(path))
    args = dict(ckpt["model_args"])
    if not model_kind(args["kind"]).uses_features or not args["dims"]:
        raise VmrError(f"{rd.path}: a {args['kind']} run without content features scores items by "
                       "their trained IDs alone; evaluating it on another dataset (--data) needs "
                       "a model that reads content (model.kind = vmr with cached features)")
    dataset = load_dataset(data)
    cache_path = cache_read.resolve_cache(data, cache)
    cfg = config_from_dict(ckpt["config"])
    feats, present, attrs = load_features(cache_path, dataset.item_ids, sorted(args["dims"]),
                                          cfg.data.feature_norm)   # as the run was trained
    check_fresh(data, cache_path, sorted(feats))
    dims = {m: int(x.shape[1]) for m, x in feats.items()}
    check_same_encoders(str(rd.path), info.get("features") or {}, args["dims"], str(cache_path),
                        attrs, dims)
    args["n_items"] = dataset.n_items
    model = build_model(args, str(path))
    attach_features(model, feats, present)
    load_non_id(model, ckpt["model"], str(path))
    mark_unknown_ids(model, np.arange(dataset.n_items))
    dev = torch.device(device)
    model.to(dev).eval()
    # the similarity weight was chosen on the run's own catalogue: zero-shot is the model
    # alone, the state a transferred run starts from (vmr/train/init_from.py)
    info = {**{k: v for k, v in info.items() if k != "similarity_weight"},
            "trained_on": info.get("data"), "data": str(dataset.path),
            "cache": str(cache_path.resolve())}
    return LoadedRun(rd, path, ckpt, cfg, dataset, model, dev, info)
