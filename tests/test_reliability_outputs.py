"""Issue 24, classes 1-4: output folders are proven to be vmr's before anything in them is
replaced; readers re-check what they trust (export hashes, the run's dataset fingerprint, media
paths against the recorded root with links resolved); nothing hangs on a FIFO; the gallery's
rank and top list agree."""

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import cli_one_line, run_cli
from helpers.runs import build_runs
from test_gallery import make_catalogue


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build_runs(tmp_path_factory.mktemp("rel-runs"))


@pytest.fixture(scope="module")
def media_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel-media")
    ds = make_catalogue(root)
    code, _, err = run_cli("train", "--data", ds, "--set", "model.kind=pop", "--out", root / "pop")
    assert code == 0, err
    return {"root": root, "data": ds, "run": root / "pop"}


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ---- 1. output folders --------------------------------------------------------------------

def test_export_refuses_a_foreign_manifest_and_keeps_every_file(runs, tmp_path):
    web = tmp_path / "webapp"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my app", "icons": []}')
    (web / "index.html").write_text("<p>mine</p>")
    before = _tree(web)
    line = cli_one_line("export", "--run", runs["sasrec"], "--out", web)
    assert str(web) in line and "not written by vmr" in line
    assert _tree(web) == before
    # a manifest that is not JSON, or JSON but not an object
    (web / "manifest.json").write_text("[1, 2]")
    assert "not a JSON object" in cli_one_line("export", "--run", runs["pop"], "--out", web)
    assert (web / "index.html").read_text() == "<p>mine</p>"


def test_export_replaces_its_own_folder_but_not_a_file_added_to_it(runs, tmp_path):
    out = tmp_path / "exp"
    assert run_cli("export", "--run", runs["pop"], "--out", out)[0] == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["kind"] == "vmr export" and doc["format"] == 2
    assert run_cli("export", "--run", runs["sasrec"], "--out", out)[0] == 0   # its own: replaced
    (out / "notes.txt").write_text("mine")
    line = cli_one_line("export", "--run", runs["pop"], "--out", out)
    assert "'notes.txt'" in line and str(out) in line
    assert (out / "notes.txt").read_text() == "mine"
    # an export written before manifests named their kind is still vmr's
    (out / "notes.txt").unlink()
    doc = json.loads((out / "manifest.json").read_text())
    del doc["kind"]
    (out / "manifest.json").write_text(json.dumps(doc))
    assert run_cli("export", "--run", runs["pop"], "--out", out)[0] == 0
    assert not list(tmp_path.glob(".exp.*"))          # no temporary folder left


def test_gallery_refuses_a_foreign_gallery_json(media_run, tmp_path):
    site = tmp_path / "site"
    (site / "users").mkdir(parents=True)
    (site / "thumbs").mkdir()
    (site / "gallery.json").write_text('{"photos": 3}')
    (site / "users" / "alice.html").write_text("mine")
    (site / "thumbs" / "cat.jpg").write_bytes(b"\xff\xd8mine")
    before = _tree(site)
    line = cli_one_line("gallery", "--run", media_run["run"], "--users", 1, "--out", site)
    assert str(site) in line and "not written by vmr" in line
    assert _tree(site) == before
    # a real gallery with a page of the user's own added: refused too
    out = tmp_path / "g"
    assert run_cli("gallery", "--run", media_run["run"], "--users", 2, "--out", out)[0] == 0
    assert json.loads((out / "gallery.json").read_text())["kind"] == "vmr gallery"
    (out / "users" / "alice.html").write_text("mine")
    line = cli_one_line("gallery", "--run", media_run["run"], "--users", 1, "--out", out)
    assert "'users/alice.html'" in line
    (out / "users" / "alice.html").unlink()
    assert run_cli("gallery", "--run", media_run["run"], "--users", 1, "--out", out)[0] == 0
    assert len(list((out / "users").iterdir())) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".g.")]


# ---- 2. readers re-check: export hashes, the run's fingerprint -----------------------------

def test_load_export_checks_hashes_and_its_manifest(runs, tmp_path):
    from vmr.errors import VmrError
    from vmr.serve.export import load_export

    out = tmp_path / "exp"
    assert run_cli("export", "--run", runs["sasrec"], "--out", out)[0] == 0
    good = load_export(out)
    assert len(good.item_ids) == good.item_embeddings.shape[0]
    ids = (out / "item_ids.txt").read_text().split("\n")
    (out / "item_ids.txt").write_text("\n".join(ids[1:]))          # one line short
    with pytest.raises(VmrError, match="item_ids.txt: its size or sha256 differs"):
        load_export(out)
    for junk in ("{not json", "[]", '{"format": 2}', ""):
        (out / "manifest.json").write_text(junk)
        with pytest.raises(VmrError, match="manifest.json"):
            load_export(out)
    with pytest.raises(TypeError, match="path"):
        load_export(None)


def test_a_run_without_its_dataset_fingerprint_is_refused(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["sasrec"], run)
    info = json.loads((run / "run.json").read_text())
    del info["dataset_fingerprint"]
    (run / "run.json").write_text(json.dumps(info))
    for cmd in (["eval", "--run", run], ["recommend", "--run", run, "--user", "u001"],
                ["export", "--run", run, "--out", tmp_path / "e"]):
        line = cli_one_line(*cmd)
        assert "run.json" in line and "dataset_fingerprint" in line


def test_gallery_rank_and_top_list_agree_when_the_target_repeats(tmp_path):
    """Users whose held-out item repeats an earlier one: the top list (history excluded,
    except the held-out item, as `vmr eval` ranks) shows it exactly when it is a hit, at its
    rank."""
    rows = ["user,item,time"]
    for u in range(30):
        seq = [f"i{(u + k) % 12}" for k in range(4)]
        seq.append(seq[1] if u % 2 == 0 else f"i{(u + 7) % 12}")
        rows += [f"u{u:02d},{it},{t}" for t, it in enumerate(seq)]
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    assert run_cli("prepare", "--interactions", tmp_path / "inter.csv", "--kcore", "1",
                   "--out", tmp_path / "ds")[0] == 0
    assert run_cli("train", "--data", tmp_path / "ds", "--set", "model.kind=pop",
                   "--out", tmp_path / "pop")[0] == 0
    assert run_cli("gallery", "--run", tmp_path / "pop", "--users", 30, "--top", 5,
                   "--out", tmp_path / "g")[0] == 0
    doc = json.loads((tmp_path / "g" / "gallery.json").read_text())
    repeats = [e for e in doc["users"] if e["target_in_history"]]
    assert len(repeats) == 15 and any(e["hit"] for e in repeats)
    for e in doc["users"]:
        page = (tmp_path / "g" / e["page"]).read_text()
        top = page.split("recommendations (history excluded")[1]
        shown = [x.split("</div>")[0] for x in top.split('<div class="id">')[1:]]
        assert (e["target"] in shown) == e["hit"] == (e["target_rank"] <= 5), e
        if e["hit"]:
            assert shown.index(e["target"]) + 1 == e["target_rank"]
    assert doc["hits"] == sum(e["hit"] for e in doc["users"])


# ---- 3. confinement re-checked by every reader -------------------------------------------

def _edit_items(data: Path, column: str, row: int, value: str) -> None:
    import polars as pl

    items = pl.read_parquet(data / "items.parquet")
    col = items[column].to_list()
    col[row] = value
    items.with_columns(pl.Series(column, col, dtype=pl.Utf8)).write_parquet(data / "items.parquet")


@pytest.mark.parametrize("how", ["edited", "symlink"])
def test_media_outside_the_recorded_root_is_refused_by_extract_and_gallery(media_run, tmp_path,
                                                                           how):
    import polars as pl

    data = tmp_path / "ds"
    shutil.copytree(media_run["data"], data)
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copy(pl.read_parquet(data / "items.parquet")["image"][5], secret)
    if how == "edited":          # the dataset edited after prepare to point anywhere
        _edit_items(data, "image", 5, str(secret))
    else:                        # a link inside the media root that points out of it
        root = Path(json.loads((data / "dataset.json").read_text())["media_root"])
        link = root / f"link-{os.getpid()}.jpg"
        link.symlink_to(secret)
        _edit_items(data, "image", 5, str(link))
    item = pl.read_parquet(data / "items.parquet")["item"][5]
    line = cli_one_line("extract", "--data", data, "--modality", "image", "--cache",
                        tmp_path / "f.h5")
    assert f"item {item!r}" in line and "outside the dataset's media root" in line
    assert not (tmp_path / "f.h5").exists()
    from vmr.data.dataset import load_dataset
    from vmr.errors import VmrError
    from vmr.serve.gallery import Thumbnails

    (tmp_path / "thumbs").mkdir()
    with pytest.raises(VmrError, match="outside the dataset's media root"):
        Thumbnails(load_dataset(data), tmp_path / "thumbs")
    assert not list((tmp_path / "thumbs").iterdir())
    if how == "symlink":
        link.unlink()


def test_recommend_table_strips_terminal_control_characters(tmp_path):
    rows = ["user,item,time"] + [f"u{u},i{(u + k) % 6},{k}" for u in range(8) for k in range(4)]
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    titles = ["item,title"] + [f'i{k},"evil\x1b]0;pwned\x07 \x1b[2J title {k}\x9b31m"'
                               for k in range(6)]
    (tmp_path / "items.csv").write_text("\n".join(titles) + "\n")
    assert run_cli("prepare", "--interactions", tmp_path / "inter.csv", "--items",
                   tmp_path / "items.csv", "--text-columns", "title", "--kcore", "1",
                   "--out", tmp_path / "ds")[0] == 0
    assert run_cli("train", "--data", tmp_path / "ds", "--set", "model.kind=pop",
                   "--out", tmp_path / "pop")[0] == 0
    code, out, err = run_cli("recommend", "--run", tmp_path / "pop", "--user", "u1")
    assert code == 0, err
    assert "title" in out and not any(c in out for c in "\x1b\x07\x9b")
    code, out, _ = run_cli("recommend", "--run", tmp_path / "pop", "--user", "u1",
                           "--format", "json")
    assert code == 0 and "\x1b" in "".join(r["title"] for r in json.loads(out)["items"])


# ---- 4. nothing hangs ---------------------------------------------------------------------

def test_gallery_does_not_block_on_a_fifo_where_an_image_should_be(media_run, tmp_path):
    import polars as pl

    data = tmp_path / "ds"
    shutil.copytree(media_run["data"], data)
    root = Path(json.loads((data / "dataset.json").read_text())["media_root"])
    fifo = root / f"fifo-{os.getpid()}.jpg"
    os.mkfifo(fifo)
    try:
        items = pl.read_parquet(data / "items.parquet")
        for k in range(items.height):
            _edit_items(data, "image", k, str(fifo))
        run = tmp_path / "pop"
        assert run_cli("train", "--data", data, "--set", "model.kind=pop", "--out", run)[0] == 0
        code, _, err = run_cli("gallery", "--run", run, "--users", 2, "--out", tmp_path / "g",
                               "--timeout", 5)
        assert code == 0, err
        assert not list((tmp_path / "g" / "thumbs").glob("*-image.jpg"))
    finally:
        fifo.unlink()
