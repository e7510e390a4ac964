"""Reading user-supplied inputs: tables (CSV, TSV, Parquet, JSON lines, RecBole atomic files,
MovieLens `::` files, each optionally gzipped) and sequence text files.

Every reader returns a polars DataFrame whose id columns are Utf8 holding the ids exactly as
written (`007` stays `007`, `1.0` stays `1.0`) and raises a one-line VmrError naming the file, the
line or row, and the problem. The formats themselves are read in `vmr.data.formats` and
`vmr.data.jsonl`.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from vmr.errors import VmrError

ROW = "\x00row"  # read_table's row-index column (no input column can be named so)


@dataclass
class Source:
    """A file we read rows from; turns a 0-based data-row index into `line N` / `row N`."""

    path: Path  # absolute
    kind: str  # csv | tsv | recbole | parquet | jsonl | dat | sequences
    name: str = ""  # the path as the user wrote it, for messages
    lines: list[int] | None = field(default=None, repr=False)  # 1-based line of each row
    columns: list[str] | None = field(default=None, repr=False)  # every column of the file

    def where(self, i: int) -> str:
        if self.lines is not None:
            return f"line {self.lines[i]}" if i < len(self.lines) else f"row {i + 1}"
        if self.kind in ("csv", "tsv", "recbole"):
            return f"line {i + 2}"  # 1 header line; polars keeps blank lines as empty rows
        if self.kind == "sequences":
            return f"line {i}"  # sequence readers store the 1-based line number itself
        return f"row {i + 1}"


def check_file(path: str | Path, what: str) -> Path:
    """The path as an absolute Path; VmrError if it is missing, a directory or empty."""
    p = Path(path).expanduser()
    if not p.exists():
        raise VmrError(f"{path}: {what} file not found")
    if p.is_dir():
        raise VmrError(f"{path}: {what} is a directory, expected a file")
    if p.stat().st_size == 0:
        raise VmrError(f"{path}: {what} file is empty")
    return p.resolve()


def read_table(path: str | Path, what: str = "table", pick=None):
    """Read a table; returns (DataFrame, Source).

    `pick(columns) -> (keep, ids)` chooses, from the file's column names, the columns to keep
    (None: all) and the id columns (text, exactly as written). The DataFrame holds the kept
    columns that exist plus ROW, the row index that `Source.where` turns into `line N`. Blank
    rows (every field of the row empty) are skipped; a file without other rows is an error."""
    import polars as pl

    from vmr.data import formats
    from vmr.data.jsonl import read_json_lines

    p = check_file(path, what)
    kind, gz = formats.file_kind(p)
    src = Source(p, kind, str(path))
    keep, ids = None, []
    if kind == "jsonl":
        data = formats.load_bytes(p, gz, path, what)
        df, src.lines, src.columns = read_json_lines(data, path, what, pick)
        df = df.with_row_index(ROW)  # ids are text already; blank objects were skipped
    else:
        if kind == "parquet":
            df = formats.read_parquet(formats.load_bytes(p, gz, path, what) if gz else p, path,
                                      what)
        elif kind == "dat":
            data = formats.load_bytes(p, gz, path, what)
            df, src.lines = formats.read_dat(data, p.name, path, what)
        else:
            data = formats.load_bytes(p, gz, path, what)
            df = formats.read_delimited(data, kind, path, what)
        src.columns = df.columns
        blank = blank_rows(df)
        if pick:
            keep, ids = pick(df.columns)
        df = formats.exact_ids(df, ids, path)
        if keep is not None:
            df = df.select([c for c in dict.fromkeys(keep) if c in df.columns])
        df = df.with_row_index(ROW).filter(~blank)
    if df.height == 0:
        raise VmrError(f"{path}: {what} file has no rows")
    return df.with_columns(pl.col(ROW).cast(pl.Int64)), src


def require_columns(df, src: Source, wanted: dict[str, str], what: str) -> None:
    """VmrError if a wanted column is missing; `wanted` maps column -> the option naming it."""
    for col, option in wanted.items():
        if col not in df.columns:
            avail = ", ".join(src.columns if src.columns is not None else df.columns)
            raise VmrError(f"{src.name}: {what} has no column '{col}' (set by {option}); "
                           f"available columns: {avail}")


def null_mask(series):
    """Boolean series: the value is null, or (for text) empty or only whitespace."""
    import polars as pl

    bad = series.is_null()
    if series.dtype == pl.String:
        bad = bad | (series.str.strip_chars() == "").fill_null(True)
    return bad


def blank_rows(df):
    """Boolean series: every column of the row is null or blank (a blank line in a CSV)."""
    import polars as pl

    mask = pl.Series([True] * df.height, dtype=pl.Boolean)
    for c in df.columns:
        mask = mask & null_mask(df[c])
    return mask


def first_null(series) -> int | None:
    """Index of the first null or blank value of a series, else None."""
    idx = null_mask(series).arg_true()
    return int(idx[0]) if len(idx) else None


def _iso_seconds(text: str) -> float | None:
    """Seconds since the epoch of an ISO-8601 date or datetime (naive = UTC), else None."""
    try:
        d = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def parse_times(series, src: Source, col: str, rows=None):
    """Turn a time column (numbers, ISO dates/datetimes as text, or Date/Datetime) into a
    float64 numpy array; dates become seconds since 1970-01-01 UTC. `rows[i]` is the source
    row of value i (for error messages; default: i itself)."""
    import numpy as np
    import polars as pl

    def where(i: int) -> str:
        return src.where(int(rows[i]) if rows is not None else i)

    dt = series.dtype
    if dt == pl.Date:
        out = series.cast(pl.Int64).cast(pl.Float64) * 86400.0
    elif isinstance(dt, pl.Datetime):
        out = series.dt.epoch("us").cast(pl.Float64) / 1e6
    elif dt.is_numeric():
        out = series.cast(pl.Float64)
    elif dt == pl.String:
        num = series.str.strip_chars().cast(pl.Float64, strict=False)
        n_num_bad = int((num.is_null() & series.is_not_null()).sum())
        if n_num_bad == 0:
            out = num
        else:
            uniq = series.drop_nulls().unique().to_list()
            mapping = {s: _iso_seconds(s) for s in uniq}
            iso = series.replace_strict(mapping, default=None, return_dtype=pl.Float64)
            n_iso_bad = int((iso.is_null() & series.is_not_null()).sum())
            if n_iso_bad == 0:
                out = iso
            else:  # report under the reading that explains more rows
                guess = num if n_num_bad <= n_iso_bad else iso
                i = int((guess.is_null() & series.is_not_null()).arg_true()[0])
                kind = "a number" if guess is num else "an ISO date/datetime"
                raise VmrError(f"{src.name}: {where(i)}: cannot parse time "
                               f"{quoted(series[i])} in column '{col}' (expected {kind}, "
                               f"like the other rows)")
    else:
        raise VmrError(f"{src.name}: time column '{col}' has type {dt}; expected numbers or "
                       f"ISO dates/datetimes")
    i = first_null(series)
    if i is not None:
        raise VmrError(f"{src.name}: {where(i)}: empty time in column '{col}'")
    arr = out.to_numpy().astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise VmrError(f"{src.name}: {where(i)}: time {quoted(series[i])} in column '{col}' is "
                       f"not a finite number")
    return arr


CONTROL = r"[\x00-\x1f\x7f-\x9f]"     # NUL, tab, line breaks, ESC, DEL, C1 controls


def check_id_chars(series, src: Source, col: str, role: str, rows) -> None:
    """Ids are opaque, but not invisible: an id holding a control character (NUL, a tab, ESC,
    a line break) cannot be stored in the feature cache, printed safely or told apart from its
    neighbour; refused with one line naming the source row."""
    import polars as pl

    bad = series.cast(pl.Utf8).str.contains(CONTROL).fill_null(False)
    if bad.any():
        i = int(bad.arg_true()[0])
        value = series[i]
        ch = next(c for c in value if ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f)
        raise VmrError(f"{src.name}: {src.where(int(rows[i]))}: {role} id {value!r:.60} in "
                       f"column '{col}' holds the control character U+{ord(ch):04X}; ids "
                       "must be printable text")


def check_ids(series, src: Source, col: str, role: str, rows) -> None:
    """An id column has no empty cell and no control character (one line naming the row)."""
    i = first_null(series)
    if i is not None:
        raise VmrError(f"{src.name}: {src.where(int(rows[i]))}: empty {role} id in column "
                       f"'{col}'")
    check_id_chars(series, src, col, role, rows)


def _split_sequence_line(text: str, path, n: int) -> list[str]:
    """A sequences line split on spaces and tabs only; any other whitespace (a no-break space,
    U+2003, ...) inside would have split an id silently and is refused."""
    parts = [p for p in re.split(r"[ \t\r\f\v]+", text) if p]
    for p in parts:
        odd = next((c for c in p if c.isspace()), None)
        if odd is not None:
            raise VmrError(f"{path}: line {n}: id {p!r:.60} holds the whitespace character "
                           f"U+{ord(odd):04X}; a sequences file separates ids by spaces or tabs "
                           "only, so an id cannot contain other whitespace")
    return parts


def read_sequences(path: str | Path):
    """Read a sequences file: one user per line, `user item item ...` in time order.

    Returns (DataFrame user/item/time/src, Source); time is the 0-based position in the line,
    `src` the 1-based line number. Blank lines are skipped; a `.gz` file is decompressed."""
    import numpy as np
    import polars as pl

    from vmr.data.formats import load_bytes

    p = check_file(path, "interactions")
    src = Source(p, "sequences", str(path))
    data = load_bytes(p, p.name.lower().endswith(".gz"), path, "interactions")
    users: list[str] = []
    items: list[str] = []
    lines: list[int] = []
    counts: list[int] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = raw.decode("utf-8-sig" if n == 1 else "utf-8")  # BOM: not an id
        except UnicodeDecodeError:
            raise VmrError(f"{path}: line {n}: not valid UTF-8 text") from None
        parts = _split_sequence_line(text, path, n)
        if not parts:
            continue
        user = parts[0]
        if len(parts) == 1:
            raise VmrError(f"{path}: line {n}: user {quoted(user)} has no items")
        if user in seen:
            raise VmrError(f"{path}: line {n}: user {quoted(user)} appears again (first on "
                           f"line {seen[user]}); give each user one line")
        seen[user] = n
        users.append(user)
        items.extend(parts[1:])
        counts.append(len(parts) - 1)
        lines.append(n)
    if not users:
        raise VmrError(f"{path}: interactions file has no sequences (only blank lines)")
    cnt = np.asarray(counts, dtype=np.int64)
    starts = np.repeat(np.cumsum(cnt) - cnt, cnt)
    pos = np.arange(int(cnt.sum()), dtype=np.int64) - starts
    df = pl.DataFrame({
        "user": pl.Series(users, dtype=pl.String).gather(np.repeat(np.arange(len(users)), cnt)),
        "item": pl.Series(items, dtype=pl.String),
        "time": pos.astype(np.float64),
        "src": np.repeat(np.asarray(lines, dtype=np.int64), cnt),
    })
    return df, src


def quoted(value, limit: int = 60) -> str:
    """A value quoted for a message, cut to `limit` characters (a 1 MB field stays readable)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def counted(n: int, noun: str) -> str:
    """`1 item`, `3 items` (plural by adding s)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fraction(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "n/a"
