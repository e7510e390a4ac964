"""Media paths of the item table stay inside the media root (issue 14): `../../etc/passwd`,
`/etc/shadow`, `~/.bashrc`, `/proc/self/environ` are refused with one line naming the row and
the column; `--media-root` moves the root (`/` allows any path); dataset.json records it."""

from __future__ import annotations

import os

import pytest
from test_inputs_formats import cli, error_line, prepared

ESCAPES = ["../../../../etc/passwd", "/etc/shadow", "~/.bashrc", "/proc/self/environ",
           "media/../../outside.png", "media/../../../../../../../../etc/hosts"]


@pytest.fixture
def catalogue(tmp_path):
    """log.csv and, in tmp/cat/, media/a.png and media/b.mp4 (the items file goes there too)."""
    cat = tmp_path / "cat"
    (cat / "media").mkdir(parents=True)
    (cat / "media" / "a.png").write_bytes(b"png")
    (cat / "media" / "b.mp4").write_bytes(b"mp4")
    (tmp_path / "outside.png").write_bytes(b"png")
    log = tmp_path / "log.csv"
    log.write_text("user,item,time\nu,a,1\nu,b,2\nv,a,1\n")
    return tmp_path, cat, log


def items_file(cat, image_b: str, video_a: str = "media/b.mp4"):
    p = cat / "items.csv"
    p.write_text(f"item,title,image,video\na,A,media/a.png,{video_a}\nb,B,{image_b},\n")
    return p


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_outside_the_media_root_are_refused(catalogue, path):
    tmp, cat, log = catalogue
    items = items_file(cat, image_b=path)
    code, _, err = cli("prepare", "--interactions", log, "--items", items, "--image-column",
                       "image", "--video-column", "video", "--kcore", "1", "--out", tmp / "o")
    error_line(code, err, "items.csv", "line 3", "column 'image'", "outside the media root",
               str(cat), "--media-root")
    assert not (tmp / "o" / "dataset.json").exists()


def test_the_video_column_is_named_too(catalogue):
    tmp, cat, log = catalogue
    items = items_file(cat, image_b="", video_a="/etc/passwd")
    code, _, err = cli("prepare", "--interactions", log, "--items", items, "--video-column",
                       "video", "--kcore", "1", "--out", tmp / "o")
    error_line(code, err, "items.csv", "line 2", "video path '/etc/passwd'", "column 'video'")


def test_paths_inside_the_root_are_kept_and_the_root_recorded(catalogue):
    tmp, cat, log = catalogue
    items = items_file(cat, image_b=str(cat / "media" / "x" / ".." / "a.png"))
    d, meta, _ = prepared(tmp, "--interactions", log, "--items", items, "--image-column",
                          "image", "--video-column", "video")
    assert d.items["image"].to_list() == [str(cat / "media" / "a.png")] * 2
    assert d.items["video"].to_list() == [str(cat / "media" / "b.mp4"), None]
    assert meta["media_root"] == str(cat)
    assert meta["options"]["media_root"] is None  # the default: the items file's folder


def test_an_explicit_media_root(catalogue):
    tmp, cat, log = catalogue
    items = items_file(cat, image_b="../outside.png")
    # relative paths are relative to --media-root: here the parent of the items folder
    items.write_text("item,title,image,video\na,A,cat/media/a.png,\nb,B,outside.png,\n")
    d, meta, _ = prepared(tmp, "--interactions", log, "--items", items, "--image-column",
                          "image", "--media-root", tmp)
    want = [str(cat / "media" / "a.png"), str(tmp / "outside.png")]
    assert d.items["image"].to_list() == want
    assert meta["media_root"] == str(tmp)
    items.write_text("item,title,image,video\na,A,media/a.png,\nb,B,../outside.png,\n")
    code, _, err = cli("prepare", "--interactions", log, "--items", items, "--image-column",
                       "image", "--media-root", cat / "media", "--kcore", "1", "--out",
                       tmp / "o")
    # media/a.png is inside cat/media (as cat/media/media/a.png, missing); ../outside.png is not
    error_line(code, err, "line 3", "'../outside.png'", str(cat / "media"))


def test_media_root_slash_allows_any_path(catalogue):
    tmp, cat, log = catalogue
    items = items_file(cat, image_b="/etc/passwd")
    a_png = cat / "media" / "a.png"
    items.write_text(f"item,title,image,video\na,A,{a_png},\nb,B,/etc/passwd,\n")
    d, meta, _ = prepared(tmp, "--interactions", log, "--items", items, "--image-column",
                          "image", "--media-root", "/")
    passwd = "/etc/passwd" if os.path.isfile("/etc/passwd") else None
    assert d.items["image"].to_list() == [str(cat / "media" / "a.png"), passwd]
    assert meta["media_root"] == "/"


def test_media_root_errors(catalogue):
    tmp, cat, log = catalogue
    items = items_file(cat, image_b="")
    code, _, err = cli("prepare", "--interactions", log, "--items", items, "--media-root",
                       tmp / "nope", "--out", tmp / "o")
    error_line(code, err, "--media-root", "nope", "not an existing folder")
    code, _, err = cli("prepare", "--interactions", log, "--media-root", tmp, "--out", tmp / "o")
    error_line(code, err, "--media-root", "--items")
