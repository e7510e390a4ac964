"""The feature caches of several catalogues as one cache, rows part after part (`vmr combine`,
vmr/data/combine.py).

A modality is combined when every part's cache holds it complete (every item done) and made
with the same settings (encoder, weights, dim, dtype, fps, max_frames, pooling); a modality
only some parts hold, or with other settings, is left out and said so -- one encoder must have
made a column for a model to read it on every catalogue. Rows, present flags, failures and
content fingerprints are copied; the item ids are the parts' ids with their `<name>/` prefix."""

from __future__ import annotations

from pathlib import Path

from vmr.errors import VmrError

CHUNK = 4096


def _groups(parts: list[tuple[str, Path, list[str]]]) -> tuple[dict, list[str]]:
    """Per modality the (name, path, attrs, n rows) of each part, and notes on modalities left
    out. Each part's cache must be made for its dataset's items, in order."""
    from vmr.cache import read as cache_read

    held: dict[str, list] = {}
    for name, path, ids in parts:
        with cache_read.open_cache(str(path)) as f:
            cache_read.check_item_ids(str(path), cache_read.read_ids_from(f, str(path)), ids)
            n = len(ids)
            for m in cache_read.MODALITIES:
                if m in f:
                    cache_read.check_group(f[m], n, str(path), m)
                    done = f[m]["done"][...].astype(bool)
                    if f[m].attrs.get("shard") or not done.all():
                        raise VmrError(f"{path}: the {m} features are incomplete ({int(done.sum())}"
                                       f" of {n} items done); finish or merge the extraction "
                                       "before combining")
                    held.setdefault(m, []).append((name, path, cache_read.group_attrs(f[m]), n))
    notes, keep = [], {}
    for m, rows in held.items():
        if len(rows) < len(parts):
            have = {r[0] for r in rows}
            notes.append(f"{m} left out: {', '.join(p[0] for p in parts if p[0] not in have)} "
                         f"has none")
            continue
        diff = next(((r[0], d) for r in rows[1:]
                     if (d := cache_read.settings_diff(rows[0][2], r[2]))), None)
        if diff is not None:
            notes.append(f"{m} left out: {rows[0][0]} and {diff[0]} were encoded differently "
                         f"({'; '.join(diff[1][:2])})")
            continue
        keep[m] = rows
    return keep, notes


def concat_caches(parts: list[tuple[str, Path, list[str]]], out: str, item_ids: list[str]) -> str:
    """Write the cache `out` for `item_ids` (the parts' prefixed ids, part after part) from the
    parts' caches ((name, cache path, the part's own item ids) each); returns one line saying
    what was combined. Parts without a cache: nothing is written, and the line says so."""
    import numpy as np

    from vmr.cache import read as cache_read
    from vmr.cache import store

    missing = [str(p) for _, p, _ in parts if not Path(p).is_file()]
    if missing:
        return (f"none combined: {', '.join(missing[:2])} not found (extract each part, or "
                "extract the combined dataset: `vmr extract --data OUT`)")
    keep, notes = _groups(parts)
    groups = {}
    for m, rows in keep.items():
        present, failures, fps, any_fps = [], [], [], False
        for name, path, _, n in rows:
            with cache_read.open_cache(str(path)) as f:
                present.append(f[m]["present"][...].astype(bool))
                failures += [(f"{name}/{i}", why) for i, why in cache_read.read_failures(f[m])]
                got = cache_read.read_fingerprints(f[m])
                any_fps |= got is not None
                fps += got if got is not None else [""] * n

        def write_features(ds, rows=rows, m=m) -> None:
            at = 0
            for _, path, _, n in rows:
                with cache_read.open_cache(str(path)) as f:
                    src = f[m]["features"]
                    for a in range(0, n, CHUNK):
                        b = min(n, a + CHUNK)
                        ds[at + a: at + b] = src[a:b]
                at += n

        a0 = rows[0][2]
        attrs = {k: v for k, v in a0.items() if k not in ("shard", "shard_unit")}
        attrs.update(store.base_attrs())
        attrs["combined_from"] = ", ".join(f"{name}: {path}" for name, path, _, _ in rows)
        groups[m] = store.ModalityData(
            attrs=attrs, present=np.concatenate(present), done=np.ones(len(item_ids), bool),
            failures=failures, write_features=write_features, dtype=str(a0.get("dtype")),
            dim=int(a0.get("dim")), fingerprints=fps if any_fps else None)
    if groups:
        store.publish(out, item_ids, groups, replace=True)
    said = ", ".join(sorted(groups)) or "no modality"
    return f"{said} combined into {out}" + "".join(f"; {n}" for n in notes)
