"""Reading user-supplied inputs: tables (CSV, TSV, Parquet, JSONL) and sequence text files.

Every reader returns a polars DataFrame whose id columns are Utf8 (`007` stays `007`) and raises
a one-line VmrError naming the file, the line or row, and the problem. Tables are read with every
CSV/TSV column as a string (no type guessing), so ids, prices and free text arrive untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from vmr.errors import VmrError

TABLE_KINDS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl",
}


@dataclass
class Source:
    """A file we read rows from; turns a 0-based data-row index into `line N` / `row N`."""

    path: Path  # absolute
    kind: str  # csv | tsv | parquet | jsonl | sequences
    name: str = ""  # the path as the user wrote it, for messages
    _jsonl_lines: list[int] | None = field(default=None, repr=False)

    def where(self, i: int) -> str:
        if self.kind in ("csv", "tsv"):
            return f"line {i + 2}"  # 1 header line; polars keeps blank lines as empty rows
        if self.kind == "jsonl":
            if self._jsonl_lines is None:  # polars skips blank lines: map rows to real lines
                with open(self.path, "rb") as f:
                    self._jsonl_lines = [n for n, ln in enumerate(f, 1) if ln.strip()]
            lines = self._jsonl_lines
            return f"line {lines[i]}" if i < len(lines) else f"row {i + 1}"
        if self.kind == "sequences":
            return f"line {i}"  # sequence readers store the 1-based line number itself
        return f"row {i + 1}"


def table_kind(path: str | Path) -> str:
    """The table format chosen by the file extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_KINDS:
        known = ", ".join(sorted(TABLE_KINDS))
        raise VmrError(f"{path}: unknown table extension '{suffix}' (use one of {known})")
    return TABLE_KINDS[suffix]


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


def read_table(path: str | Path, id_cols: Sequence[str] = (), what: str = "table"):
    """Read a CSV/TSV/Parquet/JSONL table; the listed id columns (those present) become Utf8.

    CSV and TSV are read with every column as a string; see `_read_tsv` for TSV quoting.
    Returns (DataFrame, Source)."""
    import polars as pl

    p = check_file(path, what)
    kind = table_kind(p)
    src = Source(p, kind, str(path))
    try:
        if kind == "csv":
            df = pl.read_csv(p, infer_schema=False, encoding="utf8")
        elif kind == "tsv":
            df = _read_tsv(p)
        elif kind == "parquet":
            df = pl.read_parquet(p)
        else:
            df = pl.read_ndjson(_skip_bom(p), infer_schema_length=None)
    except pl.exceptions.NoDataError:
        raise VmrError(f"{path}: {what} file has no data") from None
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        if kind == "jsonl":
            _find_bad_json_line(p, path, what)
        if kind in ("csv", "tsv"):
            _find_bad_csv_line(p, path, "," if kind == "csv" else "\t")
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VmrError(f"{path}: cannot read {what} as {kind.upper()}: {msg}") from None
    if df.width == 0 or df.height == 0:
        raise VmrError(f"{path}: {what} file has no rows")
    casts = [pl.col(c).cast(pl.String) for c in id_cols if c in df.columns
             and df.schema[c] != pl.String]
    if casts:
        try:
            df = df.with_columns(casts)
        except pl.exceptions.PolarsError:
            bad = [c for c in id_cols if c in df.columns and df.schema[c] != pl.String]
            raise VmrError(f"{path}: id column '{bad[0]}' has type {df.schema[bad[0]]}, "
                           f"expected text or integers") from None
    return df, src


def _skip_bom(p: Path):
    """The file itself, or its bytes after a UTF-8 byte-order mark (which polars' JSON reader
    rejects)."""
    import io

    with open(p, "rb") as f:
        if f.read(3) != b"\xef\xbb\xbf":
            return p
        return io.BytesIO(f.read())


def _read_tsv(p: Path):
    """Read a TSV with every column as text. Quotes are honoured only when the file is
    consistently CSV-quoted (as Python's csv module or pandas write it: a field holding `"` is
    wrapped in quotes with inner quotes doubled); otherwise `"` is an ordinary character, so a
    raw title like `"Best" shampoo` stays intact."""
    import polars as pl

    try:
        raw = pl.read_csv(p, separator="\t", infer_schema=False, quote_char=None, encoding="utf8")
    except pl.exceptions.NoDataError:
        raise
    except pl.exceptions.PolarsError:  # ragged rows: perhaps quoted fields spanning lines
        return pl.read_csv(p, separator="\t", infer_schema=False, encoding="utf8")
    quoted = re_quoted = 0
    for c in raw.columns:
        col = raw[c]
        has = col.str.contains('"', literal=True).fill_null(False)
        quoted += int(has.sum())
        re_quoted += int(col.filter(has).str.contains(r'^"([^"]|"")*"$').sum())
    if quoted == 0 or re_quoted < quoted:
        return raw
    return pl.read_csv(p, separator="\t", infer_schema=False, encoding="utf8")


def _find_bad_csv_line(p: Path, shown: str | Path, sep: str) -> None:
    """Raise a VmrError naming the first line of a CSV/TSV that is not UTF-8 or whose field
    count differs from the header's; return if none is found."""
    import csv

    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise VmrError(f"{shown}: line {n}: not valid UTF-8 text") from None
    quoting = csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=sep, quoting=quoting)
        header = next(reader, [])
        for row in reader:
            if row and len(row) != len(header):
                raise VmrError(f"{shown}: line {reader.line_num}: {len(row)} fields, but the "
                               f"header has {len(header)}")


def _find_bad_json_line(p: Path, shown: str | Path, what: str) -> None:
    """Raise a VmrError naming the first line of a JSONL file that is not a JSON object."""
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise VmrError(f"{shown}: line {n}: not valid JSON ({e.__class__.__name__}: "
                               f"{str(e).splitlines()[0]})") from None
            if not isinstance(obj, dict):
                raise VmrError(f"{shown}: line {n}: expected a JSON object per line in the "
                               f"{what} file") from None


def require_columns(df, src: Source, wanted: dict[str, str], what: str) -> None:
    """VmrError if a wanted column is missing; `wanted` maps column -> the option naming it."""
    for col, option in wanted.items():
        if col not in df.columns:
            avail = ", ".join(df.columns)
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
                raise VmrError(f"{src.name}: {where(i)}: cannot parse time {series[i]!r} in "
                               f"column '{col}' (expected {kind}, like the other rows)")
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
        raise VmrError(f"{src.name}: {where(i)}: time {series[i]!r} in column '{col}' is "
                       f"not a finite number")
    return arr


def read_sequences(path: str | Path):
    """Read a sequences file: one user per line, `user item item ...` in time order.

    Returns (DataFrame user/item/time/src, Source); time is the 0-based position in the line,
    `src` the 1-based line number. Blank lines are skipped."""
    import numpy as np
    import polars as pl

    p = check_file(path, "interactions")
    src = Source(p, "sequences", str(path))
    users: list[str] = []
    items: list[str] = []
    times: list[np.ndarray] = []
    lines: list[int] = []
    counts: list[int] = []
    seen: dict[str, int] = {}
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                parts = raw.decode("utf-8-sig" if n == 1 else "utf-8").split()  # BOM: not an id
            except UnicodeDecodeError:
                raise VmrError(f"{path}: line {n}: not valid UTF-8 text") from None
            if not parts:
                continue
            user = parts[0]
            if len(parts) == 1:
                raise VmrError(f"{path}: line {n}: user '{user}' has no items")
            if user in seen:
                raise VmrError(f"{path}: line {n}: user '{user}' appears again (first on line "
                               f"{seen[user]}); give each user one line")
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


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def counted(n: int, noun: str) -> str:
    """`1 item`, `3 items` (plural by adding s)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fraction(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "n/a"
