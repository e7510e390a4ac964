"""`vmr import-features`: .npy and raw float32 (.feat*) matrices, id matching, clear errors."""

import numpy as np
import pytest
from helpers.media import read_group, vmr, write_dataset

from vmr.errors import VmrError
from vmr.extract.importer import import_features

IDS = ["007", "7", "a", "b", "c"]


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "ds", IDS, text=["t"] * 5)


def test_npy_with_partial_and_unknown_ids(tmp_path, data):
    feats = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    np.save(tmp_path / "f.npy", feats)
    # "07" and "x" are not dataset ids ("07" != "007"); "b" and "c" have no row
    (tmp_path / "ids.txt").write_text("7\n07\n007\nx\n")
    p = vmr("import-features", "--data", data, "--modality", "text", "--features",
            tmp_path / "f.npy", "--ids", tmp_path / "ids.txt")
    assert "imported 2 of 5 items (6-d, float16)" in p.stdout
    assert "3 dataset items are not in" in p.stdout and "2 ids in" in p.stdout
    assert "'07', 'x'" in p.stdout
    ids, got, present, done, failures, attrs = read_group(f"{data}/features.h5", "text")
    assert ids == IDS and present.tolist() == [True, True, False, False, False] and done.all()
    np.testing.assert_array_equal(got[0], feats[2])  # "007" is row 3
    np.testing.assert_array_equal(got[1], feats[0])  # "7" is row 1
    assert not got[2:].any()
    assert attrs["encoder"] == "import:f.npy" and attrs["weights"].startswith("sha256:")


def test_raw_float32_feat_file(tmp_path, data):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 8)).astype("<f4")
    feats[3, 2] = np.nan
    (tmp_path / "Beauty.feat1CLS").write_bytes(feats[::-1].tobytes())  # rows in reverse order
    (tmp_path / "ids.txt").write_text("\n".join(IDS[::-1]))
    out = import_features(data=data, modality="image", features=str(tmp_path / "Beauty.feat1CLS"),
                          ids=str(tmp_path / "ids.txt"), dim=8, dtype="float32")
    assert "imported 4 of 5" in out and "1 rows had non-finite values" in out
    _, got, present, _, failures, _ = read_group(f"{data}/features.h5", "image")
    assert got.dtype == np.float32 and present.tolist() == [True, True, True, False, True]
    np.testing.assert_array_equal(got[present], feats[present])
    assert failures == [("b", "non-finite values in row 2 of Beauty.feat1CLS")]
    with pytest.raises(VmrError, match="already holds image features; pass --overwrite"):
        import_features(data=data, modality="image", features=str(tmp_path / "Beauty.feat1CLS"),
                        ids=str(tmp_path / "ids.txt"), dim=8)


def test_import_errors(tmp_path, data):
    raw = tmp_path / "x.feat"
    raw.write_bytes(np.zeros((5, 8), "<f4").tobytes())
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(IDS) + "\n")

    def run(**kw):
        args = dict(data=data, modality="text", features=str(raw), ids=str(ids), dim=8)
        args.update(kw)
        return import_features(**args)

    with pytest.raises(VmrError, match=r"size 160 bytes is not a positive multiple of 4 \* dim"):
        run(dim=12)
    with pytest.raises(VmrError, match="pass --dim"):
        run(dim=None)
    with pytest.raises(VmrError, match="has 4 rows but .* lists 5 ids"):
        run(dim=10)
    dup = tmp_path / "dup.txt"
    dup.write_text("007\n7\n007\na\nb\n")
    with pytest.raises(VmrError, match="id '007' on lines 1 and 3"):
        run(ids=str(dup))
    gap = tmp_path / "gap.txt"
    gap.write_text("007\n\n7\na\nb\n")
    with pytest.raises(VmrError, match="line 2 is empty"):
        run(ids=str(gap))
    np.save(tmp_path / "m.npy", np.zeros((5, 8), np.float32))
    with pytest.raises(VmrError, match="rows have 8 values but --dim is 4"):
        run(features=str(tmp_path / "m.npy"), dim=4)
    np.save(tmp_path / "big.npy", np.full((5, 8), 1e6, np.float32))
    with pytest.raises(VmrError, match="exceeds the float16 range; pass --dtype float32"):
        run(features=str(tmp_path / "big.npy"), dim=None)
    p = vmr("import-features", "--data", data, "--modality", "text", "--features", raw,
            "--ids", ids, "--dim", "3", check=False)
    assert p.returncode == 1 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
