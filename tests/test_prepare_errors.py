"""Inputs that used to end in a traceback or a misleading message (issue 14): fields over
128 KiB, JSON nested a thousand deep, Parquet id columns, classic-Mac (CR-only) line ends."""

from __future__ import annotations

import os

import pytest
from test_inputs_formats import cli, error_line, prepared, seqs

BIG = "x" * (200 * 1024)  # over Python csv's default field limit (128 KiB)


@pytest.mark.parametrize("sep", [",", "\t"])
def test_field_over_128_kib_with_a_malformed_row_is_one_line(tmp_path, sep):
    log = tmp_path / ("log.csv" if sep == "," else "log.tsv")
    log.write_text(sep.join(["user", "item", "time"]) + "\n" + sep.join(["a", "b", "1"]) + "\n"
                   + sep.join(["c", BIG, "2", "extra"]) + "\n")
    code, _, err = cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    line = error_line(code, err, log.name, "line 3", "4 fields", "header has 3")
    assert len(line) < 300


def test_field_over_128_kib_is_kept_whole(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user,item,time\na,b,1\na,c,2\n")
    items = tmp_path / "items.csv"
    items.write_text(f'item,title\nb,"{BIG}"\nc,short\n')
    d, _, _ = prepared(tmp_path, "--interactions", log, "--items", items, "--text-columns",
                       "title")
    assert d.items["text"].to_list() == [BIG, "short"]


def test_huge_unparsable_time_gives_a_short_message(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(f"user,item,time\na,b,1\na,c,{BIG}\n")
    code, _, err = cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    line = error_line(code, err, "log.csv", "line 3", "cannot parse time")
    assert len(line) < 300


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_one_line(tmp_path, depth):
    log = tmp_path / "log.jsonl"
    log.write_text('{"user": "a", "item": "b", "time": 1}\n'
                   + '{"user": "a", "item": "c", "time": 2, "x": ' + "[" * depth + "]" * depth
                   + "}\n")
    code, _, err = cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    error_line(code, err, "log.jsonl", "line 2", "nested too deeply")


def test_moderately_nested_json_in_other_columns_is_fine(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"user": "a", "item": "b", "time": 1, "x": ' + "[" * 50 + "]" * 50 + "}\n"
                   '{"user": "a", "item": "c", "time": 2, "x": {"y": [1, {"z": null}]}}\n')
    d, _, _ = prepared(tmp_path, "--interactions", log)
    assert seqs(d) == {"a": ["b", "c"]}


@pytest.mark.parametrize("name,text,extra", [
    ("log.csv", "user,item,time\ra,b,1\ra,c,2\rb,b,3\r", []),
    ("log.tsv", "user\titem\ttime\ra\tb\t1\ra\tc\t2\rb\tb\t3", []),
    ("log.jsonl", '{"user":"a","item":"b","time":1}\r{"user":"a","item":"c","time":2}\r\r'
                  '{"user":"b","item":"b","time":3}\r', []),
    ("seq.txt", "a b c\rb b\r", ["--format", "sequences"]),
])
def test_cr_only_line_ends_parse_like_lf(tmp_path, name, text, extra):
    """Files saved with classic Mac line ends (CR alone) are read line by line, not as one
    line (which used to end in 'no rows')."""
    log = tmp_path / name
    log.write_bytes(text.encode())
    d, _, _ = prepared(tmp_path, "--interactions", log, *extra)
    assert seqs(d) == {"a": ["b", "c"], "b": ["b"]}


def test_cr_only_errors_name_the_right_line(tmp_path):
    log = tmp_path / "log.csv"
    log.write_bytes(b"user,item,time\ra,b,1\ra,c,soon\r")
    code, _, err = cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    error_line(code, err, "log.csv", "line 3", "'soon'")


def test_cr_only_items_table(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user,item,time\na,b,1\na,c,2\n")
    items = tmp_path / "items.csv"
    items.write_bytes(b'item,title\rb,"B, the first"\rc,C\r')
    d, _, _ = prepared(tmp_path, "--interactions", log, "--items", items, "--text-columns",
                       "title")
    assert d.items["text"].to_list() == ["B, the first", "C"]


@pytest.mark.parametrize("name", ["log.parquet", "log.jsonl", "log.csv", "log.dat",
                                  "log.inter", "log.parquet.gz"])
def test_random_bytes_are_one_line(tmp_path, name):
    rnd = os.urandom(4096)
    for data in (rnd, b"PAR1" + rnd + b"PAR1", rnd[:7]):
        log = tmp_path / name
        log.write_bytes(data)
        code, _, err = cli("prepare", "--interactions", log, "--out", tmp_path / "o")
        error_line(code, err, name)
