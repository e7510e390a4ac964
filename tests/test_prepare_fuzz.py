"""Fuzzing `vmr prepare` (issue 14): valid CSV, TSV, JSON lines, sequences, RecBole and
MovieLens files (sometimes gzipped, sometimes with an item table) damaged at random -- bytes
flipped, cut short, quotes, line breaks, NULs, BOMs, huge fields, deep JSON nesting inserted.
Every outcome must be a dataset that loads (exit 0) or exactly one `error: ...` line (exit 1);
anything else -- a traceback, another exit status, a second line -- fails.

The default suite runs a short derandomized sample; `make test-slow` runs a long one."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_inputs_formats import cli

from vmr.data.dataset import load_dataset

IDS = ["007", "7", "1", "1.0", "01", "a", "ü", "B00X", "-1", "1e3"]
KINDS = ["csv", "tsv", "jsonl", "sequences", "inter", "dat"]
INSERTS = [b'"', b"\n", b"\r", b"\r\n", b"\x00", b",", b"\t", b"::", b"{", b"}", b"[", b"\xff",
           b"\xc3", b"\xef\xbb\xbf", b"\\", b"'", b" ", b"\n\n"]
HUGE = [b"x" * (200 * 1024), b"[" * 1500, b'"' + b"y" * (140 * 1024), b"9" * 5000]
OUTCOMES = {"prepared": 0, "rejected": 0}


def _valid_log(kind: str, rows: list[tuple[str, str, int, int]]) -> tuple[str, bytes, list]:
    """(file name, bytes, extra options) of a well-formed log of (user, item, time, rating)."""
    if kind == "sequences":
        by_user: dict[str, list[str]] = {}
        for u, i, _, _ in rows:
            by_user.setdefault(u, []).append(i)
        text = "".join(" ".join([u, *its]) + "\n" for u, its in by_user.items())
        return "log.txt", text.encode(), ["--format", "sequences"]
    if kind == "jsonl":
        text = "".join(json.dumps({"user_id": u, "item_id": i, "timestamp": t, "rating": r},
                                  ensure_ascii=False) + "\n" for u, i, t, r in rows)
        return "log.jsonl", text.encode(), []
    if kind == "dat":
        return "ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, t, r in rows).encode(), []
    sep = "," if kind == "csv" else "\t"
    head = ["user_id", "item_id", "timestamp", "rating"]
    if kind == "inter":
        head = ["user_id:token", "item_id:token", "timestamp:float", "rating:float"]
    lines = [sep.join(head)] + [sep.join([u, i, str(t), str(r)]) for u, i, t, r in rows]
    return f"log.{kind}", ("\n".join(lines) + "\n").encode(), []


def _items_csv(items: list[str]) -> bytes:
    lines = ["item_id,title,image"] + [f'{i},"Title, {i}",media/{i}.png' for i in items]
    return ("\n".join(lines) + "\n").encode()


@st.composite
def damage(draw, data: bytes) -> bytes:
    """Apply 0-4 random mutations to `data`."""
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "insert", "huge", "delete", "dup"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
        elif op == "cut":
            data = data[:at]
        elif op == "insert":
            data = data[:at] + draw(st.sampled_from(INSERTS)) + data[at:]
        elif op == "huge":
            data = data[:at] + draw(st.sampled_from(HUGE)) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 20)):]
        elif op == "dup":
            data = data[:at] + data[at:at + draw(st.integers(1, 40))] + data[at:]
    return data


@st.composite
def damaged_inputs(draw):
    """(files {name: bytes}, prepare arguments) for one fuzzed run."""
    kind = draw(st.sampled_from(KINDS))
    n = draw(st.integers(1, 25))
    rows = [(f"u{draw(st.integers(0, 4))}", draw(st.sampled_from(IDS)), draw(st.integers(0, 99)),
             draw(st.integers(1, 5))) for _ in range(n)]
    name, data, extra = _valid_log(kind, rows)
    data = draw(damage(data))
    if name != "log.txt" and draw(st.integers(0, 4)) == 0:
        name, data = name + ".gz", gzip.compress(data, mtime=0)
        if draw(st.booleans()):
            data = draw(damage(data))  # a damaged gzip stream
    files = {name: data}
    args = ["--interactions", name, "--kcore", str(draw(st.sampled_from([1, 1, 2]))), *extra]
    if kind != "sequences" and draw(st.integers(0, 3)) == 0:
        args += ["--min-rating", "3"]
    if draw(st.integers(0, 2)) == 0:
        files["items.csv"] = draw(damage(_items_csv(sorted({r[1] for r in rows}))))
        args += ["--items", "items.csv", "--text-columns", "title", "--image-column", "image",
                 "--drop-unknown"]
    return files, args


def _run(case) -> None:
    files, args = case
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "media").mkdir()
        (root / "media" / "a.png").write_bytes(b"png")
        for name, data in files.items():
            (root / name).write_bytes(data)
        args = [str(root / a) if a in files else a for a in args]
        code, _, err = cli("prepare", *args, "--out", root / "ds")
        assert "Traceback" not in err, err
        if code == 0:
            OUTCOMES["prepared"] += 1
            ds = load_dataset(root / "ds")
            assert ds.user_ids and ds.item_ids
            assert all(isinstance(i, str) for i in ds.item_ids + ds.user_ids)
            for p in ds.items["image"].drop_nulls().to_list():
                assert p.startswith(str(root)), p  # media stay inside the items' folder
        else:
            OUTCOMES["rejected"] += 1
            lines = err.strip().splitlines()
            assert code == 1, err
            assert len(lines) == 1 and lines[0].startswith("error: "), err


COMMON = dict(deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])


@settings(max_examples=40, **COMMON)
@given(damaged_inputs())
def _short(case):
    _run(case)


@settings(max_examples=1500, **COMMON)
@given(damaged_inputs())
def _long(case):
    _run(case)


def test_fuzzed_inputs_prepare_or_fail_in_one_line():
    OUTCOMES.update(prepared=0, rejected=0)
    _short()
    assert OUTCOMES["prepared"] >= 5 and OUTCOMES["rejected"] >= 5, OUTCOMES  # both paths


@pytest.mark.slow
def test_fuzzed_inputs_prepare_or_fail_in_one_line_long():
    OUTCOMES.update(prepared=0, rejected=0)
    _long()
    assert OUTCOMES["prepared"] >= 100 and OUTCOMES["rejected"] >= 100, OUTCOMES
