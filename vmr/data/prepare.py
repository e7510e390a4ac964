"""`vmr prepare`: raw interaction logs (+ an optional item table) -> a dataset directory.

Steps: read and validate the inputs, check items against the item table, k-core filter, group
rows by user and stably sort each user's rows by time, leave-one-out split, resolve media paths,
then write `interactions.parquet`, `items.parquet` and `dataset.json` (see docs/DATA.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vmr.cache.read import resolve_cache
from vmr.data.dataset import FILES, ITEMS, read_items_table
from vmr.data.inputs import Report, join_text, load_interactions, read_item_table  # noqa: F401
from vmr.data.splits import pick_new_items, split_labels
from vmr.errors import VmrError
from vmr.fsio import os_reason, sha256_file, sha256_text


@dataclass
class PrepareOptions:
    """Everything `vmr prepare` accepts (see `vmr prepare --help`)."""

    interactions: str
    out: str
    fmt: str = "table"  # "table" | "sequences"
    user_col: str | None = None  # None: detected (vmr.data.columns)
    item_col: str | None = None
    time_col: str | None = None
    items: str | None = None
    items_id_col: str | None = None
    text_columns: list[str] | None = None
    image_column: str | None = None
    video_column: str | None = None
    kcore: int = 5
    drop_unknown: bool = False
    preset: str | None = None  # movielens | amazon | recbole: their column names
    min_rating: float | None = None  # keep interactions rated at least this
    rating_col: str | None = None  # None: detected (only read with min_rating)
    media_root: str | None = None  # None: the items file's folder
    new_items: float = 0.0  # share of the catalogue kept out of training (strict new-item protocol)
    new_items_seed: int = 0


# ----------------------------------------------------------------------------------- helpers
def appearance_codes(values: list[str]) -> tuple[list[int], list[str]]:
    """Integer codes by order of first appearance, and the distinct values in that order."""
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return codes, list(index)


def _write_atomic(out: Path, interactions, items, meta: dict) -> None:
    """Write the three files under temporary names, then rename them into place; dataset.json
    (the marker of a complete dataset) is removed first and renamed last."""
    tmp = {name: out / f".{name}.tmp-{os.getpid()}" for name in FILES}
    try:
        interactions.write_parquet(tmp["interactions.parquet"])
        items.write_parquet(tmp[ITEMS])
        with open(tmp["dataset.json"], "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        (out / "dataset.json").unlink(missing_ok=True)
        for name in sorted(FILES, key=lambda n: n == "dataset.json"):   # the marker last
            os.replace(tmp[name], out / name)
    except Exception as e:  # OSError, or a polars error wrapping one (disk full)
        if not isinstance(e, OSError) and "os error" not in str(e):
            raise
        raise VmrError(f"{out}: cannot write the dataset: {os_reason(e)}") from None
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)


def _warn_stale_cache(out: Path, items, rep: Report) -> None:
    """A feature cache left in --out by an earlier prepare no longer matches a changed item list."""
    cache = resolve_cache(out)
    if not (cache.exists() and (out / ITEMS).exists()):
        return
    try:
        same = read_items_table(out)["item"].equals(items["item"])
    except VmrError:
        same = False
    if not same:
        rep.warn(f"{cache} was built for a different item list; run `vmr extract` again "
                 f"(or delete it)")


def _make_out_dir(path: str) -> Path:
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise VmrError(f"{path}: --out exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VmrError(f"{path}: cannot create the --out directory: {e.strerror or e}") from None
    return out.resolve()


def _check_options(opts: PrepareOptions) -> None:
    """Refuse option values that cannot work, before any input is read."""
    if opts.kcore < 1:
        raise VmrError(f"--kcore must be at least 1, got {opts.kcore}")
    if not 0 <= opts.new_items < 1:
        raise VmrError(f"--new-items must be a fraction in [0, 1), got {opts.new_items:g}")
    if opts.media_root is not None and not opts.items:
        raise VmrError("--media-root applies to the media paths of --items; no --items given")


def _drop_unknown_items(log, log_src, items_tab, items_src, drop: bool, rep: Report):
    """The log without items absent from the item table: an error, or dropped with --drop-unknown."""
    from vmr.data import tables

    unknown = ~log["item"].is_in(items_tab["item"].implode())
    n_unknown = int(unknown.sum())
    if n_unknown:
        first = int(unknown.arg_true()[0])
        n_items_unknown = log.filter(unknown)["item"].n_unique()
        if not drop:
            raise VmrError(
                f"{log_src.name}: {log_src.where(int(log['src'][first]))}: item "
                f"'{log['item'][first]}' is not in the items table {items_src.name} "
                f"({tables.counted(n_unknown, 'interaction')} name "
                f"{tables.counted(n_items_unknown, 'unknown item')}; "
                f"--drop-unknown drops them)")
        log = log.filter(~unknown)
        rep.warn(f"dropped {tables.counted(n_unknown, 'interaction')} naming "
                 f"{tables.counted(n_items_unknown, 'item')} absent from {items_src.name} "
                 f"(--drop-unknown)")
        if log.height == 0:
            raise VmrError(f"{log_src.name}: no interaction names an item of "
                           f"{items_src.name}")
    rep.dropped["unknown_item_interactions"] = n_unknown
    return log


def _kcore_filter(log, log_src, kcore: int, rep: Report):
    """k-core on integer codes (users and items by first appearance in the log): the kept log,
    its user and item codes, and every user and item of the log before filtering."""
    import numpy as np
    import polars as pl

    from vmr.data.kcore import kcore_mask

    u_codes, users_all = appearance_codes(log["user"].to_list())
    i_codes, items_all = appearance_codes(log["item"].to_list())
    u_codes = np.asarray(u_codes, dtype=np.int64)
    i_codes = np.asarray(i_codes, dtype=np.int64)
    keep = kcore_mask(u_codes, i_codes, kcore)
    n_before = len(keep)
    log = log.filter(pl.Series(keep))
    u_codes, i_codes = u_codes[keep], i_codes[keep]
    if log.height == 0:
        raise VmrError(f"{log_src.name}: no interactions left after --kcore {kcore} "
                       f"(from {n_before}); lower --kcore")
    rep.dropped["kcore_interactions"] = n_before - log.height
    rep.dropped["kcore_users"] = len(users_all) - len(np.unique(u_codes))
    rep.dropped["kcore_items"] = len(items_all) - len(np.unique(i_codes))
    return log, u_codes, i_codes, users_all, items_all


def _split_by_user(log, u_codes, opts: PrepareOptions):
    """Group by user (first appearance), stable sort by time within each user, label each row's
    split: the interactions table, the labels and the new items (strict new-item protocol)."""
    import numpy as np
    import polars as pl

    time = log["time"].to_numpy()
    order = np.argsort(time, kind="stable")
    order = order[np.argsort(u_codes[order], kind="stable")]
    log = log[order]
    new_ids = _new_items(opts, sorted(set(log["item"].to_list())))
    new_rows = log["item"].is_in(pl.Series(new_ids, dtype=pl.String).implode()).to_numpy() \
        if new_ids else None
    labels = split_labels(u_codes[order], new_rows)
    interactions = pl.DataFrame({
        "user": log["user"], "item": log["item"], "time": log["time"],
        "split": pl.Series(labels.tolist(), dtype=pl.String),
    })
    return interactions, labels, new_ids


def _items_frame(items_tab, items_all: list[str], i_codes, rep: Report):
    """The kept items: in table order (with their columns), or by first appearance in the log."""
    import numpy as np
    import polars as pl

    kept_items = set(np.asarray(items_all, dtype=object)[np.unique(i_codes)].tolist())
    if items_tab is not None:
        in_log = items_tab["item"].is_in(pl.Series(items_all, dtype=pl.String).implode())
        rep.dropped["items_not_in_interactions"] = int((~in_log).sum())
        items = items_tab.filter(pl.col("item").is_in(pl.Series(sorted(kept_items),
                                                                dtype=pl.String).implode()))
        return items.drop("src")
    ordered = [it for it in items_all if it in kept_items]
    return pl.DataFrame({"item": ordered}, schema={"item": pl.String}).with_columns(
        pl.lit(None, dtype=pl.String).alias(c) for c in ("text", "title", "image", "video"))


def _drop_missing_media(items, opts: PrepareOptions, items_src, rep: Report):
    """Media files that do not exist become missing modalities (warned and counted)."""
    import polars as pl

    from vmr.data import tables

    for key, col in (("image", opts.image_column), ("video", opts.video_column)):
        paths = items[key].to_list()
        missing = [k for k, p in enumerate(paths) if p is not None and not os.path.isfile(p)]
        rep.dropped[f"missing_{key}_files"] = len(missing)
        if missing:
            k = missing[0]
            rep.warn(f"{tables.counted(len(missing), key + ' file')} named in column '{col}' of "
                     f"{items_src.name} not found (first: item '{items['item'][k]}': "
                     f"{paths[k]}); those items have no {key}")
            for k in missing:
                paths[k] = None
            items = items.with_columns(pl.Series(key, paths, dtype=pl.String))
    return items


def _metadata(opts: PrepareOptions, out: Path, rep: Report, sources, counts: dict, items,
              labels, new_ids: list[str], raw: dict) -> dict:
    """dataset.json's content: counts, splits, inputs and their hashes, options, what was
    dropped and why (docs/DATA.md)."""
    from vmr._version import __version__

    log_src, items_src = sources
    coverage = {m: int(items[m].is_not_null().sum()) for m in ("text", "image", "video")}
    split_counts = {s: int((labels == s).sum()) for s in ("train", "valid", "test")}
    if new_ids:
        split_counts["excluded"] = int((labels == "excluded").sum())
    inputs = {"interactions": {"path": str(log_src.path), "sha256": sha256_file(log_src.path),
                               "bytes": log_src.path.stat().st_size}}
    if items_src is not None:
        inputs["items"] = {"path": str(items_src.path), "sha256": sha256_file(items_src.path),
                           "bytes": items_src.path.stat().st_size}
    combined = "\n".join(f"{k}:{v['sha256']}" for k, v in inputs.items())
    options = asdict(opts)
    options["interactions"] = str(log_src.path)
    options["items"] = str(items_src.path) if items_src is not None else None
    options["out"] = str(out)
    columns = {role: col for role, (col, _) in rep.columns.items()}
    columns["detected"] = [role for role, (_, how) in rep.columns.items() if how != "given"]
    meta = {
        "format": 1, **counts, "splits": split_counts, "options": options,
        "inputs_sha256": sha256_text(combined), "inputs": inputs, "coverage": coverage,
        "columns": columns, "media_root": rep.media_root, "dropped": rep.dropped, "raw": raw,
        "warnings": rep.warnings, "vmr_version": __version__,
    }
    if new_ids:
        meta["new_items"] = {"fraction": opts.new_items, "seed": opts.new_items_seed,
                             "count": len(new_ids), "items": new_ids}
    return meta


# -------------------------------------------------------------------------------------- main
def prepare_dataset(opts: PrepareOptions) -> str:
    """Run `vmr prepare`; returns a human-readable multi-line summary."""
    import numpy as np

    from vmr.data import tables

    _check_options(opts)
    rep = Report()
    log, log_src = load_interactions(opts, rep)
    log_item_col = rep.columns["item"][0] if "item" in rep.columns else None
    items_tab, items_src = (read_item_table(opts, rep, log_item_col) if opts.items else (None, None))
    out = _make_out_dir(opts.out)
    n_raw = log.height
    if items_tab is not None:
        log = _drop_unknown_items(log, log_src, items_tab, items_src, opts.drop_unknown, rep)
    log, u_codes, i_codes, users_all, items_all = _kcore_filter(log, log_src, opts.kcore, rep)
    interactions, labels, new_ids = _split_by_user(log, u_codes, opts)
    items = _items_frame(items_tab, items_all, i_codes, rep)
    items = _drop_missing_media(items, opts, items_src, rep)
    short = int(np.sum(np.bincount(u_codes)[np.unique(u_codes)] < 3))
    if short:
        rep.warn(f"{tables.counted(short, 'user')} with fewer than 3 interactions (no validation "
                 f"target)")
    if new_ids:
        new_ids = [it for it in items["item"].to_list() if it in set(new_ids)]  # catalogue order
    counts = {"users": len(np.unique(u_codes)), "items": items.height,
              "interactions": interactions.height}
    raw = {"interactions": n_raw, "users": len(users_all), "items": len(items_all)}
    meta = _metadata(opts, out, rep, (log_src, items_src), counts, items, labels, new_ids, raw)
    _warn_stale_cache(out, items, rep)
    _write_atomic(out, interactions, items, meta)
    rep.print_warnings()
    return _summary(out, meta, opts, rep)


def _new_items(opts: PrepareOptions, item_ids: list[str]) -> list[str]:
    """The new items of the strict new-item protocol (vmr.data.splits.pick_new_items)."""
    if not opts.new_items:
        return []
    new = pick_new_items(item_ids, opts.new_items, opts.new_items_seed)
    if not new:
        raise VmrError(f"--new-items {opts.new_items:g} marks no item of the {len(item_ids)} "
                       "items; use a larger fraction")
    return new


def _summary(out: Path, meta: dict, opts: PrepareOptions, rep: Report) -> str:
    from vmr.data.columns import describe
    from vmr.data.tables import fmt_int, fraction

    d, s, cov = meta["dropped"], meta["splits"], meta["coverage"]
    k = opts.kcore
    w = max(len(fmt_int(meta[x])) for x in ("users", "items", "interactions"))
    lines = [f"prepared {out}"]
    log_cols = {r: v for r, v in rep.columns.items() if r in ("user", "item", "time", "rating")}
    item_cols = {r: v for r, v in rep.columns.items() if r not in log_cols}
    if log_cols:
        lines.append(f"  columns       {describe(log_cols)}")
    if item_cols:
        lines.append(f"  item columns  {describe(item_cols)}")
    lines += [
        f"  users         {fmt_int(meta['users']):>{w}}   (dropped {fmt_int(d['kcore_users'])} "
        f"by {k}-core)",
        f"  items         {fmt_int(meta['items']):>{w}}   (dropped {fmt_int(d['kcore_items'])} "
        f"by {k}-core"
        + (f", {fmt_int(d['items_not_in_interactions'])} table rows without interactions"
           if "items_not_in_interactions" in d else "") + ")",
        f"  interactions  {fmt_int(meta['interactions']):>{w}}   (dropped "
        f"{fmt_int(d['kcore_interactions'])} by {k}-core"
        + (f", {fmt_int(d['unknown_item_interactions'])} with unknown items"
           if "unknown_item_interactions" in d else "")
        + (f", {fmt_int(d['min_rating_interactions'])} rated below {opts.min_rating:g}"
           if "min_rating_interactions" in d else "") + ")",
        f"  split         train {fmt_int(s['train'])} / valid {fmt_int(s['valid'])} / test "
        f"{fmt_int(s['test'])}" + (f" ({fmt_int(s['excluded'])} training interactions of "
                                   f"{fmt_int(meta['new_items']['count'])} new items left out)"
                                   if "excluded" in s else ""),
        "  coverage      " + ", ".join(f"{m} {fmt_int(cov[m])} ({fraction(cov[m], meta['items'])})"
                                       for m in ("text", "image", "video")),
    ]
    if meta["warnings"]:
        lines.append(f"  warnings      {len(meta['warnings'])} (printed on stderr, kept in "
                     f"dataset.json)")
    return "\n".join(lines)
