"""`vmr gallery`: a static HTML site of a run's recommendations (thumbnails of images, frame
strips of videos, text cards), checked file by file and link by link; the slow test opens it in
headless Chromium and saves the screenshot README.md shows (docs/img/gallery.png)."""

import csv
import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from helpers import cli_one_line, run_cli

REPO = Path(__file__).resolve().parent.parent
TEXT_ONLY = 2               # the first items of the catalogue lose their image and video


def make_catalogue(root: Path, n_items: int = 16, n_topics: int = 2) -> Path:
    """A generated catalogue (videos, cover images, text) with a few text-only items,
    prepared into root/ds."""
    from vmr.data.synthetic import generate_catalogue

    paths = generate_catalogue(root, n_items=n_items, n_users=50, n_topics=n_topics,
                               video_seconds=1.0, video_fps=4, size=32, missing_rate=0.0,
                               progress=False)
    rows = list(csv.reader(open(paths["items"], encoding="utf-8")))
    for r in rows[1:1 + TEXT_ONLY]:
        r[3] = r[4] = ""
    with open(paths["items"], "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    code, _, err = run_cli("prepare", "--interactions", paths["interactions"], "--items",
                           paths["items"], "--items-id-col", "item_id", "--text-columns",
                           "title,description", "--image-column", "image", "--video-column",
                           "video", "--kcore", "1", "--out", root / "ds")
    assert code == 0, err
    return root / "ds"


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    ds = make_catalogue(root)
    code, _, err = run_cli("train", "--data", ds, "--set", "model.kind=pop", "--out", root / "pop")
    assert code == 0, err
    return root / "pop"


def links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return [html.unescape(x) for x in re.findall(r'(?:href|src)="([^"]+)"', text)]


def test_gallery_pages_thumbnails_and_relative_links(pop_run, tmp_path):
    from PIL import Image

    from vmr.data.dataset import load_dataset

    out = tmp_path / "site"
    code, stdout, err = run_cli("gallery", "--run", pop_run, "--users", 4, "--top", 6,
                                "--out", out)
    assert code == 0, err
    assert str(out / "index.html") in stdout
    doc = json.loads((out / "gallery.json").read_text())
    assert doc["top"] == 6 and len(doc["users"]) == 4
    ds = load_dataset(json.loads((pop_run / "run.json").read_text())["data"])
    test_users = [ds.user_ids[u] for u in ds.split_users("test")[:4]]
    assert [e["user"] for e in doc["users"]] == test_users

    index = out / "index.html"
    pages = links(index)
    assert sorted(pages) == sorted(e["page"] for e in doc["users"])
    seen_images = set()
    for e in doc["users"]:
        page = out / e["page"]
        text = page.read_text(encoding="utf-8")
        for link in links(page):
            assert not re.match(r"^[a-z]+:|^/", link), f"{page}: absolute link {link}"
            target = (page.parent / unquote(link)).resolve()
            assert target.is_file(), f"{page}: broken link {link}"
            assert out.resolve() in target.parents
            if link.endswith(".jpg"):
                seen_images.add(target)
        # the user's history and held-out test item, as the dataset has them
        u = ds.user_ids.index(e["user"])
        seq = ds.sequences[u]
        target_id = ds.item_ids[int(seq[-1])]
        assert e["target"] == target_id and e["history"] == len(seq) - 1
        assert text.count('class="card target"') == 1 + int(e["hit"])
        assert f'<div class="id">{html.escape(target_id)}</div>' in text
        left = len(ds.item_ids) - len(set(seq[:-1].tolist()))   # history items are left out
        assert text.count("score ") == min(6, left)
    # thumbnails: cover images are square crops, video thumbnails strips of frames
    assert seen_images
    shapes = {p.name.rsplit("-", 1)[1]: Image.open(p).size for p in seen_images}
    assert "image.jpg" in shapes and "video.jpg" in shapes
    for p in seen_images:
        w, h = Image.open(p).size
        if p.name.endswith("-video.jpg"):
            assert w >= 2 * h, (p, w, h)
        else:
            assert w == h == 128
    assert '<body>' in index.read_text() and "data-status" in index.read_text()


def test_text_only_items_get_a_text_card(pop_run, tmp_path):
    """Items without image or video show their text, and no <img>."""
    from vmr.data.dataset import load_dataset
    from vmr.model.loaded import load_run
    from vmr.serve.gallery import Thumbnails

    loaded = load_run(pop_run)
    ds = load_dataset(loaded.info["data"])
    (tmp_path / "thumbs").mkdir()
    th = Thumbnails(ds, tmp_path / "thumbs")
    for i in range(TEXT_ONLY):
        card = th.card(i)
        assert "<img" not in card and 'class="text"' in card
        assert html.escape(ds.items["title"][i]) in card
    card = th.card(TEXT_ONLY)
    assert card.count("<img") == 2           # image and video strip
    assert len(list((tmp_path / "thumbs").iterdir())) == 2


def test_gallery_refuses_a_foreign_folder_and_rewrites_its_own(pop_run, tmp_path):
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    line = cli_one_line("gallery", "--run", pop_run, "--users", 1, "--out", foreign)
    assert "not a vmr gallery" in line and (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "g"
    assert run_cli("gallery", "--run", pop_run, "--users", 3, "--out", out)[0] == 0
    assert len(list((out / "users").iterdir())) == 3
    assert run_cli("gallery", "--run", pop_run, "--users", 1, "--out", out)[0] == 0
    assert len(list((out / "users").iterdir())) == 1      # the old pages are gone
    assert "not found" in cli_one_line("gallery", "--run", tmp_path / "nope", "--out", out)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _headless(exe: str, profile: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                           "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_gallery_in_headless_chromium(tmp_path):
    """Every page loads in a real browser without console errors and with every image decoded
    (the page's own script writes data-status); a screenshot goes to docs/img/gallery.png."""
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from PIL import Image

    ds = make_catalogue(tmp_path, n_items=40, n_topics=4)
    code, _, err = run_cli("train", "--data", ds, "--set", "model.kind=sasrec", "--set",
                           "train.epochs=6", "--set", "model.d_model=32", "--set",
                           "train.amp=false", "--out", tmp_path / "run")
    assert code == 0, err
    out = tmp_path / "site"
    assert run_cli("gallery", "--run", tmp_path / "run", "--users", 5, "--top", 8,
                   "--out", out)[0] == 0
    doc = json.loads((out / "gallery.json").read_text())
    pages = [out / "index.html"] + [out / e["page"] for e in doc["users"]]
    for page in pages:
        r = _headless(exe, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom",
                      page.as_uri())
        assert r.returncode == 0, r.stderr[-2000:]
        body = re.search(r"<body[^>]*>", r.stdout).group(0)
        assert 'data-status="ok"' in body, (page, body)
        n_img = page.read_text().count("<img")
        assert f'data-images="{n_img}/{n_img}"' in body, (page, body)
        console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln]
        assert not console, console
    shot = tmp_path / "shot.png"
    shortest = min(doc["users"], key=lambda e: e["history"])     # the most fits on screen
    r = _headless(exe, tmp_path / "profile", "--hide-scrollbars", "--window-size=1000,760",
                  f"--screenshot={shot}", (out / shortest["page"]).as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    import numpy as np

    colours = np.unique(np.asarray(img).reshape(-1, 3), axis=0)
    assert img.size == (1000, 760) and len(colours) > 50                # not a blank page
    dest = REPO / "docs" / "img" / "gallery.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=128).save(dest, optimize=True)                 # small enough to commit
    assert dest.stat().st_size < 250_000
