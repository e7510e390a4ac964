"""Checking a batch of vectors before it is committed: non-finite rows become failures, and
float16 storage refuses values it cannot hold (shared by both extraction engines)."""

from __future__ import annotations

from vmr.errors import VmrError


def check_finite(feats, ids: list[str], modality: str, dtype: str):
    """Split a batch into finite vectors and failures; refuse float16 overflow."""
    import numpy as np

    ok = np.isfinite(feats).all(axis=1)
    if dtype == "float16" and ok.any() and np.abs(feats[ok]).max() > 65504:
        bad = ids[int(np.flatnonzero(ok & (np.abs(feats).max(axis=1) > 65504))[0])]
        raise VmrError(f"item {bad!r}: {modality} features exceed the float16 range; rerun with "
                       "--dtype float32 --overwrite")
    good = [i for i, k in zip(ids, ok) if k]
    bad = [i for i, k in zip(ids, ok) if not k]
    return good, feats[ok], bad
