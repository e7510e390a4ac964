"""Reading the feature cache: opening it safely, its item ids and groups, `vmr cache info`.

The file layout is described in vmr/cache/store.py (which re-exports everything here)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from vmr.errors import VmrError

FORMAT = 1
MODALITIES = ("text", "image", "video")
# attributes that must agree for two runs to produce interchangeable features
SETTING_KEYS = ("encoder", "weights", "dim", "dtype", "fps", "max_frames", "pooling")
DEFAULT_NAME = "features.h5"


def resolve_cache(data_dir, cache=None) -> Path:
    """The feature cache of a dataset directory: `cache` when given, else DATA/features.h5
    (the one place that default is written down)."""
    return Path(cache) if cache else Path(data_dir) / DEFAULT_NAME


def _py(value):
    """An HDF5 attribute value as a plain Python value."""
    import numpy as np

    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@contextlib.contextmanager
def open_cache(path: str) -> Iterator["h5py.File"]:  # noqa: F821
    """Open a cache file for reading; every way it can be unusable becomes a one-line VmrError."""
    import h5py

    if not os.path.exists(path):
        raise VmrError(f"cache {path} does not exist")
    if os.path.isdir(path):
        raise VmrError(f"cache {path} is a directory, not an HDF5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        reason = str(e).split("(", 1)[-1].rstrip(")") if "(" in str(e) else str(e)
        raise VmrError(f"cache {path} is not a readable HDF5 file ({reason}); it may be truncated "
                       "or not a vmr cache: move it away and extract again") from None
    try:
        if _py(f.attrs.get("format")) != FORMAT or "item_ids" not in f:
            raise VmrError(f"cache {path} is not a vmr feature cache (format {FORMAT}): no "
                           "'format' attribute or 'item_ids' dataset")
        yield f
    finally:
        f.close()


def read_ids_from(f, path: str) -> list[str]:
    try:
        return [str(s) for s in f["item_ids"].asstr()[...]]
    except (OSError, TypeError, ValueError) as e:
        raise VmrError(f"cache {path}: cannot read item_ids ({e})") from None


def read_item_ids(cache_path: str) -> list[str]:
    """The cache's item ids, in its (= the dataset's) order."""
    with open_cache(cache_path) as f:
        return read_ids_from(f, cache_path)


def check_item_ids(cache_path: str, cache_ids: list[str], item_ids: list[str]) -> None:
    """Raise unless the cache was built for exactly these item ids, in this order."""
    if list(cache_ids) == list(item_ids):
        return
    if len(cache_ids) < len(item_ids) and set(cache_ids) <= set(item_ids):
        known = set(cache_ids)
        first = next(i for i in item_ids if i not in known)
        raise VmrError(f"cache {cache_path} holds {len(cache_ids)} items but the dataset has "
                       f"{len(item_ids)}: the dataset gained {len(item_ids) - len(cache_ids)} "
                       f"items since (first: {first!r}); rerun `vmr extract` for each modality "
                       "to add them (the cached rows are kept)")
    if len(cache_ids) != len(item_ids):
        raise VmrError(f"cache {cache_path} holds {len(cache_ids)} items but the dataset has "
                       f"{len(item_ids)}: it was built for another dataset (use another --cache)")
    k = next(i for i, (a, b) in enumerate(zip(cache_ids, item_ids)) if a != b)
    raise VmrError(f"cache {cache_path} was built for another dataset: item {k + 1} is "
                   f"{cache_ids[k]!r} in the cache but {item_ids[k]!r} in the dataset "
                   "(use another --cache)")


def list_modalities(cache_path: str) -> list[str]:
    """Modalities the cache holds a group for (complete or not), in text, image, video order."""
    with open_cache(cache_path) as f:
        return [m for m in MODALITIES if m in f]


def group_attrs(group) -> dict:
    return {k: _py(v) for k, v in group.attrs.items()}


def modality_attrs(cache_path: str, modality: str) -> dict | None:
    """The attributes of one modality group, or None when the cache has no such group."""
    with open_cache(cache_path) as f:
        return group_attrs(f[modality]) if modality in f else None


def settings_diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two attribute dicts on the SETTING_KEYS."""
    out = []
    for k in SETTING_KEYS:
        a, b = old.get(k), new.get(k)
        if isinstance(a, float) or isinstance(b, float):
            same = a is not None and b is not None and abs(float(a) - float(b)) < 1e-9
        else:
            same = a == b
        if not same:
            out.append(f"{k} {a!r} -> {b!r}")
    return out


def check_group(g, n: int, path: str, modality: str) -> None:
    """A modality group's datasets must be what vmr writes: `features` a numeric [n, d]
    matrix, `present` and `done` one flag per item; anything else (extra rows, text, a short
    mask, a missing dataset) is a one-line error naming the cache and the dataset."""
    import h5py

    def bad(name: str, what: str) -> VmrError:
        return VmrError(f"cache {path}: {modality}/{name} {what}; the cache is damaged or not "
                        "written by vmr (move it away and extract again)")

    if not isinstance(g, h5py.Group):
        raise bad("", "is not a group")
    for name in ("features", "present", "done"):
        if name not in g or not isinstance(g[name], h5py.Dataset):
            raise bad(name, "is missing")
    x = g["features"]
    if x.ndim != 2 or x.shape[0] != n or x.shape[1] < 1:
        raise bad("features", f"has shape {x.shape}, not [{n} items, dim]")
    if x.dtype.kind not in "fiu":
        raise bad("features", f"holds {x.dtype} values, not numbers")
    for name in ("present", "done"):
        d = g[name]
        if d.shape != (n,) or (d.dtype.kind not in "biu"):
            raise bad(name, f"is {d.dtype} {d.shape}, not one flag per item ({n})")
    for name, length in (("fingerprints", n), ("failure_ids", None), ("failure_reasons", None)):
        if name in g:
            d = g[name]
            if not isinstance(d, h5py.Dataset) or d.ndim != 1 or d.dtype.kind not in "SOU" \
                    or (length is not None and d.shape[0] != length):
                raise bad(name, f"is {getattr(d, 'dtype', '?')} {getattr(d, 'shape', '?')}, "
                          "not one text per item")
    if ("failure_ids" in g) != ("failure_reasons" in g) or (
            "failure_ids" in g and g["failure_ids"].shape != g["failure_reasons"].shape):
        raise bad("failure_ids", "does not pair with failure_reasons")
    if "dim" in g.attrs and _py(g.attrs["dim"]) != x.shape[1]:
        raise bad("features", f"has width {x.shape[1]} but the group says dim "
                  f"{_py(g.attrs['dim'])!r}")


def read_modality(cache_path: str, item_ids: list[str], modality: str):
    """Features of one modality for training.

    Returns (features float32 [n, d], present bool [n], attrs dict). Raises VmrError when the
    cache belongs to other item ids, lacks the modality, or the modality is incomplete."""
    import numpy as np

    with open_cache(cache_path) as f:
        check_item_ids(cache_path, read_ids_from(f, cache_path), item_ids)
        if modality not in f:
            have = ", ".join(m for m in MODALITIES if m in f) or "none"
            raise VmrError(f"cache {cache_path} has no {modality} features (it has: {have}); "
                           f"run `vmr extract --modality {modality}`")
        g = f[modality]
        check_group(g, len(item_ids), cache_path, modality)
        attrs = group_attrs(g)
        done = g["done"][...].astype(bool)
        if attrs.get("shard"):
            raise VmrError(f"cache {cache_path} is shard {attrs['shard']} of a sharded "
                           f"{modality} extraction; merge the shards with `vmr cache merge`")
        if not done.all():
            raise VmrError(f"{modality} features in {cache_path} are incomplete ({int(done.sum())} "
                           f"of {done.size} items done); rerun `vmr extract --modality {modality}`")
        try:
            feats = g["features"][...].astype(np.float32)
            present = g["present"][...].astype(bool)
        except (OSError, ValueError, TypeError) as e:
            raise VmrError(f"cache {cache_path}: cannot read {modality} features "
                           f"({str(e)[:160]})") from None
        return feats, present, attrs


def read_failures(group) -> list[tuple[str, str]]:
    """(item id, reason) pairs of one modality group."""
    if "failure_ids" not in group:
        return []
    ids = [str(s) for s in group["failure_ids"].asstr()[...]]
    reasons = [str(s) for s in group["failure_reasons"].asstr()[...]]
    return list(zip(ids, reasons))


def read_fingerprints(group) -> list[str] | None:
    """The group's per-item fingerprints ("" = unknown), or None for a cache made before vmr
    recorded them."""
    if "fingerprints" not in group:
        return None
    return [str(s) for s in group["fingerprints"].asstr()[...]]


def describe(path: str, max_failures: int = 5) -> str:
    """What `vmr cache info` prints: modalities, encoder, coverage, the first failures."""
    with open_cache(path) as f:
        ids = read_ids_from(f, path)
        n = len(ids)
        size = os.path.getsize(path)
        lines = [f"cache {path}: format {FORMAT}, {n:,} items, {size / 1e6:.1f} MB"]
        mods = [m for m in MODALITIES if m in f]
        if not mods:
            lines.append("  no modalities yet")
        for m in mods:
            g = f[m]
            check_group(g, n, path, m)
            a = group_attrs(g)
            present = g["present"][...].astype(bool)
            done = g["done"][...].astype(bool)
            head = (f"{m}: encoder {a.get('encoder')} (weights {a.get('weights')}), dim "
                    f"{a.get('dim')}, {a.get('dtype')}")
            if m == "video":
                head += f", fps {a.get('fps')}, max_frames {a.get('max_frames')}"
            if m == "text":
                head += f", pooling {a.get('pooling')}"
            if a.get("shard"):
                head += f", shard {a['shard']} ({a.get('shard_unit')})"
            lines.append(head)
            pct = 100.0 * present.sum() / max(n, 1)
            lines.append(f"  present {int(present.sum()):,} / {n:,} ({pct:.1f}%), done "
                         f"{int(done.sum()):,} / {n:,}; created {a.get('created')} by vmr "
                         f"{a.get('vmr_version')}")
            fails = read_failures(g)
            if fails:
                shown = "; ".join(f"{i!r}: {r}" for i, r in fails[:max_failures])
                more = f" (first {max_failures})" if len(fails) > max_failures else ""
                lines.append(f"  failures {len(fails):,}{more}: {shown}")
            fps = read_fingerprints(g)
            if fps is None:
                lines.append("  fingerprints: none (cache made by an older vmr): whether the "
                             "features match the items' current content is unknown")
            else:
                rows = [fps[r] for r in range(n) if done[r]]
                imported = sum(fp.startswith("import:") for fp in rows)
                unknown = sum(not fp for fp in rows)
                note = f"  fingerprints: {len(rows) - imported - unknown:,} items"
                if imported:
                    note += f", {imported:,} imported (not checked)"
                if unknown:
                    note += f", {unknown:,} unknown"
                lines.append(note)
            if g["features"].shape != (n, a.get("dim")):
                lines.append(f"  WARNING: features shape {g['features'].shape} does not match "
                             f"{n} items x dim {a.get('dim')}")
        return "\n".join(lines)
