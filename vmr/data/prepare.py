"""`vmr prepare`: raw interaction logs (+ an optional item table) -> a dataset directory.

Steps: read and validate the inputs, check items against the item table, k-core filter, group
rows by user and stably sort each user's rows by time, leave-one-out split, resolve media paths,
then write `interactions.parquet`, `items.parquet` and `dataset.json` (see docs/DATA.md).
"""

from __future__ import annotations

import errno
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmr.errors import VmrError

TEXT_END = ".!?;:"  # a text field ending in one of these is joined to the next with a space


@dataclass
class PrepareOptions:
    """Everything `vmr prepare` accepts (see `vmr prepare --help`)."""

    interactions: str
    out: str
    fmt: str = "table"  # "table" | "sequences"
    user_col: str = "user"
    item_col: str = "item"
    time_col: str = "time"
    items: str | None = None
    items_id_col: str | None = None
    text_columns: list[str] | None = None
    image_column: str | None = None
    video_column: str | None = None
    kcore: int = 5
    drop_unknown: bool = False


@dataclass
class Report:
    """Counts and warnings collected while preparing; written to dataset.json and the summary."""

    dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def print_warnings(self) -> None:
        """Warnings go to stderr once the dataset is written (an error stays a single line)."""
        for msg in self.warnings:
            print(f"warning: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- reading
def load_interactions(opts: PrepareOptions):
    """The raw log as a DataFrame (user, item, time: Float64, src: source row) plus its Source."""
    import polars as pl

    from vmr.data import io

    if opts.fmt == "sequences":
        return io.read_sequences(opts.interactions)
    if opts.fmt != "table":
        raise VmrError(f"--format must be 'table' or 'sequences', got '{opts.fmt}'")
    df, src = io.read_table(opts.interactions, [opts.user_col, opts.item_col], "interactions")
    io.require_columns(df, src, {opts.user_col: "--user-col", opts.item_col: "--item-col",
                                 opts.time_col: "--time-col"}, "interactions table")
    blank = io.blank_rows(df)  # blank lines carry nothing
    df = df.select(user=pl.col(opts.user_col), item=pl.col(opts.item_col),
                   time=pl.col(opts.time_col)).with_row_index("src").filter(~blank)
    if df.height == 0:
        raise VmrError(f"{src.name}: interactions file has no rows")
    rows = df["src"].to_numpy()
    for col, opt in (("user", opts.user_col), ("item", opts.item_col)):
        i = io.first_null(df[col])
        if i is not None:
            raise VmrError(f"{src.name}: {src.where(int(rows[i]))}: empty {col} id in column "
                           f"'{opt}'")
    times = io.parse_times(df["time"], src, opts.time_col, rows)
    df = df.with_columns(time=pl.Series(times, dtype=pl.Float64),
                         src=pl.col("src").cast(pl.Int64))
    return df.select("user", "item", "time", "src"), src


def _cell_text(value) -> str | None:
    """A table cell as stripped text (lists joined with ', '); None when empty."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v).strip() for v in value if v is not None and str(v).strip())
    text = str(value).strip()
    return text or None


def join_text(fields: list) -> str | None:
    """Join non-empty text fields in order with '. ' (or ' ' after end punctuation)."""
    parts = [t for t in (_cell_text(f) for f in fields) if t]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += (" " if out[-1] in TEXT_END else ". ") + p
    return out


def _media_path(value, base: Path) -> str | None:
    text = _cell_text(value)
    if text is None:
        return None
    return os.path.abspath(os.path.join(base, os.path.expanduser(text)))


def load_items(opts: PrepareOptions, rep: Report):
    """The item table as a DataFrame (item, text, title, image, video, src) plus its Source.

    Media paths are made absolute (relative ones are relative to the items file's folder)."""
    import polars as pl

    from vmr.data import io

    cands = [c for c in (opts.items_id_col, opts.item_col, "item_id") if c]
    df, src = io.read_table(opts.items, cands, "items")
    id_col = opts.items_id_col or (opts.item_col if opts.item_col in df.columns else "item_id")
    wanted = {id_col: "--items-id-col"}
    for c in opts.text_columns or []:
        wanted[c] = "--text-columns"
    if opts.image_column:
        wanted[opts.image_column] = "--image-column"
    if opts.video_column:
        wanted[opts.video_column] = "--video-column"
    io.require_columns(df, src, wanted, "items table")
    df = df.with_row_index("src").filter(~io.blank_rows(df))
    if df.height == 0:
        raise VmrError(f"{src.name}: items file has no rows")
    rows = df["src"].to_numpy()
    i = io.first_null(df[id_col])
    if i is not None:
        raise VmrError(f"{src.name}: {src.where(int(rows[i]))}: empty item id in column "
                       f"'{id_col}'")
    dup = (~df[id_col].is_first_distinct()).arg_true()
    if len(dup):
        j = int(dup[0])
        item = df[id_col][j]
        first = int((df[id_col] == item).arg_true()[0])
        raise VmrError(f"{src.name}: {src.where(int(rows[j]))}: duplicate item id '{item}' "
                       f"(first on {src.where(int(rows[first]))})")
    n = df.height
    text_cols = opts.text_columns or []
    if not text_cols:
        rep.warn(f"no --text-columns given: items from {src.name} get no text")
    cols = [df[c].to_list() for c in text_cols]
    texts = [join_text(list(f)) for f in zip(*cols)] if cols else [None] * n
    titles = [_cell_text(v) for v in cols[0]] if cols else [None] * n
    base = src.path.parent
    media = {}
    for key, col in (("image", opts.image_column), ("video", opts.video_column)):
        media[key] = ([_media_path(v, base) for v in df[col].to_list()] if col else [None] * n)
    out = pl.DataFrame({
        "item": df[id_col], "text": texts, "title": titles, "image": media["image"],
        "video": media["video"], "src": df["src"].cast(pl.Int64),
    }, schema={"item": pl.String, "text": pl.String, "title": pl.String, "image": pl.String,
               "video": pl.String, "src": pl.Int64})
    return out, src


# ----------------------------------------------------------------------------------- helpers
def appearance_codes(values: list[str]) -> tuple[list[int], list[str]]:
    """Integer codes by order of first appearance, and the distinct values in that order."""
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return codes, list(index)


def split_labels(user_codes_sorted):
    """Leave-one-out labels for rows grouped by user: last = test (users with >= 2 rows),
    second-to-last = valid (users with >= 3 rows), the rest train."""
    import numpy as np

    u = np.asarray(user_codes_sorted)
    n = len(u)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    lengths = np.diff(np.r_[starts, n])
    ends = np.repeat(starts + lengths, lengths)
    from_end = ends - 1 - np.arange(n)  # 0 = last row of its user
    size = np.repeat(lengths, lengths)
    labels = np.full(n, "train", dtype=object)
    labels[(from_end == 0) & (size >= 2)] = "test"
    labels[(from_end == 1) & (size >= 3)] = "valid"
    return labels


def _write_atomic(out: Path, interactions, items, meta: dict) -> None:
    """Write the three files under temporary names, then rename them into place; dataset.json
    (the marker of a complete dataset) is removed first and renamed last."""
    tmp = {name: out / f".{name}.tmp-{os.getpid()}"
           for name in ("interactions.parquet", "items.parquet", "dataset.json")}
    try:
        interactions.write_parquet(tmp["interactions.parquet"])
        items.write_parquet(tmp["items.parquet"])
        with open(tmp["dataset.json"], "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        (out / "dataset.json").unlink(missing_ok=True)
        for name in ("interactions.parquet", "items.parquet", "dataset.json"):
            os.replace(tmp[name], out / name)
    except Exception as e:  # OSError, or a polars error wrapping one (disk full)
        if not isinstance(e, OSError) and "os error" not in str(e):
            raise
        raise VmrError(f"{out}: cannot write the dataset: {_write_reason(e)}") from None
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)


def _write_reason(e: Exception) -> str:
    """Why a write failed, in a few words (polars hides the errno inside its message)."""
    text = str(e)
    if getattr(e, "errno", None) == errno.ENOSPC or "os error 28" in text:
        return "No space left on device (the disk is full)"
    return getattr(e, "strerror", None) or text.splitlines()[0][:200]


def _warn_stale_cache(out: Path, items, rep: Report) -> None:
    """A feature cache left in --out by an earlier prepare no longer matches a changed item list."""
    import polars as pl

    old = out / "items.parquet"
    cache = out / "features.h5"
    if not (cache.exists() and old.exists()):
        return
    try:
        same = pl.read_parquet(old, columns=["item"])["item"].equals(items["item"])
    except (pl.exceptions.PolarsError, OSError):
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


# -------------------------------------------------------------------------------------- main
def prepare_dataset(opts: PrepareOptions) -> str:
    """Run `vmr prepare`; returns a human-readable multi-line summary."""
    import numpy as np
    import polars as pl

    from vmr import __version__
    from vmr.data import io
    from vmr.data.kcore import kcore_mask

    if opts.kcore < 1:
        raise VmrError(f"--kcore must be at least 1, got {opts.kcore}")
    rep = Report()
    log, log_src = load_interactions(opts)
    items_tab, items_src = (load_items(opts, rep) if opts.items else (None, None))
    out = _make_out_dir(opts.out)
    n_raw = log.height

    # items named by the log but absent from the item table
    if items_tab is not None:
        unknown = ~log["item"].is_in(items_tab["item"].implode())
        n_unknown = int(unknown.sum())
        if n_unknown:
            first = int(unknown.arg_true()[0])
            n_items_unknown = log.filter(unknown)["item"].n_unique()
            if not opts.drop_unknown:
                raise VmrError(
                    f"{log_src.name}: {log_src.where(int(log['src'][first]))}: item "
                    f"'{log['item'][first]}' is not in the items table {items_src.name} "
                    f"({io.counted(n_unknown, 'interaction')} name "
                    f"{io.counted(n_items_unknown, 'unknown item')}; "
                    f"--drop-unknown drops them)")
            log = log.filter(~unknown)
            rep.warn(f"dropped {io.counted(n_unknown, 'interaction')} naming "
                     f"{io.counted(n_items_unknown, 'item')} absent from {items_src.name} "
                     f"(--drop-unknown)")
            if log.height == 0:
                raise VmrError(f"{log_src.name}: no interaction names an item of "
                               f"{items_src.name}")
        rep.dropped["unknown_item_interactions"] = n_unknown

    # k-core on integer codes (users and items by first appearance in the log)
    u_codes, users_all = appearance_codes(log["user"].to_list())
    i_codes, items_all = appearance_codes(log["item"].to_list())
    u_codes = np.asarray(u_codes, dtype=np.int64)
    i_codes = np.asarray(i_codes, dtype=np.int64)
    keep = kcore_mask(u_codes, i_codes, opts.kcore)
    n_before = len(keep)
    log = log.filter(pl.Series(keep))
    u_codes, i_codes = u_codes[keep], i_codes[keep]
    if log.height == 0:
        raise VmrError(f"{log_src.name}: no interactions left after --kcore {opts.kcore} "
                       f"(from {n_before}); lower --kcore")
    n_users_kept = len(np.unique(u_codes))
    n_items_kept = len(np.unique(i_codes))
    rep.dropped["kcore_interactions"] = n_before - log.height
    rep.dropped["kcore_users"] = len(users_all) - n_users_kept
    rep.dropped["kcore_items"] = len(items_all) - n_items_kept

    # group by user (first appearance), stable sort by time within each user
    time = log["time"].to_numpy()
    order = np.argsort(time, kind="stable")
    order = order[np.argsort(u_codes[order], kind="stable")]
    log = log[order]
    labels = split_labels(u_codes[order])
    interactions = pl.DataFrame({
        "user": log["user"], "item": log["item"], "time": log["time"],
        "split": pl.Series(labels.tolist(), dtype=pl.String),
    })

    # items: table order (kept items only) or first appearance in the log
    kept_items = set(np.asarray(items_all, dtype=object)[np.unique(i_codes)].tolist())
    if items_tab is not None:
        in_log = items_tab["item"].is_in(pl.Series(items_all, dtype=pl.String).implode())
        rep.dropped["items_not_in_interactions"] = int((~in_log).sum())
        items = items_tab.filter(pl.col("item").is_in(pl.Series(sorted(kept_items),
                                                                dtype=pl.String).implode()))
        items = items.drop("src")
    else:
        ordered = [it for it in items_all if it in kept_items]
        items = pl.DataFrame({"item": ordered}, schema={"item": pl.String}).with_columns(
            pl.lit(None, dtype=pl.String).alias(c) for c in ("text", "title", "image", "video"))

    # media files that do not exist become missing modalities (warned and counted)
    for key, col in (("image", opts.image_column), ("video", opts.video_column)):
        paths = items[key].to_list()
        missing = [k for k, p in enumerate(paths) if p is not None and not os.path.isfile(p)]
        rep.dropped[f"missing_{key}_files"] = len(missing)
        if missing:
            k = missing[0]
            rep.warn(f"{io.counted(len(missing), key + ' file')} named in column '{col}' of "
                     f"{items_src.name} not found (first: item '{items['item'][k]}': "
                     f"{paths[k]}); those items have no {key}")
            for k in missing:
                paths[k] = None
            items = items.with_columns(pl.Series(key, paths, dtype=pl.String))

    n_users, n_items, n_inter = n_users_kept, items.height, interactions.height
    short = int(np.sum(np.bincount(u_codes)[np.unique(u_codes)] < 3))
    if short:
        rep.warn(f"{io.counted(short, 'user')} with fewer than 3 interactions (no validation "
                 f"target)")
    coverage = {m: int(items[m].is_not_null().sum()) for m in ("text", "image", "video")}
    split_counts = {s: int((labels == s).sum()) for s in ("train", "valid", "test")}

    inputs = {"interactions": {"path": str(log_src.path), "sha256": io.sha256_file(log_src.path),
                               "bytes": log_src.path.stat().st_size}}
    if items_src is not None:
        inputs["items"] = {"path": str(items_src.path), "sha256": io.sha256_file(items_src.path),
                           "bytes": items_src.path.stat().st_size}
    combined = "\n".join(f"{k}:{v['sha256']}" for k, v in inputs.items())
    options = asdict(opts)
    options["interactions"] = str(log_src.path)
    options["items"] = str(items_src.path) if items_src is not None else None
    options["out"] = str(out)
    meta = {
        "format": 1, "users": n_users, "items": n_items, "interactions": n_inter,
        "splits": split_counts, "options": options,
        "inputs_sha256": _sha256_text(combined), "inputs": inputs, "coverage": coverage,
        "dropped": rep.dropped, "raw": {"interactions": n_raw, "users": len(users_all),
                                        "items": len(items_all)},
        "warnings": rep.warnings, "vmr_version": __version__,
    }
    _warn_stale_cache(out, items, rep)
    _write_atomic(out, interactions, items, meta)
    rep.print_warnings()
    return _summary(out, meta, opts)


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _summary(out: Path, meta: dict, opts: PrepareOptions) -> str:
    from vmr.data.io import fmt_int, fraction

    d, s, cov = meta["dropped"], meta["splits"], meta["coverage"]
    k = opts.kcore
    w = max(len(fmt_int(meta[x])) for x in ("users", "items", "interactions"))
    lines = [
        f"prepared {out}",
        f"  users         {fmt_int(meta['users']):>{w}}   (dropped {fmt_int(d['kcore_users'])} "
        f"by {k}-core)",
        f"  items         {fmt_int(meta['items']):>{w}}   (dropped {fmt_int(d['kcore_items'])} "
        f"by {k}-core"
        + (f", {fmt_int(d['items_not_in_interactions'])} table rows without interactions"
           if "items_not_in_interactions" in d else "") + ")",
        f"  interactions  {fmt_int(meta['interactions']):>{w}}   (dropped "
        f"{fmt_int(d['kcore_interactions'])} by {k}-core"
        + (f", {fmt_int(d['unknown_item_interactions'])} with unknown items"
           if "unknown_item_interactions" in d else "") + ")",
        f"  split         train {fmt_int(s['train'])} / valid {fmt_int(s['valid'])} / test "
        f"{fmt_int(s['test'])}",
        "  coverage      " + ", ".join(f"{m} {fmt_int(cov[m])} ({fraction(cov[m], meta['items'])})"
                                       for m in ("text", "image", "video")),
    ]
    if meta["warnings"]:
        lines.append(f"  warnings      {len(meta['warnings'])} (printed on stderr, kept in "
                     f"dataset.json)")
    return "\n".join(lines)
