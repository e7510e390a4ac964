"""Frozen item features from the cache, as the model reads them: float32, standardised per
dimension over the items that have the modality, zero where it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vmr.errors import VmrError


NORMS = ("standardize", "center_l2", "l2")


def normalise(x: np.ndarray, p: np.ndarray, how: str) -> np.ndarray:
    """Features of the items that have the modality, made comparable across dimensions:
    standardize (per dimension: zero mean, unit variance), center_l2 (subtract the mean vector,
    then scale each row to norm sqrt(d): keeps the geometry of embeddings such as CLIP's, whose
    low-variance dimensions standardising would blow up), l2 (rows to norm sqrt(d) only)."""
    d = x.shape[1]
    if how == "standardize":
        mu = x[p].mean(0)
        sd = x[p].std(0) + 1e-6
        return (x - mu) / sd
    if how == "center_l2":
        x = x - x[p].mean(0)
    elif how != "l2":
        raise ValueError(f"unknown feature normalisation {how!r}")
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6) * np.sqrt(d)


def load_features(cache: Path, item_ids: list[str], modalities: list[str] | None,
                  norm: str = "standardize"):
    """(feats, present, attrs) per modality: feats float32 [N, d] normalised (see
    `normalise`; zero where absent), present bool [N], attrs the cache's attributes of that
    modality (encoder identity and settings). `modalities` None or empty = every modality."""
    from vmr.cache.read import list_modalities, read_modality

    cache = Path(cache)
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
        x = np.where(p[:, None], normalise(x, p, norm), 0.0).astype(np.float32)
        feats[m], present[m], attrs[m] = torch.from_numpy(x), torch.from_numpy(p), dict(a)
    return feats, present, attrs
