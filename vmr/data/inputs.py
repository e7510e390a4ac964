"""The two inputs of `vmr prepare`, read and validated: the interaction log (user, item, time,
optionally filtered by --min-rating) and the item table (id, text, media paths confined to the
media root). Columns are named by flags, set by --preset, or detected (vmr.data.columns)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from vmr.errors import VmrError

TEXT_END = ".!?;:"  # a text field ending in one of these is joined to the next with a space


@dataclass
class Report:
    """Counts, warnings and column choices collected while preparing; written to dataset.json
    and the summary."""

    dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (column, how)
    media_root: str | None = None

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def print_warnings(self) -> None:
        """Warnings go to stderr once the dataset is written (an error stays a single line)."""
        for msg in self.warnings:
            print(f"warning: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ interactions
def load_interactions(opts, rep: Report):
    """The raw log as a DataFrame (user, item, time: Float64, src: source row) plus its Source.
    With --min-rating, rows rated below it are dropped (counted in rep.dropped)."""
    import polars as pl

    from vmr.data import tables
    from vmr.data.columns import check_preset, resolve

    check_preset(opts.preset)
    if opts.rating_col and opts.min_rating is None:
        raise VmrError("--rating-col names the column that --min-rating filters on; give "
                       "--min-rating too")
    if opts.fmt == "sequences":
        if opts.min_rating is not None:
            raise VmrError("--min-rating needs a rating column, and a sequences file has none "
                           "(give the log as a table)")
        df, src = tables.read_sequences(opts.interactions)
        rows = df["src"].to_numpy()
        for role in ("user", "item"):
            tables.check_id_chars(df[role], src, "sequences", role, rows)
        return df, src
    if opts.fmt != "table":
        raise VmrError(f"--format must be 'table' or 'sequences', got '{opts.fmt}'")
    given = {"user": opts.user_col, "item": opts.item_col, "time": opts.time_col,
             "rating": opts.rating_col}
    roles = ["user", "item", "time"] + (["rating"] if opts.min_rating is not None else [])
    what = "interactions table"

    def pick(columns):
        for role in roles:
            rep.columns[role] = resolve(role, given[role], columns, opts.preset,
                                        opts.interactions, what)
        names = [rep.columns[r][0] for r in roles]
        return names, names[:2]

    df, src = tables.read_table(opts.interactions, "interactions", pick)
    col = {r: rep.columns[r][0] for r in roles}
    tables.require_columns(df, src, {col[r]: f"--{r}-col" for r in roles}, what)
    df = df.select(src=pl.col(tables.ROW), **{r: pl.col(col[r]) for r in roles})
    rows = df["src"].to_numpy()
    for role in ("user", "item"):
        tables.check_ids(df[role], src, col[role], role, rows)
    times = tables.parse_times(df["time"], src, col["time"], rows)
    df = df.with_columns(time=pl.Series(times, dtype=pl.Float64))
    if opts.min_rating is not None:
        df = _keep_rated(df, src, col["rating"], opts.min_rating, rep)
    return df.select("user", "item", "time", "src"), src


def _keep_rated(df, src, col: str, least: float, rep: Report):
    """The rows rated at least `least`; a missing or non-numeric rating is an error."""
    import numpy as np
    import polars as pl

    from vmr.data import tables

    r = df["rating"]
    rows = df["src"].to_numpy()
    if r.dtype == pl.String:
        num = r.str.strip_chars().cast(pl.Float64, strict=False)
    elif r.dtype.is_numeric():
        num = r.cast(pl.Float64)
    else:
        raise VmrError(f"{src.name}: rating column '{col}' has type {r.dtype}; expected numbers")
    i = tables.first_null(r)
    if i is not None:
        raise VmrError(f"{src.name}: {src.where(int(rows[i]))}: empty rating in column '{col}'")
    vals = num.to_numpy().astype(np.float64)
    bad = ~np.isfinite(vals)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise VmrError(f"{src.name}: {src.where(int(rows[i]))}: rating {tables.quoted(r[i])} in "
                       f"column '{col}' is not a number")
    keep = vals >= least
    rep.dropped["min_rating_interactions"] = int((~keep).sum())
    if not keep.any():
        raise VmrError(f"{src.name}: no interaction has a rating of at least {least:g} in "
                       f"column '{col}' (--min-rating; highest: {vals.max():g})")
    return df.filter(pl.Series(keep))


# -------------------------------------------------------------------------------- item table
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


def _check_unique_ids(df, src, id_col: str, rows) -> None:
    """Item ids must be valid and appear once (one line naming both rows of a duplicate)."""
    from vmr.data import tables

    tables.check_ids(df[id_col], src, id_col, "item", rows)
    dup = (~df[id_col].is_first_distinct()).arg_true()
    if len(dup):
        j = int(dup[0])
        item = df[id_col][j]
        first = int((df[id_col] == item).arg_true()[0])
        raise VmrError(f"{src.name}: {src.where(int(rows[j]))}: duplicate item id "
                       f"{tables.quoted(item)} (first on {src.where(int(rows[first]))})")


def _item_columns(opts, id_col: str, text_cols: list[str]) -> dict[str, str]:
    """The item table's columns that must exist, each with the flag that named it."""
    wanted = {id_col: "--items-id-col"}
    for c in text_cols:
        wanted[c] = "--text-columns"
    if opts.image_column:
        wanted[opts.image_column] = "--image-column"
    if opts.video_column:
        wanted[opts.video_column] = "--video-column"
    return wanted


def read_item_table(opts, rep: Report, log_item_col: str | None):
    """The item table as a DataFrame (item, text, title, image, video, src) plus its Source.

    The id column: --items-id-col, else the log's item column if the table has it, else the
    usual names (or the preset's). Media paths become absolute and must lie inside the media
    root (vmr.data.media)."""
    import polars as pl

    from vmr.data import media, tables
    from vmr.data.columns import find, preset_text_columns, resolve

    what = "items table"
    text_cols: list[str] = list(opts.text_columns or [])

    def pick(columns):
        if not opts.items_id_col and log_item_col and find(columns, [log_item_col]):
            rep.columns["items_id"] = (find(columns, [log_item_col]), "as in the log")
        else:
            rep.columns["items_id"] = resolve("items_id", opts.items_id_col, columns,
                                              opts.preset, opts.items, what)
        if not opts.text_columns and opts.preset:
            text_cols[:] = preset_text_columns(opts.preset, columns)
        media_cols = [c for c in (opts.image_column, opts.video_column) if c]
        return [rep.columns["items_id"][0], *text_cols, *media_cols], [rep.columns["items_id"][0]]

    df, src = tables.read_table(opts.items, "items", pick)
    id_col = rep.columns["items_id"][0]
    tables.require_columns(df, src, _item_columns(opts, id_col, text_cols), what)
    rows = df[tables.ROW].to_numpy()
    _check_unique_ids(df, src, id_col, rows)
    n = df.height
    if not text_cols:
        rep.warn(f"no --text-columns given: items from {src.name} get no text")
    elif opts.preset and not opts.text_columns:
        rep.columns["text"] = (",".join(text_cols), f"{opts.preset} preset")
    cols = [df[c].to_list() for c in text_cols]
    texts = [join_text(list(f)) for f in zip(*cols)] if cols else [None] * n
    titles = [_cell_text(v) for v in cols[0]] if cols else [None] * n
    root = media.media_root(opts.media_root, src.path)
    rep.media_root = str(root)
    paths = {}
    for key, col in (("image", opts.image_column), ("video", opts.video_column)):
        paths[key] = (media.confine(df[col].to_list(), root, col, src, rows, key) if col
                      else [None] * n)
    out = pl.DataFrame({
        "item": df[id_col], "text": texts, "title": titles, "image": paths["image"],
        "video": paths["video"], "src": df[tables.ROW],
    }, schema={"item": pl.String, "text": pl.String, "title": pl.String, "image": pl.String,
               "video": pl.String, "src": pl.Int64})
    return out, src
