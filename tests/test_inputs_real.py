"""Real files (the shared Amazon Beauty data): RecBole's gzipped atomic item file
`Amazon_Beauty.item.gz` as the item table of a RecBole `.inter` log and of an Amazon-style review
JSON-lines log, both keyed by ASIN and rebuilt from S3-Rec's `Beauty.txt` and its id maps."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import BEAUTY
from test_inputs_formats import prepared


@pytest.fixture(scope="module")
def beauty_asin_rows():
    """(reviewerID, asin, position) of every Beauty interaction, in Beauty.txt order."""
    beauty = BEAUTY
    if not (beauty / "Amazon_Beauty.item.gz").exists():
        pytest.skip(f"Amazon Beauty data not found at {beauty} (set VMR_SHARED)")
    maps = json.loads(gzip.decompress((beauty / "Beauty_datamaps.json.gz").read_bytes()))
    rows = []
    for line in (beauty / "Beauty.txt").read_text().splitlines():
        user, *items = line.split()
        rows += [(maps["id2user"][user], maps["id2item"][i], t) for t, i in enumerate(items)]
    return beauty, rows


@pytest.mark.parametrize("fmt", ["inter", "json"])
def test_beauty_with_recbole_item_file(tmp_path, beauty_asin_rows, fmt):
    beauty, rows = beauty_asin_rows
    if fmt == "inter":
        log = tmp_path / "Amazon_Beauty.inter.gz"
        text = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
            f"{u}\t{i}\t{t}\n" for u, i, t in rows)
        extra = ["--preset", "recbole"]
    else:
        log = tmp_path / "reviews_Beauty_5.json.gz"
        text = "".join(json.dumps({"reviewerID": u, "asin": i, "overall": 5.0,
                                   "unixReviewTime": 1400000000 + t}) + "\n" for u, i, t in rows)
        extra = ["--text-columns", "title,brand,categories"]
    log.write_bytes(gzip.compress(text.encode(), compresslevel=1))
    d, meta, stdout = prepared(tmp_path, "--interactions", log, "--items",
                               beauty / "Amazon_Beauty.item.gz", "--kcore", "5", *extra)
    assert (d.n_users, d.n_items, meta["interactions"]) == (22363, 12101, 198502)
    assert meta["coverage"]["text"] == 12101
    assert meta["columns"]["items_id"] == "item_id"
    opi = d.items.row(d.item_index["B004756YJA"], named=True)["text"]
    assert opi.startswith("OPI Nail Lacquer") and "'Nail Polish'" in opi
