"""JSON lines (`.jsonl`, `.ndjson`, and `.json` as Amazon's review dumps): one object per line.

Ids are read exactly as written: a JSON number keeps its literal text (`1` stays "1", `2.5` stays
"2.5", `1.0` stays "1.0" -- never reformatted, whatever the other rows hold), a string stays the
string, `true`/`false` become "true"/"false". An object or array where an id belongs is an error
naming the line and the column. Every column arrives as text; in other columns an array becomes
its elements joined with ", " (nested arrays flattened) and an object its JSON text.

A line that is not JSON but a Python dict literal (`{'asin': 'B00..', ...}`, as Amazon's 2014
metadata files are written) is read as such; ids in those lines must be quoted strings.
"""

from __future__ import annotations

import ast
import json

from vmr.errors import VmrError

PEEK = 1000  # objects whose keys are offered to `pick` (the columns seen there)


class _Num(str):
    """The literal text of a JSON number."""


def _parse(raw: bytes, n: int, shown, what: str) -> tuple[dict, bool]:
    """(object, is_python_literal) of one non-blank line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VmrError(f"{shown}: line {n}: not valid UTF-8 text") from None
    literal = False
    try:
        obj = json.loads(line, parse_int=_Num, parse_float=_Num, parse_constant=_Num)
    except RecursionError:
        raise VmrError(f"{shown}: line {n}: JSON nested too deeply to read") from None
    except json.JSONDecodeError as e:
        obj = _python_literal(line)
        if obj is None:
            raise VmrError(f"{shown}: line {n}: not valid JSON (JSONDecodeError: "
                           f"{str(e).splitlines()[0]})") from None
        literal = True
    if not isinstance(obj, dict):
        hint = " (a JSON array file? write one object per line)" if n == 1 and \
            isinstance(obj, list) else ""
        raise VmrError(f"{shown}: line {n}: expected a JSON object per line in the {what} "
                       f"file{hint}")
    if literal:
        obj = {str(k): v for k, v in obj.items()}
    return obj, literal


def _python_literal(line: str):
    """A Python dict literal (`{'a': 1}`), else None. ast.literal_eval evaluates no code."""
    if not line.lstrip().startswith("{'"):
        return None
    try:
        obj = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def _blank(obj: dict) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in obj.values())


def _plain(v):
    """JSON-ready value: literal numbers back to numbers (for the JSON text of an object)."""
    if isinstance(v, _Num):
        try:
            return json.loads(v)
        except ValueError:
            return str(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_plain(x) for x in v]
    return v


def _flat(v) -> list[str]:
    if isinstance(v, (list, tuple, set)):
        return [t for x in v for t in _flat(x)]
    t = _text(v)
    return [t.strip()] if t is not None and t.strip() else []


def _text(v) -> str | None:
    """A non-id value as text (None stays None)."""
    if v is None:
        return None
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, set)):
        return ", ".join(_flat(v))
    if isinstance(v, dict):
        try:
            return json.dumps(_plain(v), ensure_ascii=False)
        except (TypeError, ValueError):
            return str(v)
    return str(v)


def _id_text(v, literal: bool, col: str, n: int, shown) -> str | None:
    if v is None:
        return None
    if literal:
        if type(v) is str:
            return v
        raise VmrError(f"{shown}: line {n}: the id {repr(v)[:40]} in column '{col}' is not a "
                       f"quoted string (in a Python-literal line only quoted ids are read exactly)")
    if isinstance(v, str):
        return str(v)  # a string, or a number's literal text
    if isinstance(v, bool):
        return "true" if v else "false"
    kind = "an object" if isinstance(v, dict) else "an array"
    raise VmrError(f"{shown}: line {n}: the id in column '{col}' is {kind}; an id must be a "
                   f"JSON string or number")


def read_json_lines(data: bytes, shown, what: str, pick=None):
    """Read JSON lines. `pick(columns) -> (keep, ids)` is called with the keys of the first
    PEEK objects: `keep` lists the columns to keep (None: all keys of the file), `ids` the id
    columns. Blank lines, and objects whose values are all null or blank, are skipped.

    Returns (DataFrame of text columns, the 1-based line of each row, every key seen)."""
    import polars as pl

    keys: dict[str, None] = {}
    keep: list[str] | None = None
    ids: set[str] = set()
    decided = False
    pending: list[tuple[int, dict, bool]] = []
    cols: dict[str, list] = {}
    lines: list[int] = []

    def decide():
        nonlocal keep, ids, decided
        k, i = pick(list(keys)) if pick else (None, [])
        keep, ids, decided = (list(dict.fromkeys(k)) if k is not None else None), set(i), True
        if keep is not None:
            for c in keep:
                cols[c] = []

    def add(n: int, obj: dict, literal: bool):
        for c in keep:
            v = obj.get(c)
            cols[c].append(_id_text(v, literal, c, n, shown) if c in ids else _text(v))
        lines.append(n)

    for n, raw in enumerate(data.split(b"\n"), 1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        obj, literal = _parse(raw, n, shown, what)
        if _blank(obj):
            continue
        keys.update(dict.fromkeys(obj))
        if decided and keep is not None:
            add(n, obj, literal)
            continue
        pending.append((n, obj, literal))
        if not decided and len(pending) >= PEEK:
            decide()
            if keep is not None:
                for row in pending:
                    add(*row)
                pending = []
    if not decided:
        decide()
    if keep is None:  # every key of the file
        keep = list(keys)
        for c in keep:
            cols[c] = []
    for row in pending:
        add(*row)
    df = pl.DataFrame({c: pl.Series(c, cols[c], dtype=pl.String) for c in keep if c in keys})
    return df, lines, list(keys)
