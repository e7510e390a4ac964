"""Issue 24, classes 2 (input ambiguity), 5 (the tracebacks) and 6 (smaller): each is one line
`error: ...` (or a TypeError naming the argument from the Python API), never a traceback."""

import gzip
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers import cli_one_line, run_cli
from helpers.synth import make_dataset
from vmr.errors import VmrError

TINY = ["--set", "model.d_model=16", "--set", "model.n_heads=1", "--set", "model.n_layers=1",
        "--set", "train.epochs=1", "--set", "train.device=cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel-inputs")
    ds = make_dataset(root, n_users=40, length=6)
    code, _, err = run_cli("train", "--data", ds, "--out", root / "run", *TINY)
    assert code == 0, err
    return {"root": root, "data": ds, "run": root / "run"}


def _prepare(tmp_path, name: str, text: str, *args) -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return cli_one_line("prepare", "--interactions", tmp_path / name, "--kcore", "1",
                        "--out", tmp_path / "out", *args)


# ---- 2. input ambiguity / 5. control characters in ids --------------------------------------

@pytest.mark.parametrize("bad", ["a\x00b", "a\x1b[2Jb", "a\tb", "a\x85b"])
def test_control_characters_in_an_id_are_refused_naming_the_row(tmp_path, bad):
    rows = "user,item,time\nu1,i1,1\nu1,i2,2\n" + f'u2,"{bad}",3\nu2,i1,4\n'
    line = _prepare(tmp_path, "log.csv", rows)
    assert "line 4" in line and "control character" in line and "'item'" in line
    assert not (tmp_path / "out").exists()


def test_control_characters_in_an_items_table_id(tmp_path):
    (tmp_path / "log.csv").write_text("user,item,time\nu1,i1,1\nu1,i2,2\n")
    (tmp_path / "items.csv").write_text('item,title\ni1,a\n"i\x072",b\n')
    line = cli_one_line("prepare", "--interactions", tmp_path / "log.csv", "--items",
                        tmp_path / "items.csv", "--kcore", "1", "--out", tmp_path / "out")
    assert "items.csv" in line and "line 3" in line and "U+0007" in line


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000"])
def test_unicode_whitespace_in_a_sequences_id_is_refused(tmp_path, space):
    line = _prepare(tmp_path, "seq.txt", f"u1 i1 i2 i3\nu2 i1 item{space}one i2\n",
                    "--format", "sequences")
    assert "line 2" in line and f"U+{ord(space):04X}" in line


def test_plain_spaces_and_tabs_still_separate_sequence_ids(tmp_path):
    (tmp_path / "seq.txt").write_text("u1\ti1  i2 i3\nu2 i1\ti2\r\n")
    assert run_cli("prepare", "--interactions", tmp_path / "seq.txt", "--format", "sequences",
                   "--kcore", "1", "--out", tmp_path / "out")[0] == 0
    from vmr.data.dataset import load_dataset

    assert sorted(load_dataset(tmp_path / "out").item_ids) == ["i1", "i2", "i3"]


def test_a_movielens_title_containing_the_separator_is_refused(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::100\n1::20::4::101\n2::10::3::102\n")
    (tmp_path / "movies.dat").write_text("10::Toy Story (1995)::Comedy\n"
                                         "20::Star Wars::Episode IV (1977)::Sci-Fi\n")
    line = cli_one_line("prepare", "--interactions", tmp_path / "ratings.dat", "--items",
                        tmp_path / "movies.dat", "--preset", "movielens", "--kcore", "1",
                        "--out", tmp_path / "out")
    assert "movies.dat" in line and "line 2" in line and "'::'" in line


def test_columns_differing_only_in_case_are_refused(tmp_path):
    line = _prepare(tmp_path, "log.csv", "User_ID,USER_ID,item_id,timestamp\na,b,i1,1\na,b,i2,2\n")
    assert "'User_ID'" in line and "'USER_ID'" in line and "--user-col" in line
    # naming the column resolves it
    assert run_cli("prepare", "--interactions", tmp_path / "log.csv", "--user-col", "USER_ID",
                   "--kcore", "1", "--out", tmp_path / "out")[0] == 0


def test_import_features_on_a_dataset_edited_to_hold_a_nul_id(tmp_path):
    import polars as pl

    from helpers.media import write_dataset

    data = Path(write_dataset(tmp_path / "ds", ["a", "b\x00c"], text=["x", "y"]))
    np.save(tmp_path / "f.npy", np.ones((2, 4), np.float32))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    line = cli_one_line("import-features", "--data", data, "--modality", "text", "--features",
                        tmp_path / "f.npy", "--ids", tmp_path / "ids.txt")
    assert "row 2" in line and "control character" in line
    assert pl.read_parquet(data / "items.parquet").height == 2


# ---- 5. damaged feature caches ---------------------------------------------------------------

def _damage(cache: Path, how: str) -> None:
    with h5py.File(cache, "r+") as f:
        g = f["text"]
        if how == "extra_rows":
            x = g["features"][...]
            del g["features"]
            g["features"] = np.concatenate([x, x[:3]])
        elif how == "string_dtype":
            n = g["features"].shape[0]
            del g["features"]
            g["features"] = np.array([b"x"] * n).reshape(n, 1)
        elif how == "short_present":
            p = g["present"][...]
            del g["present"]
            g["present"] = p[:-1]
        elif how == "no_done":
            del g["done"]


@pytest.mark.parametrize("how", ["extra_rows", "string_dtype", "short_present", "no_done"])
def test_a_damaged_feature_cache_is_one_line(trained, tmp_path, how):
    data = tmp_path / "ds"
    shutil.copytree(trained["data"], data)
    _damage(data / "features.h5", how)
    for cmd in (["train", "--data", data, "--out", tmp_path / "r", *TINY],
                ["cache", "info", data / "features.h5"]):
        line = cli_one_line(*cmd)
        assert "features.h5" in line and "text/" in line, line


# ---- 5. damaged checkpoints, config bounds ---------------------------------------------------

@pytest.mark.parametrize("damage", ["empty_args", "dims_list", "dims_width", "n_items_str",
                                    "kind_unknown", "max_len_huge"])
def test_a_checkpoint_with_damaged_model_args_is_one_line(trained, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    ck = torch.load(run / "best.pt", weights_only=True)
    args = ck["model_args"]
    if damage == "empty_args":
        ck["model_args"] = {}
    elif damage == "dims_list":
        args["dims"] = [16]
    elif damage == "dims_width":
        args["dims"] = {"text": 7}
    elif damage == "n_items_str":
        args["n_items"] = "40"
    elif damage == "kind_unknown":
        args["kind"] = "gpt"
    else:
        args["config"]["max_len"] = 100_000_000
    torch.save(ck, run / "best.pt")
    for cmd in (["eval", "--run", run], ["recommend", "--run", run, "--user", "u000"],
                ["export", "--run", run, "--out", tmp_path / "e"]):
        line = cli_one_line(*cmd)
        assert "best.pt" in line, line


@pytest.mark.parametrize("setting", ["model.max_len=100000000", "model.d_model=1048576",
                                     "train.batch_size=100000000", "model.n_layers=100000"])
def test_config_values_beyond_sane_bounds_are_refused(trained, tmp_path, setting):
    line = cli_one_line("train", "--data", trained["data"], "--out", tmp_path / "r",
                        "--set", setting)
    assert setting.split("=")[0].split(".")[1] in line
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


# ---- 5. the Python API -----------------------------------------------------------------------

def test_the_api_names_a_wrong_argument(trained, tmp_path):
    import vmr

    with pytest.raises(TypeError, match="run_dir"):
        vmr.load(123)
    with pytest.raises(VmrError, match="device 'nonsense'"):
        vmr.load(trained["run"], device="nonsense")
    with pytest.raises(VmrError, match="device"):
        vmr.load(trained["run"], device="tpu")
    (tmp_path / "log.csv").write_text("user,item,time\nu1,i1,1\nu1,i2,2\n")
    with pytest.raises(TypeError, match="kcore"):
        vmr.prepare(tmp_path / "log.csv", tmp_path / "out", kcore="5")
    with pytest.raises(TypeError, match="out"):
        vmr.prepare(tmp_path / "log.csv", None)
    with pytest.raises(TypeError, match="text_columns"):
        vmr.prepare(tmp_path / "log.csv", tmp_path / "out", text_columns=[1])
    run = vmr.load(trained["run"])
    with pytest.raises(TypeError, match="users"):
        run.gallery(tmp_path / "g", users="3")
    with pytest.raises(TypeError, match="out"):
        run.export(None)
    with pytest.raises(TypeError, match="user.*'7', not 7"):
        run.recommend(user=7)
    with pytest.raises(TypeError, match="history"):
        run.recommend(history=[1, 2])
    with pytest.raises(TypeError, match="top"):
        run.recommend(user="u000", top="3")
    assert run.recommend(user="u000", top=3)          # the right types work
    assert not (tmp_path / "out").exists() and not (tmp_path / "g").exists()


# ---- 6. smaller ------------------------------------------------------------------------------

def test_the_extract_lock_is_keyed_on_the_real_path(tmp_path):
    from helpers.media import write_dataset
    from vmr.cache.lock import lock_path, modality_lock
    from vmr.extract.importer import import_features

    data = write_dataset(tmp_path / "ds", ["a", "b"], text=["x", "y"])
    np.save(tmp_path / "f.npy", np.ones((2, 4), np.float32))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    real = tmp_path / "caches" / "real.h5"
    real.parent.mkdir()
    link = tmp_path / "link.h5"
    link.symlink_to(real)
    assert lock_path(str(link), "text") == lock_path(str(real), "text")
    with modality_lock(str(real), "text", "the other writer"):
        with pytest.raises(VmrError, match="already being written"):
            import_features(data=data, modality="text", features=str(tmp_path / "f.npy"),
                            ids=str(tmp_path / "ids.txt"), cache=str(link))
    import_features(data=data, modality="text", features=str(tmp_path / "f.npy"),
                    ids=str(tmp_path / "ids.txt"), cache=str(link))
    assert link.is_symlink() and real.is_file()          # the link still names the cache
    from vmr.cache.read import list_modalities

    assert list_modalities(str(link)) == ["text"]


def test_a_failed_model_load_leaves_nothing_that_blocks_the_next_run(tmp_path, monkeypatch):
    from helpers.media import make_image, tiny_open_clip, write_dataset
    from vmr.extract import encoders
    from vmr.extract.runner import ExtractOptions, run_extract

    cfg, ckpt = tiny_open_clip(tmp_path)
    m = tmp_path / "m"
    m.mkdir()
    data = write_dataset(tmp_path / "ds", ["a", "b"],
                         image=[make_image(m / f"{k}.png", seed=k) for k in range(2)])
    opts = dict(data=data, modality="image", model=f"open_clip:{cfg}:{ckpt}", workers=0,
                batch_size=2, device="cpu")
    real = encoders.load_encoder

    def broken(*a, **k):
        raise VmrError("the model files are damaged")

    monkeypatch.setattr(encoders, "load_encoder", broken)
    with pytest.raises(VmrError, match="damaged"):
        run_extract(ExtractOptions(**opts))
    assert not list(Path(data).glob("features.h5.partial-*"))
    monkeypatch.setattr(encoders, "load_encoder", real)
    run_extract(ExtractOptions(**opts))
    assert (Path(data) / "features.h5").is_file()


def test_demo_quick_honours_or_refuses_explicit_topics_and_styles(tmp_path):
    line = cli_one_line("demo", "--quick", "--topics", "10", "--styles", "4", "--out",
                        tmp_path / "d")
    assert "--styles 4" in line and "--topics 10" in line
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("args", [["eval", "--bogus"], ["eval"], ["nosuchcommand"],
                                  ["train", "--set"], ["gallery", "--run", "r", "--users", "x",
                                                       "--out", "o"]])
def test_click_usage_errors_are_one_line_and_status_1(args):
    line = cli_one_line(*args)
    assert len(line) < 300


def test_gzip_is_still_fine(tmp_path):
    """(a regression guard for the id checks on the gzip path)"""
    with gzip.open(tmp_path / "log.csv.gz", "wt") as f:
        f.write("user,item,time\nu1,i1,1\nu1,i2,2\n")
    assert run_cli("prepare", "--interactions", tmp_path / "log.csv.gz", "--kcore", "1",
                   "--out", tmp_path / "out")[0] == 0
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["items"] == 2
    assert os.path.isfile(tmp_path / "out" / "items.parquet")
