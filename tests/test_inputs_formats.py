"""Inputs people have (issue 15): gzip for every format, Amazon review JSON lines, RecBole atomic
files, MovieLens-1M `::` files, column auto-detection, --preset and --min-rating. Every file is
written here in the layout of the real one."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from helpers import run_cli as cli
from vmr.data.dataset import load_dataset


def error_line(code: int, err: str, *needles: str) -> str:
    """The single `error: ...` line of a failed run (exit 1, nothing else on stderr)."""
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def prepared(tmp_path, *args, name="ds"):
    """Run prepare (kcore 1 unless given); return (Dataset, dataset.json, stdout)."""
    out = tmp_path / name
    extra = [] if "--kcore" in args else ["--kcore", "1"]
    code, stdout, err = cli("prepare", *args, *extra, "--out", out)
    assert code == 0, err
    return load_dataset(out), json.loads((out / "dataset.json").read_text()), stdout


def seqs(d) -> dict[str, list[str]]:
    return {u: [d.item_ids[k] for k in s] for u, s in zip(d.user_ids, d.sequences)}


# (user, item, rating, time) in file order; sorted by time per user below
RATED = [("u1", "i1", "5", "30"), ("u1", "i2", "2", "10"), ("u2", "i1", "4", "5"),
         ("u1", "i3", "4", "20"), ("u2", "i3", "1", "7"), ("u2", "i2", "3", "6")]
ALL = {"u1": ["i2", "i3", "i1"], "u2": ["i1", "i2", "i3"]}
AT_LEAST_3 = {"u1": ["i3", "i1"], "u2": ["i1", "i2"]}


def gz(path, data: bytes):
    path.write_bytes(gzip.compress(data))
    return path


# ------------------------------------------------------------------------------------- gzip
@pytest.mark.parametrize("name", ["log.csv", "log.tsv", "log.jsonl", "log.json", "log.parquet",
                                  "log.inter", "ratings.dat"])
def test_gzip_of_every_format_reads_like_the_plain_file(tmp_path, name):
    plain = tmp_path / name
    if name.endswith(".parquet"):
        pl.DataFrame({"user_id": [r[0] for r in RATED], "item_id": [r[1] for r in RATED],
                      "timestamp": [int(r[3]) for r in RATED]}).write_parquet(plain)
    elif name.endswith(".dat"):
        plain.write_text("".join("::".join(r) + "\n" for r in RATED))
    elif name.endswith((".jsonl", ".json")):
        plain.write_text("".join(json.dumps({"user_id": u, "item_id": i, "timestamp": int(t)})
                                 + "\n" for u, i, _, t in RATED))
    else:
        sep = "," if name.endswith(".csv") else "\t"
        head = ["user_id:token", "item_id:token", "timestamp:float"] if name.endswith(
            ".inter") else ["user_id", "item_id", "timestamp"]
        plain.write_text("\n".join(sep.join(r) for r in [head, *[(u, i, t) for u, i, _, t in
                                                                  RATED]]) + "\n")
    packed = gz(tmp_path / (name + ".gz"), plain.read_bytes())
    a, _, _ = prepared(tmp_path, "--interactions", plain, name="a")
    b, meta, _ = prepared(tmp_path, "--interactions", packed, name="b")
    assert seqs(a) == seqs(b) == ALL
    assert meta["inputs"]["interactions"]["path"].endswith(".gz")


def test_gzip_sequences_and_items(tmp_path):
    log = gz(tmp_path / "Beauty.txt.gz", b"007 1 2\n7 2 1\n")
    items = gz(tmp_path / "items.tsv.gz", b"item_id\ttitle\n1\tOne\n2\tTwo\n")
    d, meta, _ = prepared(tmp_path, "--interactions", log, "--format", "sequences", "--items",
                          items, "--text-columns", "title")
    assert seqs(d) == {"007": ["1", "2"], "7": ["2", "1"]}
    assert d.items["text"].to_list() == ["One", "Two"]


def test_damaged_gzip_is_a_one_line_error(tmp_path):
    good = gzip.compress(b"user,item,time\n" + b"a,b,1\n" * 2000)
    (tmp_path / "cut.csv.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "fake.csv.gz").write_bytes(b"user,item,time\na,b,1\n")
    for name in ("cut.csv.gz", "fake.csv.gz"):
        code, _, err = cli("prepare", "--interactions", tmp_path / name, "--out", tmp_path / "o")
        error_line(code, err, name, "gzip")


# ------------------------------------------------------------------------ column detection
@pytest.mark.parametrize("header,picked", [
    (["user_id", "item_id", "timestamp"], ("user_id", "item_id", "timestamp")),
    (["userId", "movieId", "rating", "timestamp"], ("userId", "movieId", "timestamp")),
    (["reviewerID", "asin", "overall", "unixReviewTime"], ("reviewerID", "asin",
                                                            "unixReviewTime")),
    (["ts", "item", "user"], ("user", "item", "ts")),
    (["itemId", "UserID", "Time"], ("UserID", "itemId", "Time")),  # case differs: still found
    (["user", "user_id", "item", "time"], ("user_id", "item", "time")),  # list order decides
])
def test_columns_are_detected_and_reported(tmp_path, header, picked):
    rows = [dict(zip(("user", "item", "time"), r)) for r in [(u, i, t) for u, i, _, t in RATED]]
    role = {picked[0]: "user", picked[1]: "item", picked[2]: "time"}
    lines = [",".join(header)]
    for r in rows:
        lines.append(",".join(r.get(role.get(h, ""), "4") for h in header))
    log = tmp_path / "log.csv"
    log.write_text("\n".join(lines) + "\n")
    d, meta, stdout = prepared(tmp_path, "--interactions", log)
    assert seqs(d) == ALL
    assert (meta["columns"]["user"], meta["columns"]["item"], meta["columns"]["time"]) == picked
    assert meta["columns"]["detected"] == ["user", "item", "time"]
    assert (f"columns       user '{picked[0]}', item '{picked[1]}', time '{picked[2]}' "
            f"(detected)") in stdout


def test_explicit_columns_win_over_detection(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user_id,who,item_id,what,timestamp\n" + "".join(
        f"x,{u},y,{i},{t}\n" for u, i, _, t in RATED))
    d, meta, stdout = prepared(tmp_path, "--interactions", log, "--user-col", "who",
                               "--item-col", "what")
    assert seqs(d) == ALL
    assert meta["columns"]["detected"] == ["time"]
    assert "user 'who', item 'what' (given), time 'timestamp' (detected)" in stdout


def test_no_detectable_column_is_a_clear_error(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("person,thing,when\na,b,1\n")
    code, _, err = cli("prepare", "--interactions", log, "--out", tmp_path / "o")
    error_line(code, err, "log.csv", "no user column", "user_id, userId, reviewerID, user",
               "--user-col", "person, thing, when")
    code, _, err = cli("prepare", "--interactions", log, "--user-col", "person", "--item-col",
                       "thing", "--out", tmp_path / "o")
    error_line(code, err, "no time column", "--time-col")


# ------------------------------------------------------------------------- Amazon reviews
AMAZON = [
    {"reviewerID": "A2", "asin": "B001", "reviewerName": "Jo", "helpful": [1, 2],
     "reviewText": "Nice.", "overall": 5.0, "summary": "ok", "unixReviewTime": 1400000300,
     "reviewTime": "05 13, 2014"},
    {"reviewerID": "A2", "asin": "0002", "overall": 2.0, "unixReviewTime": 1400000100},
    {"reviewerID": "A1", "asin": "B001", "overall": 4.0, "unixReviewTime": 1400000000},
    {"reviewerID": "A2", "asin": "2", "overall": 3.0, "unixReviewTime": 1400000200},
    {"reviewerID": "A1", "asin": "0002", "overall": 1.0, "unixReviewTime": 1400000400},
]


def test_amazon_review_json_lines_with_preset_and_min_rating(tmp_path):
    log = gz(tmp_path / "reviews_Beauty_5.json.gz",
             "".join(json.dumps(r) + "\n" for r in AMAZON).encode())
    d, meta, stdout = prepared(tmp_path, "--interactions", log, "--preset", "amazon")
    assert seqs(d) == {"A2": ["0002", "2", "B001"], "A1": ["B001", "0002"]}  # 0002 != 2
    assert ("user 'reviewerID', item 'asin', time 'unixReviewTime' (amazon preset)"
            in stdout)
    d, meta, stdout = prepared(tmp_path, "--interactions", log, "--min-rating", "3",
                               name="rated")
    assert seqs(d) == {"A2": ["2", "B001"], "A1": ["B001"]}
    assert meta["dropped"]["min_rating_interactions"] == 2
    assert meta["columns"]["rating"] == "overall"
    assert "2 rated below 3" in stdout


def test_amazon_2014_metadata_python_literal_lines(tmp_path):
    """Amazon's 2014 metadata files are Python dict literals, one per line."""
    log = tmp_path / "reviews.json"
    log.write_text("".join(json.dumps(r) + "\n" for r in AMAZON))
    meta_lines = [
        "{'asin': 'B001', 'title': 'Soap', 'categories': [['Beauty', 'Bath']], 'price': 3.5}",
        "{'asin': '0002', 'title': \"Kid's shampoo\", 'brand': 'Acme'}",
        "{'asin': '2', 'description': 'No title'}",
    ]
    items = tmp_path / "meta_Beauty.json"
    items.write_text("\n".join(meta_lines) + "\n")
    d, meta, stdout = prepared(tmp_path, "--interactions", log, "--items", items, "--preset",
                               "amazon")
    texts = dict(zip(d.items["item"].to_list(), d.items["text"].to_list()))
    assert texts == {"B001": "Soap. Beauty, Bath", "0002": "Kid's shampoo. Acme", "2": None}
    assert "item columns  id 'asin' (as in the log), text 'title,brand,categories' (amazon " \
        "preset)" in stdout
    items.write_text("{'asin': 17, 'title': 'x'}\n")
    code, _, err = cli("prepare", "--interactions", log, "--items", items, "--out",
                       tmp_path / "o")
    error_line(code, err, "meta_Beauty.json", "line 1", "not a quoted string")


def test_min_rating_needs_a_rating_column(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user,item,time\na,b,1\n")
    code, _, err = cli("prepare", "--interactions", log, "--min-rating", "4", "--out",
                       tmp_path / "o")
    error_line(code, err, "log.csv", "no rating column", "rating, overall", "--rating-col")
    seq = tmp_path / "s.txt"
    seq.write_text("a b c\n")
    code, _, err = cli("prepare", "--interactions", seq, "--format", "sequences",
                       "--min-rating", "4", "--out", tmp_path / "o")
    error_line(code, err, "--min-rating", "sequences")
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,time,score\na,b,1,5\na,c,2,great\n")
    code, _, err = cli("prepare", "--interactions", bad, "--min-rating", "4", "--rating-col",
                       "score", "--out", tmp_path / "o")
    error_line(code, err, "bad.csv", "line 3", "'great'", "'score'")
    code, _, err = cli("prepare", "--interactions", bad.with_name("log.csv"), "--min-rating",
                       "4", "--rating-col", "nope", "--out", tmp_path / "o")
    error_line(code, err, "'nope'", "--rating-col")
    code, _, err = cli("prepare", "--interactions", bad, "--rating-col", "score", "--out",
                       tmp_path / "o")
    error_line(code, err, "--rating-col", "--min-rating")


# ---------------------------------------------------------------------------------- RecBole
def test_recbole_atomic_files(tmp_path):
    inter = tmp_path / "ml.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATED))
    item = tmp_path / "ml.item"
    item.write_text("item_id:token\ttitle:token_seq\tgenre:token_seq\n"
                    "i1\t\"Quoted\" title\tDrama\ni2\tSecond\tComedy Drama\ni3\tThird\t\n")
    d, meta, stdout = prepared(tmp_path, "--interactions", inter, "--items", item, "--preset",
                               "recbole", "--text-columns", "title,genre", "--min-rating", "3")
    assert seqs(d) == AT_LEAST_3
    texts = dict(zip(d.items["item"].to_list(), d.items["text"].to_list()))
    assert texts == {"i1": '"Quoted" title. Drama', "i2": "Second. Comedy Drama",
                     "i3": "Third"}
    assert meta["columns"]["rating"] == "rating"
    # a typed header on any TSV is read the same way; without a preset the names are detected
    plain = tmp_path / "log.tsv"
    plain.write_bytes(inter.read_bytes())
    d, _, stdout = prepared(tmp_path, "--interactions", plain, name="tsv")
    assert seqs(d) == ALL and "user 'user_id', item 'item_id', time 'timestamp' (detected)" in \
        stdout


def test_typed_header_naming_a_column_twice_is_an_error(tmp_path):
    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\titem_id:float\ttimestamp:float\na\tb\t1\t2\n")
    code, _, err = cli("prepare", "--interactions", inter, "--out", tmp_path / "o")
    error_line(code, err, "x.inter", "'item_id' appears more than once")
    csv_twice = tmp_path / "twice.csv"
    csv_twice.write_text("user,user,item,time\na,b,c,1\n")
    code, _, err = cli("prepare", "--interactions", csv_twice, "--out", tmp_path / "o")
    error_line(code, err, "twice.csv", "'user' appears more than once")


# ------------------------------------------------------------------------------- MovieLens
def test_movielens_1m_dat_files(tmp_path):
    ratings = tmp_path / "ratings.dat"
    ratings.write_text("".join(f"{u[1:]}::{i[1:]}::{r}::{978300000 + int(t)}\n"
                               for u, i, r, t in RATED))
    movies = tmp_path / "movies.dat"
    movies.write_bytes("1::Toy Story (1995)::Animation|Children's\n"
                       "2::Jumanji (1995)::Adventure\n"
                       "3::Misérables, Les (1995)::Drama\n".encode("latin-1"))
    d, meta, stdout = prepared(tmp_path, "--interactions", ratings, "--items", movies,
                               "--preset", "movielens", "--min-rating", "3")
    assert seqs(d) == {"1": ["3", "1"], "2": ["1", "2"]}
    texts = dict(zip(d.items["item"].to_list(), d.items["text"].to_list()))
    assert texts["3"] == "Misérables, Les (1995). Drama"  # Latin-1 decoded
    assert texts["1"] == "Toy Story (1995). Animation|Children's"
    assert meta["dropped"]["min_rating_interactions"] == 2
    # the same files without the preset: columns detected, items matched on item_id
    d, _, _ = prepared(tmp_path, "--interactions", ratings, "--items", movies,
                       "--text-columns", "title", name="plain")
    assert seqs(d) == {"1": ["2", "3", "1"], "2": ["1", "2", "3"]}


def test_movielens_latest_csv_with_preset(tmp_path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{r}.0,{t}\n" for u, i, r, t in RATED))
    movies = tmp_path / "movies.csv"
    movies.write_text('movieId,title,genres\ni1,"Heat, The (1995)",Action\ni2,B,Drama\n'
                      'i3,C,(no genres listed)\n')
    d, meta, _ = prepared(tmp_path, "--interactions", ratings, "--items", movies, "--preset",
                          "movielens", "--min-rating", "3.5")
    assert seqs(d) == {"u1": ["i3", "i1"], "u2": ["i1"]}
    heat = d.items.filter(pl.col("item") == "i1")["text"].to_list()
    assert heat == ["Heat, The (1995). Action"]
    assert meta["columns"]["items_id"] == "movieId"


def test_dat_file_with_wrong_field_count(tmp_path):
    bad = tmp_path / "ratings.dat"
    bad.write_text("1::2::5::978300760\n1::3::4\n")
    code, _, err = cli("prepare", "--interactions", bad, "--out", tmp_path / "o")
    error_line(code, err, "ratings.dat", "line 2", "3 fields")
    odd = tmp_path / "odd.dat"
    odd.write_text("1::2\n")
    code, _, err = cli("prepare", "--interactions", odd, "--out", tmp_path / "o")
    error_line(code, err, "odd.dat", "line 1", "ratings.dat")
