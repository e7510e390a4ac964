"""Frozen item features from the cache, as the model reads them: float32, standardised per
dimension over the items that have the modality, zero where it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vmr.errors import VmrError


def load_features(cache: Path, item_ids: list[str], modalities: list[str] | None):
    """(feats, present, attrs) per modality: feats float32 [N, d] standardised, present bool
    [N], attrs the cache's attributes of that modality (encoder identity and settings).
    `modalities` None or empty = every modality in the cache."""
    from vmr.cache.store import list_modalities, read_modality

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
        mu = x[p].mean(0)
        sd = x[p].std(0) + 1e-6
        x = np.where(p[:, None], (x - mu) / sd, 0.0).astype(np.float32)
        feats[m], present[m], attrs[m] = torch.from_numpy(x), torch.from_numpy(p), dict(a)
    return feats, present, attrs
