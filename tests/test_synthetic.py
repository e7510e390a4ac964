"""The synthetic demo catalogue: files decode, the planted structure is there, it is seeded."""

import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vmr.data.prepare import PrepareOptions, prepare_dataset
from vmr.data.synthetic import generate_catalogue


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    t0 = time.perf_counter()
    paths = generate_catalogue(out, progress=False)  # default size
    seconds = time.perf_counter() - t0
    truth = json.loads(Path(paths["truth"]).read_text())
    with open(paths["items"], newline="", encoding="utf-8") as f:
        items = list(csv.DictReader(f))
    with open(paths["interactions"], newline="", encoding="utf-8") as f:
        log = list(csv.DictReader(f))
    return {"paths": paths, "truth": truth, "items": items, "log": log, "seconds": seconds,
            "out": out}


def test_files_and_ids(catalogue):
    items, log, truth = catalogue["items"], catalogue["log"], catalogue["truth"]
    assert catalogue["seconds"] < 30
    assert len(items) == 240 and list(items[0]) == ["item_id", "title", "description", "image",
                                                    "video"]
    assert items[7]["item_id"] == "v0007"
    assert len({r["user"] for r in log}) == 1200
    assert all(r["user"].startswith("u") and len(r["user"]) == 6 for r in log)
    times = [int(r["time"]) for r in log]
    assert times == sorted(times)  # a global log in time order
    lengths = np.bincount(np.unique([r["user"] for r in log], return_inverse=True)[1])
    assert lengths.min() >= 5 and lengths.max() <= 20
    missing = truth["missing"]
    assert len(missing) == 24  # missing_rate 0.1 of 240
    assert set(missing.values()) == {"video", "image", "text"}
    root = Path(catalogue["paths"]["root"])
    for r in items:
        gone = missing.get(r["item_id"], "")
        assert (r["video"] == "") == (gone == "video")
        assert (r["image"] == "") == (gone == "image")
        assert (r["title"] == "" and r["description"] == "") == (gone == "text")
        for key in ("image", "video"):
            if r[key]:
                assert not Path(r[key]).is_absolute() and (root / r[key]).is_file()
    assert {Path(r["image"]).suffix for r in items if r["image"]} == {".png", ".jpg"}


def test_media_decode(catalogue):
    import decord

    root = Path(catalogue["paths"]["root"])
    videos = [r["video"] for r in catalogue["items"] if r["video"]]
    for rel in videos[:40]:
        vr = decord.VideoReader(str(root / rel))
        assert len(vr) == 24
        frames = vr.get_batch([0, 12, 23]).asnumpy()
        assert frames.shape == (3, 64, 64, 3)
        assert frames[0].std() > 5  # not a blank frame
        assert np.abs(frames[0].astype(int) - frames[2]).mean() > 1  # things move
    cap = cv2.VideoCapture(str(root / videos[0]))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 24
    for r in catalogue["items"][:40]:
        if r["image"]:
            img = cv2.imread(str(root / r["image"]))
            assert img is not None and img.shape == (64, 64, 3)


def _sequences(log):
    seqs = {}
    for r in log:  # rows are in time order already
        seqs.setdefault(r["user"], []).append(r["item"])
    return seqs


def test_next_topic_follows_transition_matrix(catalogue):
    truth = catalogue["truth"]
    topic, T = truth["item_topic"], np.array(truth["transition"])
    assert np.allclose(T.sum(1), 1.0)
    hits = total = 0
    for seq in _sequences(catalogue["log"]).values():
        for a, b in zip(seq, seq[1:]):
            hits += int(np.argmax(T[topic[a]]) == topic[b])
            total += 1
    acc = hits / total
    assert acc > 0.45, acc  # chance is 1/8


def test_text_and_pictures_reveal_topics(catalogue):
    truth = catalogue["truth"]
    topic, words = truth["item_topic"], truth["topic_words"]
    n = truth["n_topics"]
    owner = {w: t for t, ws in enumerate(words) for w in ws}
    text_hits = text_total = 0
    for r in catalogue["items"]:
        toks = (r["title"] + " " + r["description"]).lower().replace(".", " ").split()
        votes = np.bincount([owner[w] for w in toks if w in owner], minlength=n)
        if votes.sum():
            text_hits += int(np.argmax(votes) == topic[r["item_id"]])
            text_total += 1
    assert text_total >= 200 and text_hits / text_total > 0.95
    # the shape colour's hue names the topic
    root = Path(catalogue["paths"]["root"])
    pic_hits = pic_total = 0
    for r in catalogue["items"]:
        if not r["image"]:
            continue
        hsv = cv2.cvtColor(cv2.imread(str(root / r["image"])), cv2.COLOR_BGR2HSV)
        fg = (hsv[..., 1] > 150) & (hsv[..., 2] > 150)
        hue = float(np.median(hsv[..., 0][fg]))
        dist = [min(abs(hue - 180 * t / n), 180 - abs(hue - 180 * t / n)) for t in range(n)]
        pic_hits += int(np.argmin(dist) == topic[r["item_id"]])
        pic_total += 1
    assert pic_hits / pic_total > 0.9


def test_prepare_keeps_everything(catalogue, tmp_path):
    paths = catalogue["paths"]
    summary = prepare_dataset(PrepareOptions(
        interactions=paths["interactions"], items=paths["items"], items_id_col="item_id",
        text_columns=["title", "description"], image_column="image", video_column="video",
        out=str(tmp_path / "ds")))
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["users"] == 1200 and meta["items"] == 240
    assert meta["interactions"] == len(catalogue["log"])
    gone = list(catalogue["truth"]["missing"].values())
    assert meta["coverage"] == {m: 240 - gone.count(m) for m in ("text", "image", "video")}
    assert "1,200" in summary


def test_seeded_and_reproducible(tmp_path):
    kw = dict(n_items=24, n_users=40, n_topics=3, video_seconds=1.0, progress=False)
    a = generate_catalogue(tmp_path / "a", seed=3, **kw)
    b = generate_catalogue(tmp_path / "b", seed=3, **kw)
    c = generate_catalogue(tmp_path / "c", seed=4, **kw)
    for key in ("items", "interactions", "truth"):
        assert Path(a[key]).read_bytes() == Path(b[key]).read_bytes()
    assert Path(a["interactions"]).read_bytes() != Path(c["interactions"]).read_bytes()
    pics = sorted(p.name for p in Path(a["media"]).iterdir())
    assert pics == sorted(p.name for p in Path(b["media"]).iterdir())
    for name in pics:
        pa, pb = Path(a["media"]) / name, Path(b["media"]) / name
        if name.endswith(".mp4"):
            fa, fb = _frames(pa), _frames(pb)
            assert len(fa) == 8 and all(np.array_equal(x, y) for x, y in zip(fa, fb))
        else:
            assert pa.read_bytes() == pb.read_bytes()


def _frames(path):
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)
