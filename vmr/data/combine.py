"""`vmr combine`: several prepared catalogues as one dataset, to train one model on all of them.

Each part keeps its own users, items and splits; every user and item id becomes
`<name>/<id>` (name: the part's directory name, or --names), so ids of different catalogues
never meet (`007` of one catalogue and `007` of another stay two items). Users and items keep
their order, part after part. Media paths become absolute and the media root is the folder
that holds every part's root, so readers still check each path against it. The strict new-item
protocol carries over: a part's new items stay new. dataset.json records the parts (`combined`).

The parts' feature caches (each dataset's default cache) are combined too, for every modality all of
them hold, made with the same encoder settings (vmr/cache/concat.py): a combined dataset is
ready to train on (`vmr train --data OUT`), and a run trained on it moves to any catalogue
encoded the same way (`vmr train --init-from`, `vmr eval --data`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vmr.errors import VmrError

SEP = "/"


def part_names(paths: list[str], names: list[str] | None) -> list[str]:
    """One name per part: --names, else each directory's name; distinct, printable, no '/'."""
    if len(paths) < 2:
        raise VmrError("give at least two datasets to combine (--data A --data B)")
    if names is None:
        names = [Path(p).resolve().name for p in paths]
    elif len(names) != len(paths):
        raise VmrError(f"--names gives {len(names)} name(s) for {len(paths)} datasets")
    for n in names:
        if not n or SEP in n or any(ord(c) < 0x20 for c in n):
            raise VmrError(f"part name {n!r} must be non-empty text without '/' (use --names)")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise VmrError(f"two datasets are both named {dup!r}; give distinct --names")
    return names


def _read_part(path: str):
    """(dataset.json, items frame, interactions frame) of one prepared dataset."""
    import polars as pl

    from vmr.data.dataset import load_dataset, read_items_table

    load_dataset(path)          # every check of a prepared dataset, with its one-line errors
    root = Path(path)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    return meta, read_items_table(root), pl.read_parquet(root / "interactions.parquet")


def _absolute_media(items, root: Path, meta: dict):
    """Media columns as absolute paths (checked inside the part's media root by the reader)."""
    import polars as pl

    from vmr.data.media import reader_paths

    for col in ("image", "video"):
        if col in items.columns and items[col].drop_nulls().len():
            paths = reader_paths(items[col].to_list(), root, items["item"].to_list(), col, meta)
            items = items.with_columns(pl.Series(col, paths, dtype=pl.String))
    return items


def combine_datasets(paths: list[str], out: str, names: list[str] | None = None) -> str:
    """Write the combined dataset (and its feature cache) to `out`; returns the summary."""
    import polars as pl

    from vmr.cache.concat import concat_caches
    from vmr.cache.read import resolve_cache
    from vmr.data.media import recorded_root
    from vmr.data.prepare import _write_atomic

    names = part_names(paths, names)
    dst = Path(out)
    if any(Path(p).resolve() == dst.resolve() for p in paths):
        raise VmrError(f"--out {out} is one of the datasets; write the combination elsewhere")
    items_all, inter_all, parts, new_items, roots, own_ids = [], [], [], [], [], []
    for name, path in zip(names, paths):
        meta, items, inter = _read_part(path)
        items = _absolute_media(items, Path(path), meta)
        own_ids.append(items["item"].cast(pl.String).to_list())
        root = recorded_root(path, meta)
        if root is not None and any(c in items.columns and items[c].drop_nulls().len()
                                    for c in ("image", "video")):
            roots.append(root)
        pre = pl.lit(name + SEP)
        items_all.append(items.with_columns(item=pre + pl.col("item").cast(pl.String)))
        inter_all.append(inter.with_columns(user=pre + pl.col("user").cast(pl.String),
                                            item=pre + pl.col("item").cast(pl.String)))
        new_items += [name + SEP + i for i in (meta.get("new_items") or {}).get("items") or []]
        parts.append({"name": name, "path": str(Path(path).resolve()),
                      "inputs_sha256": meta.get("inputs_sha256"),
                      **{k: meta.get(k) for k in ("users", "items", "interactions")}})
    items = pl.concat(items_all, how="diagonal_relaxed")
    inter = pl.concat(inter_all, how="diagonal_relaxed")
    meta = _metadata(names, parts, items, inter, new_items, roots, dst)
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VmrError(f"cannot create --out {out}: {e.strerror or e}") from None
    _write_atomic(dst, inter, items, meta)
    feats = concat_caches([(n, resolve_cache(p), ids) for n, p, ids in zip(names, paths, own_ids)],
                          str(resolve_cache(dst)), items["item"].to_list())
    return _summary(dst, meta, parts, feats)


def _metadata(names, parts, items, inter, new_items, roots, dst: Path) -> dict:
    """The combined dataset.json: counts, splits, the parts, the media root that holds them."""
    from vmr._version import __version__
    from vmr.fsio import sha256_text

    splits: dict[str, int] = {}
    for s in inter["split"].to_list() if "split" in inter.columns else []:
        splits[s] = splits.get(s, 0) + 1
    meta = {
        "format": 1, "users": sum(p["users"] for p in parts), "items": items.height,
        "interactions": inter.height, "splits": splits,
        "options": {"combine": [p["path"] for p in parts], "names": names, "out": str(dst)},
        "inputs_sha256": sha256_text("\n".join(f"{p['name']}:{p['inputs_sha256']}"
                                               for p in parts)),
        "coverage": {m: int(items[m].is_not_null().sum()) if m in items.columns else 0
                     for m in ("text", "image", "video")},
        "media_root": os.path.commonpath(roots) if roots else None,
        "combined": parts, "warnings": [], "vmr_version": __version__,
    }
    if new_items:
        meta["new_items"] = {"count": len(new_items), "items": new_items,
                             "from": "the parts' own new items"}
    return meta


def _summary(dst: Path, meta: dict, parts: list[dict], feats: str) -> str:
    from vmr.data.tables import fmt_int

    w = max(len(fmt_int(meta[k])) for k in ("users", "items", "interactions"))
    lines = [f"combined {len(parts)} datasets into {dst}"]
    for p in parts:
        lines.append(f"  {p['name']:<16} {fmt_int(p['users']):>{w}} users  "
                     f"{fmt_int(p['items']):>{w}} items  {fmt_int(p['interactions']):>{w}} "
                     f"interactions  ({p['path']})")
    lines.append(f"  {'total':<16} {fmt_int(meta['users']):>{w}} users  "
                 f"{fmt_int(meta['items']):>{w}} items  {fmt_int(meta['interactions']):>{w}} "
                 "interactions")
    lines.append(f"  features         {feats}")
    return "\n".join(lines)
