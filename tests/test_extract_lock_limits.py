"""Limits of what extraction can write and decode: every path the cache or the extraction cannot
write ends as one line `error: ...` (exit 1, no traceback); decoded images are bounded in pixels
(vmr/extract/images.py) so one huge picture cannot take half a gigabyte of a decode worker."""

import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers.media import PY, REPO, make_image, tiny_open_clip, vmr, write_dataset

from vmr.cache import read as cache_read
from vmr.cache import store
from vmr.errors import VmrError
from vmr.extract.decode import DecodeFailure, PixelSpec
from vmr.extract.importer import import_features
from vmr.extract.runner import ExtractOptions, run_extract


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    cfg, ckpt = tiny_open_clip(root)
    m = root / "m"
    m.mkdir()
    paths = [make_image(m / f"{k}.png", seed=k) for k in range(3)]
    data = write_dataset(root / "ds", ["a", "b", "c"], image=paths)
    np.save(root / "f.npy", np.ones((3, 4), np.float32))
    (root / "ids.txt").write_text("a\nb\nc\n")
    return root, data, paths, f"open_clip:{cfg}:{ckpt}"


def one_error_line(p) -> str:
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


@pytest.mark.parametrize("where, reason", [
    ("/proc/x.h5", "cannot create lock file /proc/x.h5.lock-image: No such file or directory"),
    ("/sys/x.h5", "cannot create lock file /sys/x.h5.lock-image: Permission denied"),
    ("FILE/x.h5", "cannot create the folder FILE of cache FILE/x.h5: a file is in the way"),
])
def test_unwritable_cache_paths_are_one_line_errors(ds, tmp_path, where, reason):
    root, data, _, clip = ds
    (tmp_path / "FILE").write_text("a file where a folder is expected")
    where = where.replace("FILE", str(tmp_path / "FILE"))
    reason = reason.replace("FILE", str(tmp_path / "FILE"))
    line = one_error_line(vmr("extract", "--data", data, "--modality", "image", "--model", clip,
                              "--cache", where, "--device", "cpu", check=False))
    assert reason in line
    line = one_error_line(vmr("import-features", "--data", data, "--modality", "text",
                              "--features", root / "f.npy", "--ids", root / "ids.txt",
                              "--cache", where, check=False))
    assert reason.replace("lock-image", "lock-text") in line


def test_merge_into_an_unwritable_path(ds, tmp_path):
    root, data, _, _ = ds
    shard = str(tmp_path / "s.h5")
    import_features(data=data, modality="text", features=str(root / "f.npy"),
                    ids=str(root / "ids.txt"), cache=shard)
    line = one_error_line(vmr("cache", "merge", shard, "--out", "/proc/merged.h5", check=False))
    assert "cannot create lock file /proc/merged.h5.lock-text" in line


@pytest.fixture
def readonly_dataset(ds, tmp_path):
    """The dataset copied onto a tmpfs that is then remounted read-only (root can write into
    any folder whatever its mode, but not into a read-only file system)."""
    import shutil

    from helpers import tmpfs

    with tmpfs(tmp_path / "ro", "4m") as mnt:
        shutil.copytree(ds[1], mnt / "ds")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield str(mnt / "ds")


def test_read_only_dataset_folder(ds, readonly_dataset, tmp_path):
    _, _, _, clip = ds
    data = readonly_dataset
    line = one_error_line(vmr("extract", "--data", data, "--modality", "image", "--model", clip,
                              "--device", "cpu", check=False))
    assert line == (f"error: cannot create lock file {data}/features.h5.lock-image: Read-only "
                    "file system; the cache's folder must be writable (or pass --cache PATH "
                    "somewhere writable)")
    cache = str(tmp_path / "elsewhere.h5")  # a read-only dataset is fine with --cache elsewhere
    vmr("extract", "--data", data, "--modality", "image", "--model", clip, "--cache", cache,
        "--device", "cpu", "--workers", "0")
    assert cache_read.read_modality(cache, ["a", "b", "c"], "image")[1].all()


def test_progress_and_cache_writes_refused(ds, tmp_path, monkeypatch):
    """Simulated PermissionErrors where a root test cannot provoke real ones: the progress
    folder cannot be created; the new cache file cannot be opened."""
    _, data, _, clip = ds
    cache = str(tmp_path / "c.h5")
    makedirs = os.makedirs

    def refuse(path, *a, **kw):
        if ".partial-" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return makedirs(path, *a, **kw)

    monkeypatch.setattr(os, "makedirs", refuse)
    opts = ExtractOptions(data=data, modality="image", model=clip, cache=cache, workers=0,
                          device="cpu")
    with pytest.raises(VmrError, match=rf"^cannot write progress directory {cache}.partial-image: "
                                       r"Permission denied$"):
        run_extract(opts)
    monkeypatch.setattr(os, "makedirs", makedirs)

    def no_open(path, mode="r", *a, **kw):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(store, "open", no_open, raising=False)
    with pytest.raises(VmrError, match=rf"^cannot write cache {cache}: Permission denied; the "
                                       "previous cache is unchanged$"):
        run_extract(opts)
    monkeypatch.delattr(store, "open")
    assert not os.path.exists(cache)
    out = run_extract(opts)  # the saved progress finishes the job
    assert out.startswith("image: 0 items encoded") and os.path.exists(cache)
    assert not [f for f in os.listdir(tmp_path) if ".lock-" in f or ".tmp-" in f]


# ------------------------------------------------------------------------------------ images
def write_png(path: Path, w: int, h: int, bands: int = 3) -> None:
    """A w x h PNG written row by row (the test never holds the image in memory)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    z = zlib.compressobj(6)
    body = []
    row = np.empty(w * bands, np.uint8)
    for y in range(h):
        row[:] = y % 251
        body.append(z.compress(b"\0" + row.tobytes()))
    body.append(z.flush())
    color = {1: 0, 3: 2, 4: 6}[bands]
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b""))


def decode_peak(path, env=None) -> tuple[str, float]:
    """Decode one image in a fresh process: (result, peak memory growth in MB)."""
    code = ("import resource, sys\n"
            "from vmr.extract.decode import DecodeFailure, PixelSpec\n"
            "from vmr.extract.images import decode_image\n"
            "import PIL.Image, numpy\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n"
            f"    out = 'shape %s' % (decode_image({str(path)!r}, PixelSpec(256, 224),\n"
            "                                      DecodeFailure).shape,)\n"
            "except DecodeFailure as e:\n"
            "    out = 'failure: %s' % e\n"
            "print(out)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    p = subprocess.run([PY, "-c", code], cwd=str(REPO), capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})))
    assert p.returncode == 0, p.stderr
    out, peak = p.stdout.strip().splitlines()
    return out, float(peak)


def test_huge_images_are_bounded(tmp_path):
    png = tmp_path / "huge.png"
    write_png(png, 8000, 8000)  # 192 MB as RGB; decoding it used to take 514 MB
    out, peak = decode_peak(png)
    assert out == ("failure: image too large: 8000 x 8000 = 64.0 million pixels (limit 25.0 "
                   "million, VMR_MAX_IMAGE_PIXELS); downscale it")
    assert peak < 30
    from PIL import Image

    jpg = tmp_path / "huge.jpg"
    Image.new("L", (8000, 8000), 90).save(jpg, quality=70)
    out, peak = decode_peak(jpg)  # decoded at 1/8 scale: accepted, small
    assert out == "shape (1, 224, 224, 3)" and peak < 40
    rgba = tmp_path / "rgba.png"
    write_png(rgba, 3000, 3000, bands=4)  # within the limit: 36 MB as RGBA
    out, peak = decode_peak(rgba)
    assert out == "shape (1, 224, 224, 3)" and peak < 36 + 27 + 30
    out, _ = decode_peak(rgba, env={"VMR_MAX_IMAGE_PIXELS": "1000000"})
    assert out.startswith("failure: image too large: 3000 x 3000 = 9.0 million pixels (limit 1.0")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_bounded_loader_gives_the_same_pixels(tmp_path, mode, fmt):
    from PIL import Image

    from vmr.extract import decode, images

    if fmt == "jpg" and mode in ("RGBA", "P"):
        pytest.skip("JPEG has no alpha or palette")
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)).convert(mode)
    path = str(tmp_path / f"x.{fmt}")
    im.save(path)
    spec = PixelSpec(256, 224)
    assert np.array_equal(images.decode_image(path, spec), decode.decode_image(path, spec))
    with pytest.raises(DecodeFailure, match="missing file"):
        images.decode_image(str(tmp_path / "none.png"), spec, DecodeFailure)


def test_extraction_records_a_huge_image_as_a_failure(ds, tmp_path):
    """An 8000 x 8000 image is refused from its header by every decode worker."""
    _, _, paths, clip = ds
    write_png(tmp_path / "huge.png", 8000, 8000)
    data = write_dataset(tmp_path / "d", ["ok", "huge"], image=[paths[0],
                                                                str(tmp_path / "huge.png")])
    run_extract(ExtractOptions(data=data, modality="image", model=clip, workers=1, device="cpu"))
    with cache_read.open_cache(os.path.join(data, "features.h5")) as f:
        assert cache_read.read_failures(f["image"])[0][1].startswith("image too large: 8000 x 8000")
