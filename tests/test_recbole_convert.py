"""bench/recbole_peer.py: the conversion of a prepared dataset into RecBole atomic files, and (slow,
only where `make recbole-env` was run) a short end-to-end run of RecBole's SASRec on it."""

import importlib.util
import json
import random
import subprocess
import sys

import polars as pl
import pytest

from conftest import REPO
from vmr.errors import VmrError

SCRIPT = REPO / "bench" / "recbole_peer.py"
RB_PYTHON = REPO / ".venv-recbole" / "bin" / "python"


def _load():
    if str(SCRIPT.parent) not in sys.path:      # the script imports bench/common.py
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("recbole_peer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


peer = _load()


def _split(n: int) -> list[str]:
    if n == 1:
        return ["train"]
    if n == 2:
        return ["train", "test"]
    return ["train"] * (n - 2) + ["valid", "test"]


def write_dataset(path, sequences: dict[str, list[str]], catalogue: list[str]) -> None:
    """A dataset directory as `vmr prepare` writes it (the parts the peer script reads)."""
    path.mkdir(parents=True, exist_ok=True)
    rows = {"user": [], "item": [], "time": [], "split": []}
    for user, items in sequences.items():
        rows["user"] += [user] * len(items)
        rows["item"] += items
        rows["time"] += [float(t) for t in range(len(items))]
        rows["split"] += _split(len(items))
    pl.DataFrame(rows).write_parquet(path / "interactions.parquet")
    pl.DataFrame({"item": catalogue}).write_parquet(path / "items.parquet")
    (path / "dataset.json").write_text(json.dumps({"format": 1, "inputs_sha256": "x"}))


SEQS = {
    "007": ["a", "b", "c", "d", "e"],
    "7": ["b", "b", "c", "a"],  # a repeated item, and '7' is not '007'
    "u3": ["c", "d", "e", "a", "b", "c"],
    "u4": ["e", "d", "c", "b"],
}
CATALOGUE = ["a", "b", "c", "d", "e", "never-bought"]


def test_convert_writes_ids_verbatim_and_positions_as_time(tmp_path):
    write_dataset(tmp_path / "ds", SEQS, CATALOGUE)
    conv = peer.convert(tmp_path / "ds", tmp_path / "out")
    lines = conv.inter_path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert lines[1:6] == [f"007\t{i}\t{t}.0" for t, i in enumerate(SEQS["007"])]
    assert lines[6:10] == ["7\tb\t0.0", "7\tb\t1.0", "7\tc\t2.0", "7\ta\t3.0"]
    assert len(lines) == 1 + sum(map(len, SEQS.values()))
    assert conv.item_path.read_text().splitlines() == ["item_id:token"] + CATALOGUE
    assert (conv.users, conv.items, conv.interactions) == (4, 6, 19)
    assert conv.inter_path == tmp_path / "out" / "vmr" / "vmr.inter"


def test_expected_samples_follow_vmr_split(tmp_path):
    write_dataset(tmp_path / "ds", SEQS, CATALOGUE)
    exp = peer.expected_samples(peer.convert(tmp_path / "ds", tmp_path / "out").frame)
    # valid/test: one sample per user, the second-to-last / last item, the whole past as history
    assert sorted(exp["test"].rows()) == [("007", "e", 4), ("7", "a", 3), ("u3", "c", 5),
                                          ("u4", "b", 3)]
    assert sorted(exp["valid"].rows()) == [("007", "d", 3), ("7", "c", 2), ("u3", "b", 4),
                                           ("u4", "c", 2)]
    # train: every train item after the user's first, predicted from the items before it
    assert sorted(exp["train"].filter(pl.col("user") == "u3").rows()) == [
        ("u3", "a", 3), ("u3", "d", 1), ("u3", "e", 2)]
    assert len(exp["train"]) == sum(len(s) - 3 for s in SEQS.values())


def test_expected_history_is_capped(tmp_path):
    long = [f"i{k}" for k in range(60)]
    write_dataset(tmp_path / "ds", {"u": long}, long)
    exp = peer.expected_samples(peer.convert(tmp_path / "ds", tmp_path / "out").frame, max_len=50)
    assert exp["test"].rows() == [("u", "i59", 50)]
    assert exp["train"]["hist"].max() == 50 and exp["train"]["hist"].min() == 1


def test_histories_are_the_items_before_the_target(tmp_path):
    write_dataset(tmp_path / "ds", SEQS, CATALOGUE)
    frame = peer.convert(tmp_path / "ds", tmp_path / "out").frame
    assert peer.histories(frame, "valid")["7"] == ["b", "b"]
    assert peer.histories(frame, "test")["u4"] == ["e", "d", "c"]


@pytest.mark.parametrize("n", [2, 3])
def test_short_users_are_refused(tmp_path, n):
    seqs = dict(SEQS, short=["a", "b", "c"][:n])
    write_dataset(tmp_path / "ds", seqs, CATALOGUE)
    with pytest.raises(VmrError, match=r"1 user\(s\) have 2 or 3 interactions \(first: 'short'\)"):
        peer.convert(tmp_path / "ds", tmp_path / "out")


@pytest.mark.parametrize("bad", ["NA", "null", "a\tb", 'say "hi"', "[PAD]"])
def test_ids_recbole_would_mangle_are_refused(tmp_path, bad):
    write_dataset(tmp_path / "ds", dict(SEQS, u5=["a", "b", bad, "c"]), CATALOGUE + [bad])
    with pytest.raises(VmrError, match="cannot be written to a RecBole atomic file"):
        peer.convert(tmp_path / "ds", tmp_path / "out")


def test_wrong_split_column_is_refused(tmp_path):
    write_dataset(tmp_path / "ds", SEQS, CATALOGUE)
    path = tmp_path / "ds" / "interactions.parquet"
    df = pl.read_parquet(path)
    df = df.with_columns(split=pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("valid"))
                         .otherwise(pl.col("split")))
    df.write_parquet(path)
    with pytest.raises(VmrError, match=r"row 3 \(user '007'\) has split 'valid'.*makes it 'train'"):
        peer.convert(tmp_path / "ds", tmp_path / "out")


def test_item_missing_from_catalogue_is_refused(tmp_path):
    write_dataset(tmp_path / "ds", SEQS, ["a", "b", "c", "d"])
    with pytest.raises(VmrError, match=r"item 'e' \(user '007'\) is not in"):
        peer.convert(tmp_path / "ds", tmp_path / "out")


def test_missing_dataset_is_refused(tmp_path):
    with pytest.raises(VmrError, match="interactions.parquet: not found"):
        peer.convert(tmp_path / "nothing", tmp_path / "out")


@pytest.mark.slow
@pytest.mark.skipif(not RB_PYTHON.exists(), reason="no .venv-recbole (run `make recbole-env`)")
def test_recbole_sasrec_end_to_end(tmp_path):
    rng = random.Random(0)
    items = [f"{k:03d}" for k in range(40)] + ["7"]
    seqs = {f"{u:04d}": [rng.choice(items) for _ in range(rng.randint(4, 12))] for u in range(150)}
    write_dataset(tmp_path / "ds", seqs, items)
    proc = subprocess.run([str(RB_PYTHON), str(SCRIPT), "--data", str(tmp_path / "ds"),
                           "--out", str(tmp_path / "out"), "--epochs", "2", "--minutes", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "recbole.json").read_text())
    assert result["split"]["valid_users"] == result["split"]["test_users"] == 150
    assert result["split"]["items"] == 41
    assert result["epochs_run"] == 2 and result["stopped"] == "max_epochs"
    assert result["test"]["users"] == 150
    assert 0.0 <= result["test"]["NDCG@10"] <= result["test"]["HR@10"] <= 1.0
    assert result["test"]["HR@5"] <= result["test"]["HR@10"]
    assert "recbole" in result["versions"] and result["s_per_epoch"] > 0
