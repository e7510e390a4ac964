"""The fault matrix (docs/RELIABILITY.md): processes killed with SIGKILL at random moments, a
real full disk (a small tmpfs mount), damaged checkpoints, and over a thousand randomly malformed
input rows. Every fault here is real -- a signal, bytes on disk, a file system out of space --
never a monkeypatched function of the code under test."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from helpers.media import read_group, write_dataset

from helpers import run_cli as cli
from helpers import start_process as start
from helpers.synth import make_dataset
from vmr.cache import read as cache_read
from vmr.cache import store

TINY = ["model.d_model=16", "model.n_heads=1", "model.n_layers=1", "train.epochs=2",
        "train.threads=1"]


def error_line(code: int, err: str) -> str:
    """The one `error:` line of a failed command (exit 1, no traceback); tqdm bars may precede
    it on stderr, nothing else."""
    assert code == 1, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def kill_when(proc: subprocess.Popen, pattern: str, rng: random.Random, limit: float = 60.0,
              delay: float = 0.01) -> bool:
    """SIGKILL `proc` a random moment (up to `delay` s) after a path matching `pattern` shows up
    (its temporary output: the kill lands mid-write). True if the process was still running."""
    t = time.monotonic()
    while not glob.glob(pattern):
        if proc.poll() is not None or time.monotonic() - t > limit:
            break
        time.sleep(0.0002)
    time.sleep(rng.uniform(0, delay))
    alive = proc.poll() is None
    proc.kill()
    proc.wait()
    return alive


def kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL `proc` after `seconds` unless it ended before. True if it was still running."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)
    alive = proc.poll() is None
    proc.kill()
    proc.wait()
    return alive


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (relative name -> bytes); {} when it does not exist."""
    if not path.exists():
        return {}
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or ".old-" in p.name)


# ---------------------------------------------------------------- malformed input through prepare
JUNK_FIELDS = ["", " ", "NaN", "nan", "inf", "-inf", "1e309", "-1e400", "9" * 40, "0x1F",
               "2021-13-45", "2021-02-30T25:61", "2020-01-01", "2020-01-01T10:00:00+02:00",
               "1.5", "-3", "null", "None", "true", '"', '""', '"a,b"', "a\tb", "a,b", "{}",
               "[1,2]", '{"x": 1}', "\x00", "a\x00b", "\ufeff", "\ufeffuser", "ü", "日本",
               "🙂", "\u200b", "\r", "007", "7", "' OR 1=1 --", "\\", "a\nb"]
field_st = st.one_of(st.sampled_from(JUNK_FIELDS), st.text(max_size=6),
                     st.integers(-10**20, 10**20).map(str), st.floats().map(repr))
json_value_st = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(),
                          field_st, st.lists(field_st, max_size=2),
                          st.dictionaries(st.sampled_from(["a", "user"]), field_st, max_size=2))
row_st = st.lists(field_st, min_size=0, max_size=5)
N_ROWS = 10  # rows per generated file at least: 110 examples -> well over 1,000 rows
ROWS_SEEN = [0]
OUTCOMES = {"prepared": 0, "rejected": 0}


def _table_bytes(kind: str, header: list[str], rows: list[list[str]], bom: bool,
                 quote: bool) -> bytes:
    sep = "\t" if kind == "tsv" else ","

    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if quote else v

    lines = [sep.join(header)] + [sep.join(cell(v) for v in r) for r in rows]
    return (("\ufeff" if bom else "") + "\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@st.composite
def malformed_input(draw) -> tuple[str, bytes, list[str]]:
    """(file name, bytes, extra prepare options) of a randomly damaged interactions file: junk
    values in well-formed rows, broken rows (field counts, non-JSON lines), and raw byte damage
    (NUL, invalid UTF-8, stray quotes and delimiters, BOMs), each more or less often."""
    kind = draw(st.sampled_from(["csv", "tsv", "jsonl", "sequences"]))
    n = draw(st.integers(N_ROWS, 30))
    p_junk = draw(st.sampled_from([0.0, 0.05, 0.2, 1.0]))  # chance a field is junk
    p_broken = draw(st.sampled_from([0.0, 0.0, 0.05, 0.5]))  # chance a row is structurally bad
    rows = []
    for k in range(n):
        if draw(st.floats(0, 1)) < p_broken:
            rows.append(draw(row_st))
            continue
        row = [f"u{k % 4}", draw(st.sampled_from(["007", "7", "a", "b", "ü", "x y"])),
               str(draw(st.integers(0, 50)))]
        rows.append([draw(field_st) if draw(st.floats(0, 1)) < p_junk else v for v in row])
    extra = ["--kcore", str(draw(st.sampled_from([1, 1, 2, 5])))]
    if kind == "sequences":
        by_user: dict[str, list[str]] = {}
        for r in rows:
            by_user.setdefault(r[0] if r else "", []).extend(r[1:])
        lines = [" ".join([u, *items]) for u, items in by_user.items()]
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
        extra += ["--format", "sequences"]
    elif kind == "jsonl":
        lines = []
        for r in rows:
            obj = dict(zip(["user", "item", "time"], r))
            if draw(st.floats(0, 1)) < p_junk:
                obj[draw(st.sampled_from(["user", "item", "time", "x"]))] = draw(json_value_st)
            if draw(st.floats(0, 1)) < p_broken:
                lines.append(",".join(r))  # not JSON at all
            else:
                lines.append(json.dumps(obj, ensure_ascii=draw(st.booleans())))
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
    else:
        header = ["user", "item", "time"]
        if draw(st.integers(0, 5)) == 0:
            header = draw(st.sampled_from([["user", "item", "time", "x"], ["user", "item"],
                                           ["item", "user", "time"], ["user", "user", "time"]]))
        data = _table_bytes(kind, header, rows, bom=draw(st.booleans()), quote=draw(st.booleans()))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3]))):  # raw byte damage
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\r", b'"', b"\n\n", b",",
                                     b"\t", b"\xef\xbb\xbf"]))
        data = data[:at] + junk + data[at:]
    ROWS_SEEN[0] += n
    return f"log.{'txt' if kind == 'sequences' else kind}", data, extra


@settings(max_examples=110, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(malformed_input())
def _prepare_survives(case) -> None:
    from vmr.data.dataset import load_dataset

    name, data, extra = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        code, _, err = cli("prepare", "--interactions", path, "--out", Path(d) / "ds", *extra)
        OUTCOMES["prepared" if code == 0 else "rejected"] += 1
        if code == 0:
            ds = load_dataset(Path(d) / "ds")
            assert ds.user_ids and ds.item_ids and all(isinstance(i, str) for i in ds.item_ids)
            assert "Traceback" not in err
        else:
            assert code == 1, err
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_a_thousand_malformed_rows_never_crash_prepare():
    """Every malformed file is either prepared (and loads) or rejected with one `error:` line."""
    ROWS_SEEN[0] = 0
    OUTCOMES.update(prepared=0, rejected=0)
    _prepare_survives()
    assert ROWS_SEEN[0] >= 1000
    assert OUTCOMES["prepared"] >= 5 and OUTCOMES["rejected"] >= 10, OUTCOMES  # both paths


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "sequences"])
def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path, kind):
    """Files saved by Excel / Notepad start with a UTF-8 BOM; it must not end up in an id."""
    from vmr.data.dataset import load_dataset

    rows = [("007", "a", 1), ("007", "b", 2), ("u2", "a", 1), ("u2", "b", 3)]
    if kind == "sequences":
        text, extra = "007 a b\nu2 a b\n", ["--format", "sequences"]
    elif kind == "jsonl":
        text = "".join(json.dumps(dict(zip(("user", "item", "time"), r))) + "\n" for r in rows)
        extra = []
    else:
        sep = "," if kind == "csv" else "\t"
        text = "\n".join(sep.join(map(str, r)) for r in [("user", "item", "time"), *rows]) + "\n"
        extra = []
    path = tmp_path / f"log.{'txt' if kind == 'sequences' else kind}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    code, _, err = cli("prepare", "--interactions", path, "--kcore", "1", "--out",
                       tmp_path / "ds", *extra)
    assert code == 0, err
    ds = load_dataset(tmp_path / "ds")
    assert ds.user_ids == ["007", "u2"] and ds.item_ids == ["a", "b"]


# ---------------------------------------------------------------- kill -9 during `vmr cache merge`
N_MERGE, D_MERGE, N_SHARDS = 30000, 512, 3  # ~30 MB per shard: the merge takes a moment


def _group(ids, feats, present, done, shard=None, dim=D_MERGE):
    fails = [(ids[r], "missing file") for r in np.flatnonzero(done & ~present)]

    def write(ds):
        rows = np.flatnonzero(done & present)
        for a in range(0, len(rows), 8192):
            ds[rows[a:a + 8192].tolist()] = feats[rows[a:a + 8192]]

    attrs = {"encoder": "enc", "weights": "sha256:00", "dim": dim, "dtype": "float16",
             "fps": 1.0, "max_frames": 32, "pooling": "mean", "batch_size": 4,
             **store.base_attrs()}
    if shard:
        attrs.update(shard=shard, shard_unit="item")
    return store.ModalityData(attrs, present & done, done, fails, write, "float16", dim)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shard files of a video extraction, the unsharded cache they must merge into, and a
    previous --out cache (text features only) that a killed merge must leave intact."""
    root = tmp_path_factory.mktemp("merge")
    ids = [f"{k:06d}" for k in range(N_MERGE)]
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(N_MERGE, D_MERGE)).astype(np.float16)
    present = rng.random(N_MERGE) > 0.05
    paths = []
    for i in range(1, N_SHARDS + 1):
        done = np.arange(N_MERGE) % N_SHARDS == i - 1
        paths.append(str(root / f"c.shard-{i}-of-{N_SHARDS}.h5"))
        store.publish(paths[-1], ids, {"video": _group(ids, feats, present, done,
                                                       f"{i}/{N_SHARDS}")})
    everything = np.ones(N_MERGE, bool)
    ref = root / "unsharded.h5"
    store.publish(str(ref), ids, {"video": _group(ids, feats, present, everything)})
    prev = root / "previous.h5"
    store.publish(str(prev), ids, {"text": _group(ids, feats[:, :8], present, everything,
                                                  dim=8)})
    return paths, ref, prev


def assert_complete_merge(out: Path, ref: Path, prev: Path) -> None:
    a, b = read_group(ref, "video"), read_group(out, "video")
    assert a[0] == b[0]
    assert np.array_equal(a[1], b[1])  # bit for bit
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3]) and b[3].all()
    assert a[4] == b[4]
    assert {k: a[5][k] for k in cache_read.SETTING_KEYS} == {k: b[5][k] for k in cache_read.SETTING_KEYS}
    assert "shard" not in b[5]
    t0, t1 = read_group(prev, "text"), read_group(out, "text")  # the other modality is kept
    assert np.array_equal(t0[1], t1[1]) and t0[0] == t1[0]


def test_kill_9_during_cache_merge(shards, tmp_path):
    """SIGKILL at random moments, half of them while the merged file is being written: --out is
    always the previous cache byte for byte or the complete merge, never unreadable; the rerun
    succeeds and equals the unsharded cache."""
    paths, ref, prev = shards
    out = tmp_path / "features.h5"
    rng = random.Random(7)
    seen = {"previous": 0, "complete": 0, "mid-write": 0}
    for attempt in range(6):
        shutil.copy(prev, out)
        p = start("cache", "merge", *paths, "--out", out)
        if attempt % 2 == 0:
            alive = kill_when(p, f"{out}.tmp-*", rng, delay=0.03)
            seen["mid-write"] += alive and bool(glob.glob(f"{out}.tmp-*"))
        else:
            kill_after(p, rng.uniform(0.1, 2.5))
        if out.read_bytes() == prev.read_bytes():
            seen["previous"] += 1
            code, text, err = cli("cache", "merge", *paths, "--out", out)  # the rerun
            assert code == 0, err
            assert "video: 3 shards" in text
        else:
            seen["complete"] += 1
            code, _, err = cli("cache", "merge", *paths, "--out", out)
            assert "already holds video" in error_line(code, err)
        assert_complete_merge(out, ref, prev)
        assert leftovers(tmp_path) == []  # the rerun swept the killed run's temporary file
    assert seen["mid-write"] >= 1, seen  # at least one kill really hit the write
    assert seen["previous"] >= 1, seen


# ---------------------------------------------------------------- kill -9 during export
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny multimodal run (text features) and a popularity run on the same dataset."""
    root = tmp_path_factory.mktemp("runs")
    ds = make_dataset(root)
    sets = [a for s in TINY for a in ("--set", s)]
    for name, kind in (("vmr", "vmr"), ("pop", "pop")):
        code, _, err = cli("train", "--data", ds, *sets, "--set", f"model.kind={kind}",
                           "--out", root / name)
        assert code == 0, err
    return {"data": ds, "vmr": root / "vmr", "pop": root / "pop", "root": root}


def export_state(out: Path) -> str:
    """'pop' or 'vmr': which complete export `out` holds; fails on anything partial."""
    names = sorted(p.name for p in out.iterdir())
    assert names == ["item_embeddings.npy", "item_embeddings.safetensors", "item_ids.txt",
                     "manifest.json", "user_tower.pt", "user_tower.ts"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [n for n in names if n != "manifest.json"]
    for name, info in manifest["files"].items():
        data = (out / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"]
    dim = np.load(out / "item_embeddings.npy").shape[1]
    return "pop" if dim == 1 else "vmr"


@pytest.mark.parametrize("tries", [2, pytest.param(10, marks=pytest.mark.slow)])
def test_kill_9_during_export(runs, tmp_path, tries):
    """The previous export (of the popularity run) is replaced by the export of the other run;
    killed at random moments, half of them while files are being written or swapped in, the
    export directory always holds one complete export, and the rerun succeeds."""
    out = tmp_path / "exp"
    rng = random.Random(tries)
    seen = {"pop": 0, "vmr": 0, "mid-write": 0}
    attempt = 0
    while attempt < tries or (not seen["mid-write"] and attempt < tries + 3):
        shutil.rmtree(out, ignore_errors=True)
        assert cli("export", "--run", runs["pop"], "--out", out)[0] == 0
        p = start("export", "--run", runs["vmr"], "--out", out)
        if attempt % 2 == 0 or attempt >= tries:  # the files are written within ~2-20 ms
            seen["mid-write"] += kill_when(p, str(tmp_path / ".exp.tmp-*"), rng, delay=0.004)
        else:
            kill_after(p, rng.uniform(0.5, 4.0))
        attempt += 1
        seen[export_state(out)] += 1
        code, _, err = cli("export", "--run", runs["vmr"], "--out", out)  # the rerun
        assert code == 0, err
        assert export_state(out) == "vmr"
        assert [n for n in leftovers(tmp_path) if ".old-" in n] == []
    assert seen["mid-write"] >= 1, seen


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="renameat2 is Linux only")
def test_export_swaps_directories_atomically_here(tmp_path):
    """The export replaces the old directory with one atomic exchange (no moment without an
    export); check that the exchange really works on this system instead of falling back."""
    from vmr.serve.export import _exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("new")
    (tmp_path / "b" / "x").write_text("old")
    assert _exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "x").read_text() == "new"
    assert (tmp_path / "a" / "x").read_text() == "old"


# ---------------------------------------------------------------- a full disk while writing
@pytest.fixture
def disk(tmp_path):
    """A real 8 MB file system (tmpfs) to fill up; skipped where mounting is not allowed."""
    from helpers import tmpfs

    with tmpfs(tmp_path / "disk", "8m") as mnt:
        yield mnt


def fill(mnt: Path, keep: int = 0) -> None:
    """Fill the file system up, then free `keep` bytes again."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    try:
        while True:  # the last partial block
            os.write(fd, b"\0" * 512)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - keep))


def no_space(code: int, err: str) -> str:
    line = error_line(code, err)
    assert "no space left on device" in line.lower(), line
    return line


def test_full_disk_prepare_keeps_the_previous_dataset(disk, tmp_path):
    from vmr.data.dataset import load_dataset

    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text("user,item,time\n" + "".join(f"u{k % 7},i{k % 11},{k}\n" for k in range(80)))
    rng = np.random.default_rng(0)  # random ids: parquet cannot squeeze the new dataset much
    new.write_text("user,item,time\n" + "".join(
        f"{rng.integers(1 << 40):x},{rng.integers(1 << 40):x},{k}\n" for k in range(20000)))
    assert cli("prepare", "--interactions", new, "--kcore", "1", "--out", tmp_path / "n")[0] == 0
    sizes = [(tmp_path / "n" / f).stat().st_size for f in ("interactions.parquet",
                                                           "items.parquet")]
    ds = disk / "ds"
    assert cli("prepare", "--interactions", old, "--kcore", "1", "--out", ds)[0] == 0
    before = snapshot(ds)
    # nothing fits / half the first file / the first file and half the second
    for keep in (0, sizes[0] // 2, sizes[0] + sizes[1] // 2):
        fill(disk, keep)
        code, _, err = cli("prepare", "--interactions", new, "--kcore", "1", "--out", ds)
        assert no_space(code, err).startswith(f"error: {ds}: cannot write the dataset")
        assert snapshot(ds) == before  # byte for byte, no temporary files left
        assert load_dataset(ds).user_ids == [f"u{k}" for k in range(7)]
        os.remove(disk / "filler")
    assert cli("prepare", "--interactions", new, "--kcore", "1", "--out", ds)[0] == 0
    assert len(load_dataset(ds).user_ids) == 20000


def test_full_disk_import_features_keeps_the_previous_cache(disk, tmp_path):
    ids = [f"{k:03d}" for k in range(200)]
    data = write_dataset(tmp_path / "ds", ids)
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(200, 2048)).astype("f4"))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    cache = disk / "features.h5"
    args = ["--data", data, "--features", tmp_path / "f.npy", "--ids", tmp_path / "ids.txt",
            "--cache", cache]
    assert cli("import-features", *args, "--modality", "image")[0] == 0
    before = cache.read_bytes()
    for keep in (0, 300_000):
        fill(disk, keep)
        code, _, err = cli("import-features", *args, "--modality", "video")
        assert no_space(code, err).endswith("the previous cache is unchanged")
        assert cache.read_bytes() == before
        assert cache_read.read_modality(str(cache), ids, "image")[0].shape == (200, 2048)
        assert sorted(os.listdir(disk)) == ["features.h5", "filler"]
        os.remove(disk / "filler")
    assert cli("import-features", *args, "--modality", "video")[0] == 0
    assert cache_read.list_modalities(str(cache)) == ["image", "video"]


def test_full_disk_extract_keeps_the_previous_cache_and_resumes(disk, tmp_path):
    """Out of space before anything is saved, then again when the finished features are
    published: one-line errors, the old cache untouched. Then one saved progress part is damaged
    (truncated); once there is room the same command re-encodes only that part's items (with a
    warning) and takes the rest from the saved progress: the same vectors as before."""
    ids = [f"{k:03d}" for k in range(24)]
    data = write_dataset(tmp_path / "ds", ids, text=[f"item {k} " * (1 + k % 5)
                                                     for k in range(24)])
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(24, 8192)).astype("f4"))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    cache = disk / "features.h5"
    assert cli("import-features", "--data", data, "--modality", "image", "--features",
               tmp_path / "f.npy", "--ids", tmp_path / "ids.txt", "--cache", cache,
               "--dtype", "float32")[0] == 0  # a 0.8 MB cache
    before = cache.read_bytes()
    args = ["extract", "--data", data, "--modality", "text", "--model", "minilm", "--cache",
            cache, "--device", "cpu", "--batch-size", "8"]
    fill(disk, 0)
    code, _, err = cli(*args)
    assert "cannot write progress file" in no_space(code, err)
    assert cache.read_bytes() == before
    os.remove(disk / "filler")
    fill(disk, 200_000)  # room for the progress parts, not for the new cache file
    code, _, err = cli(*args)
    line = no_space(code, err)
    assert line.startswith(f"error: cannot write cache {cache}") and "unchanged" in line
    assert cache.read_bytes() == before
    assert cache_read.list_modalities(str(cache)) == ["image"]
    os.remove(disk / "filler")

    parts = sorted(glob.glob(f"{cache}.partial-text/part-*.npz"))
    assert len(parts) == 3  # 24 texts in batches of 8
    saved = {}
    for part in parts:
        with np.load(part) as z:
            saved.update(zip(z["ids"].tolist(), z["features"]))
    with open(parts[1], "r+b") as f:  # a part damaged on disk
        f.truncate(os.path.getsize(parts[1]) // 2)
    code, out, err = cli(*args)
    assert code == 0, err
    assert f"warning: discarding damaged progress file {parts[1]}" in err
    assert out.startswith("text: 8 items encoded")  # only the damaged part's items
    feats, present, _ = cache_read.read_modality(str(cache), ids, "text")
    assert feats.shape == (24, 384) and present.all()
    want = np.stack([saved[i] for i in ids]).astype(np.float16).astype(np.float32)
    assert np.array_equal(feats, want)
    assert cache_read.read_modality(str(cache), ids, "image")[0].shape == (24, 8192)
    assert sorted(os.listdir(disk)) == ["features.h5"]


def test_full_disk_train_keeps_the_checkpoints(disk, runs):
    """A run continued with --resume on a full disk: one-line error; whatever checkpoints are
    on disk load; with room again --resume finishes the run."""
    import torch

    run = disk / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    code, _, err = cli("train", "--data", runs["data"], *sets, "--out", run)
    assert code == 0, err
    before = snapshot(run)
    more = ["train", "--data", runs["data"], "--set", "train.epochs=4", "--out", run, "--resume"]
    for keep in (0, 60_000):  # nothing fits / run.json and a checkpoint fit, not both
        fill(disk, keep)
        code, _, err = cli(*more)
        assert no_space(code, err).startswith(f"error: cannot write run directory {run}")
        if keep == 0:
            assert snapshot(run) == before
        for name in ("checkpoint.pt", "best.pt"):
            ckpt = torch.load(run / name, weights_only=True)
            assert ckpt["model"] and ckpt["config"]["model"]["kind"] == "vmr"
        assert leftovers(run) == []
        assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2  # completed
        os.remove(disk / "filler")
    code, _, err = cli(*more)
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 4
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows] == [["sequence", str(e)] for e in range(1, 5)]


# ---------------------------------------------------------------- truncated or garbage checkpoints
def _damage(kind: str, good: bytes) -> bytes:
    import torch

    if kind == "half":
        return good[: len(good) // 2]
    if kind == "tail":
        return good[:-100]
    if kind == "head":
        return good[:10]
    if kind == "empty":
        return b""
    if kind == "garbage":
        return random.Random(0).randbytes(5000)
    buf = io.BytesIO()
    if kind == "foreign":  # a valid torch file that is not a vmr checkpoint
        torch.save({"state_dict": {"w": torch.zeros(3)}}, buf)
    else:  # "mismatch": a vmr checkpoint whose weights lost a tensor
        ckpt = torch.load(io.BytesIO(good), weights_only=True)
        ckpt["model"].pop(next(iter(ckpt["model"])))
        torch.save(ckpt, buf)
    return buf.getvalue()


DAMAGES = ["half", "tail", "head", "empty", "garbage", "foreign", "mismatch"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_checkpoint_is_a_one_line_error(runs, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(runs["vmr"], run)
    best = run / "best.pt"
    best.write_bytes(_damage(damage, best.read_bytes()))
    for args in (["eval", "--run", run], ["recommend", "--run", run, "--history", "i0-01"],
                 ["export", "--run", run, "--out", tmp_path / "exp"]):
        code, _, err = cli(*args)
        line = error_line(code, err)
        assert line.startswith(f"error: {best}: "), line
        assert len(line) < 400, line
    assert not (tmp_path / "exp").exists()
    assert not (run / "metrics_test.json").exists()
    code, out, err = cli("eval", "--run", run, "--checkpoint", "last")  # the other one is fine
    assert code == 0, err


@pytest.mark.parametrize("damage", ["half", "garbage", "foreign"])
def test_damaged_checkpoint_on_resume_is_a_one_line_error(runs, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(runs["vmr"], run)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(_damage(damage, ckpt.read_bytes()))
    code, _, err = cli("train", "--data", runs["data"], "--out", run, "--resume")
    assert error_line(code, err).startswith(f"error: {ckpt}: ")


@pytest.mark.parametrize("command,keep", [("eval", 0), ("export", 0), ("export", 16384),
                                          ("report", 0), ("report", 12288)])
def test_full_disk_eval_export_report(disk, runs, command, keep):
    """The commands that write next to a run: a one-line error and the previous output intact
    (export: `keep` leaves room for the small files but not the user tower; report: for the
    Markdown but not the chart)."""
    run = disk / "run"
    shutil.copytree(runs["vmr"], run)
    args = {"eval": ["eval", "--run", run], "export": ["export", "--run", run, "--out", disk / "x"],
            "report": ["report", run, "--out", disk / "x"]}[command]
    assert cli("eval", "--run", run)[0] == 0
    code, _, err = cli(*args)  # the previous output
    assert code == 0, err
    before = snapshot(disk)
    fill(disk, keep)
    code, _, err = cli(*args)
    no_space(code, err)
    os.remove(disk / "filler")
    after = snapshot(disk)
    if command == "report":  # report.md may have been rewritten (same text), never broken
        assert after.keys() == before.keys()
        assert after["x/report.png"] == before["x/report.png"]
    else:
        assert after == before
