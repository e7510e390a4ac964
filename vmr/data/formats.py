"""The bytes of user-supplied tables: the file kind by its extension (any kind may be gzipped),
CSV / TSV / RecBole atomic files, MovieLens `::` files and Parquet. JSON lines are read by
`vmr.data.jsonl`.

Every reader raises a one-line VmrError naming the file, the line and the problem. Text formats
are read with every column as text, so ids arrive exactly as written (`007` is not `7`, `1.0` is
not `1`).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from contextlib import contextmanager
from pathlib import Path

from vmr.errors import VmrError
from vmr.fsio import one_line

KINDS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".inter": "recbole", ".item": "recbole", ".user": "recbole", ".dat": "dat",
}
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_TYPED = re.compile(r"^(.+):(" + "|".join(RECBOLE_TYPES) + r")$")
# MovieLens-1M / 10M `::` files have no header: their columns, by the file's name
DAT_COLUMNS = {
    "ratings": ["user_id", "item_id", "rating", "timestamp"],
    "movies": ["item_id", "title", "genres"],
    "users": ["user_id", "gender", "age", "occupation", "zip_code"],
    "tags": ["user_id", "item_id", "tag", "timestamp"],
}
_DAT_BY_FIELDS = {4: "ratings", 3: "movies"}


def _panic():
    import polars as pl

    return getattr(pl.exceptions, "PanicException", RuntimeError)


def file_kind(path: str | Path) -> tuple[str, bool]:
    """(kind, gzipped) of a table file, from its extension (`.csv.gz` is a gzipped CSV)."""
    name = Path(path).name.lower()
    gz = name.endswith(".gz")
    suffix = Path(name[:-3] if gz else name).suffix
    if suffix not in KINDS:
        known = ", ".join(sorted(KINDS))
        hint = " (a sequences file? add --format sequences)" if suffix == ".txt" else ""
        raise VmrError(f"{path}: unknown table extension '{suffix or name}' (use one of {known}, "
                       f"each optionally followed by .gz){hint}")
    return KINDS[suffix], gz


def load_bytes(p: Path, gz: bool, shown, what: str) -> bytes:
    """The file's bytes (decompressed when gzipped), CR-only line ends turned into LF."""
    try:
        if gz:
            with gzip.open(p, "rb") as f:
                data = f.read()
        else:
            data = p.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        if gz:
            raise VmrError(f"{shown}: cannot decompress the {what} file, it is not a complete "
                           f"gzip file ({one_line(e)})") from None
        raise VmrError(f"{shown}: cannot read the {what} file: {one_line(e)}") from None
    if not data:
        raise VmrError(f"{shown}: {what} file is empty")
    return fix_line_ends(data)


def fix_line_ends(data: bytes) -> bytes:
    """Classic Mac files end their lines with CR alone: read them as LF. A file that has any LF
    is left alone (a stray CR there stays part of its field)."""
    if b"\r" in data and b"\n" not in data:
        return data.replace(b"\r", b"\n")
    return data


# ----------------------------------------------------------------------- CSV, TSV, RecBole
def read_delimited(data: bytes, kind: str, shown, what: str):
    """A CSV, TSV or RecBole atomic file (a TSV with a typed header `name:type`) with every
    column as text. RecBole's `:type` suffixes are stripped from the column names."""
    import polars as pl

    sep = "," if kind == "csv" else "\t"
    try:
        if kind == "csv":
            df = pl.read_csv(data, infer_schema=False, encoding="utf8")
        else:  # RecBole's own reader (pandas) honours quotes as well
            df = _read_tsv(data)
    except pl.exceptions.NoDataError:
        raise VmrError(f"{shown}: {what} file has no data") from None
    except (pl.exceptions.PolarsError, _panic(), OSError, ValueError) as e:
        find_bad_delimited_line(data, shown, sep, quoted=(kind == "csv"))
        name = {"recbole": "a RecBole atomic file"}.get(kind, kind.upper())
        raise VmrError(f"{shown}: cannot read {what} as {name}: {one_line(e)}") from None
    return _clean_header(df, shown)


def _clean_header(df, shown):
    """Refuse a column name given twice; strip RecBole's `:type` when every name carries one."""
    cols = df.columns
    for c in cols:
        m = re.match(r"^(.*)_duplicated_\d+$", c)
        if m and m.group(1) in cols:
            raise VmrError(f"{shown}: column '{m.group(1)}' appears more than once in the header")
    if cols and all(_TYPED.match(c) for c in cols):
        names = [_TYPED.match(c).group(1) for c in cols]
        twice = [n for n in names if names.count(n) > 1]
        if twice:
            raise VmrError(f"{shown}: column '{twice[0]}' appears more than once in the header")
        df = df.rename(dict(zip(cols, names)))
    return df


def _read_tsv(data: bytes):
    """A TSV with every column as text. Quotes are honoured only when the file is consistently
    CSV-quoted (as Python's csv module or pandas write it: a field holding `"` is wrapped in
    quotes with inner quotes doubled); otherwise `"` is an ordinary character, so a raw title
    like `"Best" shampoo` stays intact."""
    import polars as pl

    try:
        raw = pl.read_csv(data, separator="\t", infer_schema=False, quote_char=None,
                          encoding="utf8")
    except pl.exceptions.NoDataError:
        raise
    except pl.exceptions.PolarsError:  # ragged rows: perhaps quoted fields spanning lines
        return pl.read_csv(data, separator="\t", infer_schema=False, encoding="utf8")
    quoted = re_quoted = 0
    for c in raw.columns:
        col = raw[c]
        has = col.str.contains('"', literal=True).fill_null(False)
        quoted += int(has.sum())
        re_quoted += int(col.filter(has).str.contains(r'^"([^"]|"")*"$').sum())
    if quoted == 0 or re_quoted < quoted:
        return raw
    return pl.read_csv(data, separator="\t", infer_schema=False, encoding="utf8")


@contextmanager
def _any_field_size():
    """Python's csv module refuses fields over 128 KiB; a long description is no error."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def find_bad_delimited_line(data: bytes, shown, sep: str, quoted: bool) -> None:
    """Raise a VmrError naming the first line that is not UTF-8 or whose field count differs
    from the header's; return if none is found."""
    for n, raw in enumerate(io.BytesIO(data), 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise VmrError(f"{shown}: line {n}: not valid UTF-8 text") from None
    text = io.StringIO(data.decode("utf-8-sig"), newline="")
    reader = csv.reader(text, delimiter=sep, quoting=csv.QUOTE_MINIMAL if quoted else
                        csv.QUOTE_NONE)
    try:
        with _any_field_size():
            header = next(reader, [])
            for row in reader:
                if row and len(row) != len(header):
                    raise VmrError(f"{shown}: line {reader.line_num}: {len(row)} fields, but "
                                   f"the header has {len(header)}")
    except csv.Error as e:
        raise VmrError(f"{shown}: line {reader.line_num}: {one_line(e)}") from None


# --------------------------------------------------------------------------- MovieLens .dat
def read_dat(data: bytes, file_name: str, shown, what: str):
    """A MovieLens `::` file (no header; UTF-8, else Latin-1 as MovieLens-1M's movies.dat).

    The columns come from the file's name (ratings / movies / users / tags, see DAT_COLUMNS),
    else from the number of fields (4: ratings, 3: movies). Returns (DataFrame of text
    columns, the 1-based line of each row); blank lines are skipped."""
    import polars as pl

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    stem = file_name.lower()
    role = next((r for r in DAT_COLUMNS if stem.startswith(r)), None)
    cols = DAT_COLUMNS[role] if role else None
    rows: list[list[str]] = []
    lines: list[int] = []
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if cols is None:
            k = len(line.split("::"))
            if k not in _DAT_BY_FIELDS:
                raise VmrError(f"{shown}: line {n}: {k} fields separated by '::'; cannot tell "
                               f"the columns (name the file ratings.dat or movies.dat)")
            cols = DAT_COLUMNS[_DAT_BY_FIELDS[k]]
        parts = line.split("::")
        if len(parts) != len(cols):      # a value holding '::' cannot be told from a separator
            raise VmrError(f"{shown}: line {n}: {len(parts)} fields separated by '::', expected "
                           f"{len(cols)} ({'::'.join(cols)}); a value containing '::' is "
                           "ambiguous in this format")
        rows.append(parts)
        lines.append(n)
    if not rows:
        raise VmrError(f"{shown}: {what} file has no rows")
    df = pl.DataFrame({c: pl.Series(c, list(v), dtype=pl.String)
                       for c, v in zip(cols, zip(*rows))})
    return df, lines


# ---------------------------------------------------------------------------------- Parquet
def read_parquet(source, shown, what: str):
    import polars as pl

    try:
        return pl.read_parquet(source)
    except (pl.exceptions.PolarsError, _panic(), OSError, ValueError) as e:
        raise VmrError(f"{shown}: cannot read {what} as Parquet: {one_line(e)}") from None


def exact_ids(df, id_cols, shown):
    """Cast the id columns that are present to text: text and integers only (a float column
    would turn `1` into `1.0` and has lost how the id was written)."""
    import polars as pl

    for c in id_cols:
        if c not in df.columns or df.schema[c] == pl.String:
            continue
        dt = df.schema[c]
        if dt.is_integer() or dt == pl.Null or isinstance(dt, (pl.Categorical, pl.Enum)):
            df = df.with_columns(pl.col(c).cast(pl.String))
            continue
        why = (" (a float would turn the id 1 into '1.0')" if dt.is_float() else "")
        raise VmrError(f"{shown}: id column '{c}' has type {dt}; ids must be text or "
                       f"integers{why}")
    return df
