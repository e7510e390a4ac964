"""Ids are read exactly as written, in every input format (issue 14): `007` is not `7`, `1.0` is
not `1`, and a JSON number keeps its literal text."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest
from test_inputs_formats import cli, error_line, prepared, seqs

USERS = ["007", "7", "u 1"]
ITEMS = ["1", "1.0", "01", "1e3", "a"]
# every user rates every item; time = position
LOG = [(u, i, t) for u in USERS for t, i in enumerate(ITEMS)]
WANT = {u: ITEMS for u in USERS}


def write_log(path, rows, items=False):
    """rows of (id, title) for an item table, else (user, item, time); ids as text."""
    head = ["item_id", "title"] if items else ["user_id", "item_id", "timestamp"]
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        cols = list(zip(*rows))
        pl.DataFrame({h: [str(v) for v in c] for h, c in zip(head, cols)}).write_parquet(path)
        return path
    if name.endswith((".jsonl", ".json")):
        text = "".join(json.dumps(dict(zip(head, map(str, r)))) + "\n" for r in rows)
    else:
        sep = "," if name.endswith(".csv") else "\t"
        if name.endswith((".inter", ".item")):
            head = [f"{h}:{'float' if h == 'timestamp' else 'token'}" for h in head]
        text = "\n".join(sep.join(map(str, r)) for r in [head, *rows]) + "\n"
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".parquet", ".jsonl", ".json.gz", ".inter",
                                 ".csv.gz"])
def test_table_ids_are_exact(tmp_path, ext):
    log = write_log(tmp_path / f"log{ext}", LOG)
    item_ext = ".item" if ext == ".inter" else ext
    items = write_log(tmp_path / f"items{item_ext}", [(i, f"title of {i}") for i in ITEMS],
                      items=True)
    d, meta, _ = prepared(tmp_path, "--interactions", log, "--items", items, "--text-columns",
                          "title")
    assert seqs(d) == WANT
    assert d.item_ids == ITEMS and d.user_ids == USERS
    assert d.items["text"].to_list() == [f"title of {i}" for i in ITEMS]


def test_dat_ids_are_exact(tmp_path):
    ratings = tmp_path / "ratings.dat"
    ratings.write_text("".join(f"{u}::{i}::5::{t}\n" for u, i, t in LOG))
    movies = tmp_path / "movies.dat"
    movies.write_text("".join(f"{i}::title of {i}::Drama\n" for i in ITEMS))
    d, _, _ = prepared(tmp_path, "--interactions", ratings, "--items", movies, "--text-columns",
                       "title")
    assert seqs(d) == WANT and d.user_ids == USERS
    assert d.items["text"].to_list() == [f"title of {i}" for i in ITEMS]


def test_sequences_ids_are_exact(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("007 1 1.0 01\n7 01 1\n0.7 1.0\n")
    d, _, _ = prepared(tmp_path, "--interactions", seq, "--format", "sequences")
    assert seqs(d) == {"007": ["1", "1.0", "01"], "7": ["01", "1"], "0.7": ["1.0"]}


def test_json_numbers_keep_their_literal_text(tmp_path):
    """A JSON number id is its text as written: never reformatted, even when the column also
    holds floats (where a typed reader would turn every 1 into 1.0)."""
    rows = [{"user": 7, "item": 1, "time": 1}, {"user": "7", "item": 1.0, "time": 2},
            {"user": 7.0, "item": 2.5, "time": 3}, {"user": "007", "item": "1", "time": 4}]
    lines = [json.dumps(r) for r in rows]
    lines.append('{"user": 1E2, "item": 1.50, "time": 5}')  # json.dumps would not write these
    lines.append('{"user": true, "item": -0, "time": 6}')
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines) + "\n")
    d, _, _ = prepared(tmp_path, "--interactions", log)
    assert seqs(d) == {"7": ["1", "1.0"], "7.0": ["2.5"], "007": ["1"], "1E2": ["1.50"],
                       "true": ["-0"]}
    assert d.item_ids == ["1", "1.0", "2.5", "1.50", "-0"]


def test_json_items_table_matches_the_log_exactly(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user,item,time\na,1,1\na,1.0,2\nb,2,1\n")
    items = tmp_path / "items.jsonl"
    items.write_text('{"item": 1, "title": "int"}\n{"item": 1.0, "title": "float"}\n'
                     '{"item": "2", "title": "text"}\n')
    d, _, _ = prepared(tmp_path, "--interactions", log, "--items", items, "--text-columns",
                       "title")
    assert dict(zip(d.item_ids, d.items["text"].to_list())) == {"1": "int", "1.0": "float",
                                                                 "2": "text"}


@pytest.mark.parametrize("value,kind", [('{"a": 1}', "an object"), ("[1, 2]", "an array"),
                                        ("[]", "an array")])
def test_json_object_or_array_id_is_an_error(tmp_path, value, kind):
    log = tmp_path / "log.jsonl"
    log.write_text('{"user": "a", "item": "b", "time": 1}\n\n'
                   f'{{"user": "a", "item": {value}, "time": 2}}\n')
    code, _, err = cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    error_line(code, err, "log.jsonl", "line 3", "column 'item'", kind)


def test_parquet_ids_integers_exact_and_floats_refused_naming_the_column(tmp_path):
    ok = tmp_path / "ints.parquet"
    pl.DataFrame({"user": [7, 7, 8], "item": pl.Series([1, 10, 1], dtype=pl.UInt8),
                  "time": [1, 2, 3]}).write_parquet(ok)
    d, _, _ = prepared(tmp_path, "--interactions", ok)
    assert seqs(d) == {"7": ["1", "10"], "8": ["1"]}
    for user, item, bad in [([1, 2], [1.0, 2.0], "item"), ([1.0, 2.0], ["a", "b"], "user"),
                            ([1, 2], [[1], [2]], "item"), (["a", "b"], [True, False], "item")]:
        p = tmp_path / "bad.parquet"
        pl.DataFrame({"user": user, "item": item, "time": [1, 2]}).write_parquet(p)
        code, _, err = cli("prepare", "--interactions", p, "--out", tmp_path / "o")
        line = error_line(code, err, "bad.parquet", f"id column '{bad}'")
        other = "user" if bad == "item" else "item"
        assert f"'{other}'" not in line
