"""`vmr import-features`: bring in item features computed elsewhere.

Accepted matrices: `.npy` (2-D, any float type), or a raw little-endian float32 matrix of any
other name (e.g. the `.feat1CLS` / `.feat*` files UniSRec and MISSRec releases ship), whose row k
belongs to the k-th id of the --ids file (one id per line) and whose width is --dim.

Imported rows have no source content vmr could fingerprint: each records
`import:sha256:<file hash>:row:<k>` (`import:absent` for items the file lacks), which freshness
checks skip (vmr/extract/freshness.py). The import holds the cache's lock for the modality
(vmr/cache/lock.py), like an extraction.
"""

from __future__ import annotations

import os

from vmr.cache.read import resolve_cache
from vmr.errors import VmrError

CHUNK = 4096


def _read_ids(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise VmrError(f"--ids file {path} not found")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise VmrError(f"--ids file {path} is not UTF-8 text ({e.reason} at byte {e.start})"
                       ) from None
    while lines and lines[-1] == "":  # a trailing blank line is harmless
        lines.pop()
    seen: dict[str, int] = {}
    for k, line in enumerate(lines, 1):
        if line == "":
            raise VmrError(f"--ids file {path}: line {k} is empty (row {k} of the features needs "
                           "an id)")
        if line in seen:
            raise VmrError(f"--ids file {path}: id {line!r} on lines {seen[line]} and {k}")
        seen[line] = k
    return lines


def _open_matrix(path: str, dim: int | None):
    """The features as an array-like [rows, dim] (memory-mapped, nothing loaded yet)."""
    import numpy as np

    if not os.path.isfile(path):
        raise VmrError(f"--features file {path} not found")
    if path.endswith(".npy"):
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise VmrError(f"{path}: not a readable .npy matrix ({e})") from None
        if arr.ndim != 2:
            raise VmrError(f"{path}: expected a 2-D matrix (items x dim), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise VmrError(f"{path}: expected floating-point features, got {arr.dtype}")
        if dim is not None and arr.shape[1] != dim:
            raise VmrError(f"{path}: rows have {arr.shape[1]} values but --dim is {dim}")
        return arr
    if dim is None:
        raise VmrError(f"{path} is not .npy: pass --dim, the number of float32 values per row "
                       "(e.g. 768 for BERT features)")
    size = os.path.getsize(path)
    if size == 0 or size % (4 * dim):
        raise VmrError(f"{path}: size {size:,} bytes is not a positive multiple of 4 * dim = "
                       f"{4 * dim:,} (float32 rows of {dim} values); check --dim")
    return np.memmap(path, dtype="<f4", mode="r", shape=(size // (4 * dim), dim))


def _gather(arr, idx, dtype):
    """arr[idx] read in increasing row order (friendly to a memory-mapped file)."""
    import numpy as np

    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), arr.shape[1]), dtype=dtype)
    out[order] = np.asarray(arr[idx[order]], dtype=dtype)
    return out


def import_features(data: str, modality: str, features: str, ids: str, dim: int | None = None,
                    cache: str | None = None, dtype: str = "float16",
                    overwrite: bool = False) -> str:
    from vmr.cache import read as cache_read
    from vmr.cache.lock import modality_lock
    from vmr.extract.items import load_items

    if modality not in cache_read.MODALITIES:
        raise VmrError(f"--modality {modality!r}: expected video, image or text")
    if dtype not in ("float16", "float32"):
        raise VmrError(f"--dtype {dtype!r}: expected float16 or float32")
    item_ids = load_items(data, check_media=False).ids
    cache = str(resolve_cache(data, cache))
    file_ids = _read_ids(ids)
    arr = _open_matrix(features, dim)
    if arr.shape[0] != len(file_ids):
        raise VmrError(f"{features} has {arr.shape[0]:,} rows but {ids} lists {len(file_ids):,} "
                       "ids; row k must belong to the k-th id")
    if os.path.isdir(cache):
        raise VmrError(f"cache {cache} is a directory; --cache must name an HDF5 file")
    with modality_lock(cache, modality, f"vmr import-features --data {data} --modality "
                                        f"{modality}"):
        return _import_locked(item_ids, modality, features, ids, file_ids, arr, cache, dtype,
                              overwrite)


def _check_cache(cache: str, item_ids: list[str], modality: str, overwrite: bool) -> bool:
    """An existing cache must be this dataset's (or made before the catalogue grew: then True,
    carried over by store.publish) and, without --overwrite, lack the modality."""
    from vmr.cache import read as cache_read

    remap = False
    if os.path.exists(cache):
        cache_ids = cache_read.read_item_ids(cache)
        remap = cache_ids != item_ids and set(cache_ids) <= set(item_ids)
        if not remap:
            cache_read.check_item_ids(cache, cache_ids, item_ids)
        if cache_read.modality_attrs(cache, modality) is not None and not overwrite:
            raise VmrError(f"{cache} already holds {modality} features; pass --overwrite to "
                           "replace them")
    return remap


def _usable_rows(arr, src, item_ids: list[str], features: str, dtype: str):
    """Pass 1 over the file: which items get a row (present), and the failures of rows with
    non-finite values; a value beyond float16's range with --dtype float16 is an error."""
    import numpy as np

    n = len(item_ids)
    present = src >= 0
    failures = []
    limit = 65504.0 if dtype == "float16" else np.inf
    for a in range(0, n, CHUNK):
        rows = np.flatnonzero(present[a:a + CHUNK]) + a
        if not len(rows):
            continue
        block = _gather(arr, src[rows], np.float64)
        finite = np.isfinite(block).all(axis=1)
        for r in rows[~finite]:
            present[r] = False
            failures.append((item_ids[r], f"non-finite values in row {src[r] + 1} of "
                                          f"{os.path.basename(features)}"))
        if finite.any() and np.abs(block[finite]).max() > limit:
            r = rows[finite][int(np.argmax(np.abs(block[finite]).max(axis=1)))]
            raise VmrError(f"{features}: row {src[r] + 1} (item {item_ids[r]!r}) exceeds the "
                           "float16 range; pass --dtype float32")
    return present, failures


def _row_copier(arr, src, present, dtype: str):
    """A `write_features` for pass 2: copy the usable rows, in dataset order, chunk by chunk."""
    import numpy as np

    def write_features(ds) -> None:
        for a in range(0, len(present), CHUNK):
            rows = np.flatnonzero(present[a:a + CHUNK]) + a
            if not len(rows):
                continue
            ds[rows.tolist()] = _gather(arr, src[rows], np.float32).astype(dtype)

    return write_features


def _import_locked(item_ids, modality, features, ids, file_ids, arr, cache, dtype, overwrite):
    """The import under the cache's lock: check, map rows to items, publish, summarize."""
    import numpy as np

    from vmr.cache import store
    from vmr.extract.encoders import file_sha256

    d = int(arr.shape[1])
    remap = _check_cache(cache, item_ids, modality, overwrite)
    where = {i: k for k, i in enumerate(file_ids)}
    src = np.array([where.get(i, -1) for i in item_ids], dtype=np.int64)
    known = set(item_ids)
    unknown = [i for i in file_ids if i not in known]
    n = len(item_ids)
    present, failures = _usable_rows(arr, src, item_ids, features, dtype)
    digest = file_sha256(features)
    # no source content to fingerprint: the vector's origin, marked so freshness checks skip it
    fps = [f"import:sha256:{digest}:row:{k + 1}" if k >= 0 else "import:absent"
           for k in src.tolist()]
    attrs = {"encoder": f"import:{os.path.basename(features)}",
             "weights": "sha256:" + digest, "dim": d, "dtype": dtype,
             "fps": 0.0, "max_frames": 0, "pooling": "unknown", "batch_size": 0,
             **store.base_attrs()}
    copy = _row_copier(arr, src, present, dtype)
    group = store.ModalityData(attrs=attrs, present=present, done=np.ones(n, bool),
                               failures=failures, write_features=copy, dtype=dtype, dim=d,
                               fingerprints=fps)
    store.publish(cache, item_ids, {modality: group}, replace=True, remap=remap)
    absent = int((src < 0).sum())
    lines = [f"{modality}: imported {int(present.sum()):,} of {n:,} items ({d}-d, {dtype}) from "
             f"{features} into {cache}"]
    if absent:
        first = ", ".join(repr(item_ids[r]) for r in np.flatnonzero(src < 0)[:3])
        lines.append(f"  {absent:,} dataset items are not in {ids} (not present; e.g. {first})")
    if unknown:
        lines.append(f"  {len(unknown):,} ids in {ids} are not in the dataset and were ignored "
                     f"(e.g. {', '.join(repr(i) for i in unknown[:3])})")
    if failures:
        lines.append(f"  {len(failures):,} rows had non-finite values (not present)")
    return "\n".join(lines)
