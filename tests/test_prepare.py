"""`vmr prepare` and `load_dataset`: formats, ordering, split, ids, bad input, Beauty."""

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import run_cli, run_process
from vmr.data.dataset import Dataset, load_dataset
from vmr.data.prepare import PrepareOptions, prepare_dataset
from vmr.data.splits import split_labels
from vmr.errors import VmrError

REPO = Path(__file__).resolve().parent.parent

# (user, item, time): file order differs from time order; (007, 1) and (007, a) tie at 10.
LOG = [
    ("7", "a", 30), ("007", "1", 10), ("7", "001", 10), ("007", "b", 5), ("u3", "a", 1),
    ("007", "a", 10), ("7", "b", 20), ("u3", "b", 2), ("007", "001", 40),
]
EXPECTED = {  # users in order of first appearance, each in stable time order
    "7": (["001", "b", "a"], ["train", "valid", "test"]),
    "007": (["b", "1", "a", "001"], ["train", "train", "valid", "test"]),
    "u3": (["a", "b"], ["train", "test"]),
}


def write_table(path: Path, header, rows) -> Path:
    kind = path.suffix
    if kind in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="," if kind == ".csv" else "\t")
            w.writerow(header)
            w.writerows(rows)
    elif kind == ".parquet":
        cols = list(zip(*rows))
        pl.DataFrame({h: list(c) for h, c in zip(header, cols)}).write_parquet(path)
    else:
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(dict(zip(header, r))) + "\n")
    return path


def check_error(code, err, *needles):
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, err)
    assert "Traceback" not in err


def prep(tmp_path, inter, *extra, name="ds"):
    out = tmp_path / name
    code, stdout, err = run_cli("prepare", "--interactions", inter, "--out", out, *extra)
    assert code == 0, err
    return out, stdout, err


# ---------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("ext", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_table_formats_order_split_and_ids(tmp_path, ext):
    log = write_table(tmp_path / f"log{ext}", ["uid", "iid", "ts"], LOG)
    out, stdout, _ = prep(tmp_path, log, "--user-col", "uid", "--item-col", "iid",
                          "--time-col", "ts", "--kcore", "1")
    inter = pl.read_parquet(out / "interactions.parquet")
    assert inter.schema == pl.Schema({"user": pl.String, "item": pl.String, "time": pl.Float64,
                                      "split": pl.String})
    got = {}
    for user, item, split in inter.select("user", "item", "split").iter_rows():
        got.setdefault(user, ([], []))
        got[user][0].append(item)
        got[user][1].append(split)
    assert list(got) == ["7", "007", "u3"]  # grouped, first-appearance order, 007 != 7
    assert {u: (a, b) for u, (a, b) in got.items()} == EXPECTED
    items = pl.read_parquet(out / "items.parquet")
    assert items["item"].to_list() == ["a", "1", "001", "b"]  # first appearance, 1 != 001
    assert items.schema == pl.Schema({c: pl.String for c in
                                      ("item", "text", "title", "image", "video")})
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["format"], meta["users"], meta["items"], meta["interactions"]) == (1, 3, 4, 9)
    assert meta["splits"] == {"train": 4, "valid": 2, "test": 3}
    assert len(meta["inputs_sha256"]) == 64
    assert "users" in stdout and "9" in stdout


def test_iso_datetimes_and_dates(tmp_path):
    iso = [(u, i, f"2021-03-{t // 10 + 1:02d}T00:00:{t % 10:02d}") for u, i, t in LOG]
    iso[4] = ("u3", "a", "2021-02-27")  # a plain date mixes with datetimes
    log = write_table(tmp_path / "log.csv", ["user", "item", "time"], iso)
    out, _, _ = prep(tmp_path, log, "--kcore", "1")
    d = load_dataset(out)
    seqs = {u: [d.item_ids[k] for k in s] for u, s in zip(d.user_ids, d.sequences)}
    assert seqs == {u: v[0] for u, v in EXPECTED.items()}
    times = pl.read_parquet(out / "interactions.parquet")["time"].to_list()
    assert min(times) == pytest.approx(1614384000.0)  # 2021-02-27 UTC


def test_sequences_format_and_dataset_api(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("007 1 2 3 4\n\n7 2 3 1 9 9\nu3 1 2\nu4 4\n".replace("u4 4\n", "u4 4 1\n"))
    out, _, _ = prep(tmp_path, seq, "--format", "sequences", "--kcore", "1")
    inter = pl.read_parquet(out / "interactions.parquet")
    assert inter.filter(pl.col("user") == "7")["time"].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0]
    d = load_dataset(out)
    assert d.user_ids == ["007", "7", "u3", "u4"]
    assert d.item_ids == ["1", "2", "3", "4", "9"]
    assert d.item_index == {"1": 0, "2": 1, "3": 2, "4": 3, "9": 4}
    assert all(s.dtype == np.int64 for s in d.sequences)
    assert [s.tolist() for s in d.sequences] == [[0, 1, 2, 3], [1, 2, 0, 4, 4], [0, 1], [3, 0]]
    train = d.split_sequences("train")
    assert [s.tolist() for s in train] == [[0, 1], [1, 2, 0], [0], [3]]
    valid = d.split_sequences("valid")
    assert [(h.tolist(), t) for h, t in valid] == [([0, 1], 2), ([1, 2, 0], 4)]
    assert d.split_users("valid").tolist() == [0, 1]
    test = d.split_sequences("test")
    assert [(h.tolist(), t) for h, t in test] == [([0, 1, 2], 3), ([1, 2, 0, 4], 4), ([0], 1),
                                                 ([3], 0)]
    assert d.split_users("test").tolist() == [0, 1, 2, 3]
    with pytest.raises(VmrError, match="unknown split"):
        d.split_sequences("dev")
    by_hand = Dataset(item_ids=d.item_ids, user_ids=d.user_ids, items=d.items,
                      sequences=d.sequences, item_index=d.item_index, meta={})
    for split in ("train", "valid", "test"):
        assert repr(by_hand.split_sequences(split)) == repr(d.split_sequences(split))


def test_split_labels_by_sequence_length():
    users = [0] * 4 + [1] * 3 + [2] * 2 + [3]
    assert split_labels(users).tolist() == [
        "train", "train", "valid", "test", "train", "valid", "test", "train", "test", "train"]


def test_one_row_users_train_only(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("a x\nb x y\n")
    out, _, err = prep(tmp_path, seq, "--format", "sequences", "--kcore", "1")
    inter = pl.read_parquet(out / "interactions.parquet")
    assert inter["split"].to_list() == ["train", "train", "test"]
    d = load_dataset(out)
    assert d.split_users("test").tolist() == [1] and d.split_sequences("valid") == []
    assert "2 users with fewer than 3" in err


def test_kcore_applied_and_counted(tmp_path):
    rows = []
    for u in range(6):  # 6 users x items 0..4: a dense 5-core
        rows += [(f"u{u}", f"i{i}", i) for i in range(5)]
    rows += [("u0", "rare", 9), ("lonely", "i0", 1), ("lonely", "i1", 2)]
    log = write_table(tmp_path / "log.csv", ["user", "item", "time"], rows)
    out, stdout, _ = prep(tmp_path, log)
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["users"], meta["items"], meta["interactions"]) == (6, 5, 30)
    assert meta["dropped"]["kcore_interactions"] == 3
    assert meta["dropped"]["kcore_users"] == 1 and meta["dropped"]["kcore_items"] == 1
    assert "dropped 1 by 5-core" in stdout


def test_items_table_text_media_and_order(tmp_path):
    log = write_table(tmp_path / "log.csv", ["user", "item", "time"], LOG)
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.png").write_bytes(b"x")
    (media / "b.mp4").write_bytes(b"x")
    items = write_table(tmp_path / "items.tsv", ["item", "name", "brand", "img", "vid", "extra"], [
        ("b", "Blue thing", "Acme", "", "media/b.mp4", "x"),
        ("001", "Zero one.", "", "media/none.png", "", "y"),
        ("zzz", "never used", "", "", "", "z"),
        ("1", "", "", "", "", ""),
        ("a", "Alpha \"quoted\"", "Bee", "media/a.png", "", ""),
    ])
    out, stdout, err = prep(tmp_path, log, "--items", items, "--text-columns", "name,brand",
                            "--image-column", "img", "--video-column", "vid", "--kcore", "1")
    it = pl.read_parquet(out / "items.parquet")
    assert it["item"].to_list() == ["b", "001", "1", "a"]  # table order, unused row dropped
    assert it["text"].to_list() == ["Blue thing. Acme", "Zero one.", None, 'Alpha "quoted". Bee']
    assert it["title"].to_list() == ["Blue thing", "Zero one.", None, 'Alpha "quoted"']
    assert it["image"].to_list() == [None, None, None, str(media / "a.png")]
    assert it["video"].to_list() == [str(media / "b.mp4"), None, None, None]
    assert "1 image file named" in err and "none.png" in err  # warned on stderr
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["dropped"]["missing_image_files"] == 1
    assert meta["dropped"]["items_not_in_interactions"] == 1
    assert meta["coverage"] == {"text": 3, "image": 1, "video": 1}
    assert set(meta["inputs"]) == {"interactions", "items"}
    assert "warnings      2" in stdout  # the missing image, and user u3 has no valid item


def test_tsv_with_raw_quotes(tmp_path):
    """An unquoted TSV whose titles start with `"` keeps every row and every quote."""
    log = write_table(tmp_path / "log.csv", ["user", "item", "time"], LOG)
    items = tmp_path / "items.tsv"
    items.write_text('item\ttitle\na\t"Best" shampoo\nb\t12" ruler\n1\tplain\n'
                     '001\t"quoted"\n')
    out, _, _ = prep(tmp_path, log, "--items", items, "--text-columns", "title", "--kcore", "1")
    it = pl.read_parquet(out / "items.parquet")
    assert it["text"].to_list() == ['"Best" shampoo', '12" ruler', "plain", '"quoted"']


def test_items_default_id_column(tmp_path):
    log = write_table(tmp_path / "log.csv", ["user", "item", "time"], LOG)
    items = write_table(tmp_path / "items.jsonl", ["item_id", "title"],
                        [(x, f"t{x}") for x in ("a", "1", "001", "b")])
    out, _, _ = prep(tmp_path, log, "--items", items, "--text-columns", "title", "--kcore", "1")
    assert load_dataset(out).items["text"].to_list() == ["ta", "t1", "t001", "tb"]


def test_drop_unknown(tmp_path):
    log = write_table(tmp_path / "log.csv", ["user", "item", "time"], LOG)
    items = write_table(tmp_path / "items.csv", ["item"], [("a",), ("b",), ("1",)])
    code, _, err = run_cli("prepare", "--interactions", log, "--items", items, "--kcore", "1",
                           "--out", tmp_path / "x")
    check_error(code, err, "log.csv", "line 4", "'001'", "2 interactions", "--drop-unknown")
    out, _, err = prep(tmp_path, log, "--items", items, "--kcore", "1", "--drop-unknown")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["dropped"]["unknown_item_interactions"] == 2
    assert meta["interactions"] == 7


def test_atomic_write_keeps_old_dataset_or_none(tmp_path, monkeypatch):
    log = write_table(tmp_path / "log.csv", ["user", "item", "time"], LOG)
    out, _, _ = prep(tmp_path, log, "--kcore", "1")
    before = load_dataset(out).meta["inputs_sha256"]
    write_table(log, ["user", "item", "time"], LOG[:-1])

    real = pl.DataFrame.write_parquet
    calls = []

    def failing(self, file, *a, **k):
        calls.append(file)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, file, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing)
    code, _, err = run_cli("prepare", "--interactions", log, "--kcore", "1", "--out", out)
    check_error(code, err, "no space left on device")
    assert load_dataset(out).meta["inputs_sha256"] == before  # old dataset untouched
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "interactions.parquet",
                                                     "items.parquet"]  # no temp files left
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real)

    real_replace = os.replace
    n = []

    def crash_replace(src, dst):
        n.append(dst)
        if len(n) == 2:
            raise OSError(5, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_replace)
    code, _, err = run_cli("prepare", "--interactions", log, "--kcore", "1", "--out", out)
    check_error(code, err)
    with pytest.raises(VmrError, match="dataset.json is missing"):
        load_dataset(out)  # a half-written dataset never looks complete


# -------------------------------------------------------------------------------- bad input
@pytest.fixture
def log_csv(tmp_path):
    return write_table(tmp_path / "log.csv", ["user", "item", "time"], LOG)


def test_error_missing_file(tmp_path, log_csv):
    code, _, err = run_cli("prepare", "--interactions", tmp_path / "nope.csv", "--out",
                           tmp_path / "o")
    check_error(code, err, "nope.csv", "not found")
    code, _, err = run_cli("prepare", "--interactions", log_csv, "--items", tmp_path / "it.csv",
                           "--out", tmp_path / "o")
    check_error(code, err, "it.csv", "not found")


def test_error_missing_column_lists_columns(tmp_path, log_csv):
    code, _, err = run_cli("prepare", "--interactions", log_csv, "--time-col", "ts", "--out",
                           tmp_path / "o")
    check_error(code, err, "log.csv", "'ts'", "--time-col", "user, item, time")
    items = write_table(tmp_path / "items.csv", ["item", "title"], [("a", "x")])
    code, _, err = run_cli("prepare", "--interactions", log_csv, "--items", items,
                           "--text-columns", "title,desc", "--out", tmp_path / "o")
    check_error(code, err, "items.csv", "'desc'", "item, title")


def test_error_unparsable_time(tmp_path):
    rows = list(LOG)
    rows[3] = ("007", "b", "yesterday")
    log = write_table(tmp_path / "log.csv", ["user", "item", "time"], rows)
    code, _, err = run_cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    check_error(code, err, "log.csv", "line 5", "'yesterday'")


def test_error_empty_files(tmp_path, log_csv):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli("prepare", "--interactions", empty, "--out", tmp_path / "o")
    check_error(code, err, "empty.csv", "empty")
    header = tmp_path / "header.csv"
    header.write_text("user,item,time\n")
    code, _, err = run_cli("prepare", "--interactions", header, "--out", tmp_path / "o")
    check_error(code, err, "header.csv", "no rows")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n")
    code, _, err = run_cli("prepare", "--interactions", blank, "--format", "sequences",
                           "--out", tmp_path / "o")
    check_error(code, err, "blank.txt", "no sequences")


def test_error_duplicate_item_ids(tmp_path, log_csv):
    items = write_table(tmp_path / "items.csv", ["item", "title"],
                        [("a", "x"), ("1", "y"), ("001", "z"), ("1", "w")])
    code, _, err = run_cli("prepare", "--interactions", log_csv, "--items", items, "--out",
                           tmp_path / "o")
    check_error(code, err, "items.csv", "line 5", "duplicate item id '1'", "line 3")


def test_error_sequences_user_without_items(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("u1 a b c\n\nu2\nu3 a\n")
    code, _, err = run_cli("prepare", "--interactions", seq, "--format", "sequences",
                           "--out", tmp_path / "o")
    check_error(code, err, "seq.txt", "line 3", "'u2'", "no items")
    seq.write_text("u1 a b c\nu1 d\n")
    code, _, err = run_cli("prepare", "--interactions", seq, "--format", "sequences",
                           "--out", tmp_path / "o")
    check_error(code, err, "seq.txt", "line 2", "appears again")


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_error_null_ids(tmp_path, ext):
    rows = list(LOG)
    rows[2] = ("7", None, 10)
    log = write_table(tmp_path / f"log{ext}", ["user", "item", "time"], rows)
    code, _, err = run_cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    check_error(code, err, f"log{ext}", "line 4" if ext == ".csv" else "line 3", "empty item")
    rows = list(LOG)
    rows[5] = ("", "a", 10)
    log = write_table(tmp_path / f"log{ext}", ["user", "item", "time"], rows)
    code, _, err = run_cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    check_error(code, err, f"log{ext}", "empty user")


def test_error_null_item_id_in_items_table(tmp_path, log_csv):
    items = write_table(tmp_path / "items.csv", ["item", "title"], [("a", "x"), ("", "y")])
    code, _, err = run_cli("prepare", "--interactions", log_csv, "--items", items, "--out",
                           tmp_path / "o")
    check_error(code, err, "items.csv", "line 3", "empty item id")


def test_error_other_cases(tmp_path, log_csv):
    odd = tmp_path / "log.xlsx"
    odd.write_text("x")
    code, _, err = run_cli("prepare", "--interactions", odd, "--out", tmp_path / "o")
    check_error(code, err, "log.xlsx", "extension")
    code, _, err = run_cli("prepare", "--interactions", log_csv, "--kcore", "50", "--out",
                           tmp_path / "o")
    check_error(code, err, "log.csv", "--kcore 50")
    (tmp_path / "file").write_text("x")
    with pytest.raises(VmrError, match="not a directory"):
        prepare_dataset(PrepareOptions(interactions=str(log_csv), out=str(tmp_path / "file")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user": "a", "item": "b", "time": 1}\n{"user": "a", "item": \n')
    code, _, err = run_cli("prepare", "--interactions", bad, "--out", tmp_path / "o")
    check_error(code, err, "bad.jsonl", "line 2")
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("user\titem\ttime\na\tb\t1\na\tc\t2\t9\n")
    code, _, err = run_cli("prepare", "--interactions", ragged, "--out", tmp_path / "o")
    check_error(code, err, "ragged.tsv", "line 3", "4 fields")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"user,item,time\na,b,1\nb,caf\xe9,2\n")
    code, _, err = run_cli("prepare", "--interactions", latin, "--out", tmp_path / "o")
    check_error(code, err, "latin.csv", "line 3", "UTF-8")
    with pytest.raises(VmrError, match="dataset.json is missing"):
        load_dataset(tmp_path)


def test_subprocess_error_is_one_line(tmp_path):
    r = run_process("prepare", "--interactions", tmp_path / "missing.csv",
                    "--out", tmp_path / "o", timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.csv'}: interactions "
                                             f"file not found"]


# ---------------------------------------------------------------------------------- Beauty
def test_beauty_counts(tmp_path, beauty_dir):
    t0 = time.perf_counter()
    out, stdout, _ = prep(tmp_path, beauty_dir / "Beauty.txt", "--format", "sequences",
                          "--items", beauty_dir / "Beauty_items.tsv", "--items-id-col", "item_id",
                          "--text-columns", "title,brand,categories")
    assert "22,363" in stdout and "12,101" in stdout and "198,502" in stdout
    t1 = time.perf_counter()
    d = load_dataset(out)
    load_s = time.perf_counter() - t1
    assert (d.n_users, d.n_items, sum(len(s) for s in d.sequences)) == (22363, 12101, 198502)
    assert (d.meta["users"], d.meta["items"], d.meta["interactions"]) == (22363, 12101, 198502)
    assert "OPI" in d.items.row(d.item_index["1"], named=True)["text"]
    assert d.meta["coverage"]["text"] == 12101
    assert d.user_ids[:2] == ["1", "2"] and d.item_ids[:5] == ["1", "2", "3", "4", "5"]
    assert [d.item_ids[k] for k in d.sequences[1]] == ["6", "7", "8", "9", "10", "4", "11"]
    assert len(d.split_sequences("valid")) == 22363
    assert load_s < 2.0, load_s
    print(f"beauty prepare {t1 - t0:.2f}s, load {load_s:.2f}s")
