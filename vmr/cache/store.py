"""The feature cache file: one HDF5 file, readable with plain h5py / h5ls.

Layout::

    /                     attrs: format = 1
    /item_ids             variable-length UTF-8 strings, the dataset's item order
    /<modality>/          modality in text, image, video; attrs: encoder, weights, dim, dtype, fps,
                          max_frames, pooling, batch_size, vmr_version, created (+ shard, shard_unit
                          in shard files)
        features          n_items x dim, float16 or float32, uncompressed; rows of items that are
                          not present are 0
        present           bool n_items: the item has a vector
        done              bool n_items: the item was processed (success or failure)
        failure_ids       UTF-8 strings: items that failed ...
        failure_reasons   ... and why (missing file, decode error, timeout, empty text)
        fingerprints      UTF-8 strings, one per item: what was encoded for that row, as the
                          writer describes it ("" = unknown; absent in caches of older vmr).
                          Opaque here; vmr/extract/freshness.py makes and checks them

A cache file is never modified in place: `publish` writes a complete new file next to it and
renames it over the old one, so a reader (or a crash) only ever sees a whole file.

Reading lives in vmr/cache/read.py (import it from there: this module re-exports nothing); this
module holds the writing. Locks: vmr/cache/lock.py.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import os
from dataclasses import dataclass
from typing import Callable

from vmr._version import __version__
from vmr.cache.lock import publish_lock
from vmr.cache.read import (FORMAT, MODALITIES, check_group, check_item_ids, group_attrs,
                            open_cache, read_failures, read_fingerprints, read_ids_from)
from vmr.errors import VmrError
from vmr.fsio import os_reason

CHUNK = 4096


@dataclass
class ModalityData:
    """Everything `publish` needs to write one modality group.

    `write_features(ds)` fills the (n_items x dim) dataset `ds`, which starts all zeros; it can
    stream rows in from anywhere (progress files, another cache, a memory-mapped matrix).

    `fingerprints` (optional, one string per item, "" = unknown) are opaque to the cache: what
    was encoded for each row, as the writer describes it. `keep` (optional bool mask over the
    items) names rows to take unchanged from the modality's group in the cache being replaced:
    their features, present flag, failure and fingerprint (where `fingerprints` gives "")."""

    attrs: dict
    present: "np.ndarray"  # noqa: F821
    done: "np.ndarray"  # noqa: F821
    failures: list[tuple[str, str]]
    write_features: Callable[["h5py.Dataset"], None]  # noqa: F821
    dtype: str = "float16"
    dim: int = 0
    fingerprints: list[str] | None = None
    keep: "np.ndarray | None" = None  # noqa: F821


def base_attrs() -> dict:
    """Attributes every modality group carries besides the encoder settings."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {"vmr_version": __version__, "created": now.isoformat()}


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))  # noqa: SIM115
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _strings(g, name: str, values) -> None:
    import h5py
    import numpy as np

    g.create_dataset(name, data=np.array(list(values), dtype=object), dtype=h5py.string_dtype())


def _sorted_failures(failures, index: dict[str, int]) -> list[tuple[str, str]]:
    return sorted(failures, key=lambda x: index.get(x[0], len(index)))


def _copy_rows(src, ds, old_rows, new_rows) -> None:
    """ds[new_rows] = src[old_rows], reading `src` in contiguous blocks (h5py wants increasing
    indices)."""
    import numpy as np

    if not len(old_rows):
        return
    order = np.argsort(old_rows)
    so, sn = old_rows[order], new_rows[order]
    for a in range(0, int(so[-1]) + 1, CHUNK):
        lo, hi = np.searchsorted(so, a), np.searchsorted(so, a + CHUNK)
        if lo == hi:
            continue
        block = src[a:min(a + CHUNK, src.shape[0])]
        o = np.argsort(sn[lo:hi])
        ds[sn[lo:hi][o].tolist()] = block[so[lo:hi][o] - a]


def _write_group(f, path: str, modality: str, item_ids: list[str], data: ModalityData, old,
                 old_ids: list[str] | None) -> None:
    import numpy as np

    n = len(item_ids)
    g = f.create_group(modality)
    for k, v in data.attrs.items():
        g.attrs[k] = v
    ds = g.create_dataset("features", shape=(n, data.dim), dtype=data.dtype, fillvalue=0)
    data.write_features(ds)
    present = np.array(data.present, dtype=bool)
    done = np.array(data.done, dtype=bool)
    failures = list(data.failures)
    fps = None if data.fingerprints is None else list(data.fingerprints)
    keep = np.zeros(n, bool) if data.keep is None else np.asarray(data.keep, dtype=bool)
    if keep.any():
        changed = f"cache {path}: its {modality} features changed while this run was working " \
                  "(another process replaced them?); rerun the same command"
        if old is None or modality not in old:
            raise VmrError(changed)
        og = old[modality]
        a = group_attrs(og)
        if int(a.get("dim", -1)) != data.dim or str(a.get("dtype")) != data.dtype:
            raise VmrError(changed)
        index = {i: r for r, i in enumerate(old_ids)}
        new_rows = np.flatnonzero(keep)
        try:
            old_rows = np.array([index[item_ids[r]] for r in new_rows], dtype=np.int64)
        except KeyError:
            raise VmrError(changed) from None
        if not og["done"][...].astype(bool)[old_rows].all():
            raise VmrError(changed)
        old_present = og["present"][...].astype(bool)[old_rows]
        present[new_rows] = old_present
        done[new_rows] = True
        _copy_rows(og["features"], ds, old_rows[old_present], new_rows[old_present])
        kept_ids = {item_ids[r] for r in new_rows}
        failures = [x for x in failures if x[0] not in kept_ids]
        failures += [x for x in read_failures(og) if x[0] in kept_ids]
        old_fps = read_fingerprints(og)
        if fps is None and old_fps is not None:
            fps = [""] * n
        if fps is not None:
            for r, o in zip(new_rows.tolist(), old_rows.tolist()):
                if not fps[r]:
                    fps[r] = old_fps[o] if old_fps is not None else ""
    g.create_dataset("present", data=present)
    g.create_dataset("done", data=done)
    failures = _sorted_failures(failures, {i: r for r, i in enumerate(item_ids)})
    _strings(g, "failure_ids", (i for i, _ in failures))
    _strings(g, "failure_reasons", (r for _, r in failures))
    if fps is not None:
        _strings(g, "fingerprints", fps)


def _remap_group(og, f, modality: str, old_ids: list[str], item_ids: list[str]) -> None:
    """Copy a group made for `old_ids` (all of them in `item_ids`) to the new item order: rows
    move with their ids; items new to the cache are not done (the modality is incomplete)."""
    import numpy as np

    index = {i: r for r, i in enumerate(item_ids)}
    n = len(item_ids)
    g = f.create_group(modality)
    for k, v in og.attrs.items():
        g.attrs[k] = v
    src = og["features"]
    ds = g.create_dataset("features", shape=(n, src.shape[1]), dtype=src.dtype, fillvalue=0)
    new_of_old = np.array([index[i] for i in old_ids], dtype=np.int64)
    _copy_rows(src, ds, np.arange(len(old_ids)), new_of_old)
    for name in ("present", "done"):
        arr = np.zeros(n, bool)
        arr[new_of_old] = og[name][...].astype(bool)
        g.create_dataset(name, data=arr)
    failures = _sorted_failures(read_failures(og), index)
    _strings(g, "failure_ids", (i for i, _ in failures))
    _strings(g, "failure_reasons", (r for _, r in failures))
    old_fps = read_fingerprints(og)
    if old_fps is not None:
        fps = [""] * n
        for o, r in enumerate(new_of_old.tolist()):
            fps[r] = old_fps[o]
        _strings(g, "fingerprints", fps)


def _checked_ids(f, path: str) -> list[str]:
    """The ids of an existing cache whose groups are sound (what a publish carries over)."""
    ids = read_ids_from(f, path)
    for m in MODALITIES:
        if m in f:
            check_group(f[m], len(ids), path, m)
    return ids


def _remove_stale_tmps(path: str) -> None:
    """Temporary files left next to `path` by a killed publisher (called under the lock)."""
    for stale in glob.glob(glob.escape(path) + ".tmp-*"):
        with contextlib.suppress(OSError):
            os.remove(stale)


def _open_old(path: str, item_ids: list[str], groups: dict, replace: bool, remap: bool):
    """The cache being replaced, checked and opened for reading, and its item ids; (None,
    None) when there is none."""
    import h5py

    if not os.path.exists(path):
        return None, None
    with open_cache(path) as of:
        old_ids = _checked_ids(of, path)
        if old_ids != item_ids and not (remap and set(old_ids) <= set(item_ids)):
            check_item_ids(path, old_ids, item_ids)
        clash = [m for m in groups if m in of]
        if clash and not replace:
            raise VmrError(f"cache {path} already holds {', '.join(clash)} features; "
                           "remove the file or write to another path")
    return h5py.File(path, "r"), old_ids


def _build_in_memory(path: str, item_ids: list[str], groups: dict, old, old_ids):
    """The new cache file as an in-memory HDF5 image (io.BytesIO): the groups given, the other
    groups of `old` copied (or remapped to the new item order)."""
    import io

    import h5py
    import numpy as np

    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.attrs["format"] = FORMAT
        f.create_dataset("item_ids", data=np.array(item_ids, dtype=object),
                         dtype=h5py.string_dtype())
        for m in MODALITIES:
            if m in groups:
                _write_group(f, path, m, item_ids, groups[m], old, old_ids)
            elif old is not None and m in old:
                if old_ids == item_ids:
                    old.copy(old[m], f, name=m)
                else:
                    _remap_group(old[m], f, m, old_ids, item_ids)
    return image


def _write_synced(tmp: str, image) -> None:
    """Write the in-memory file to `tmp` with plain file I/O, in 16 MiB pieces, and sync it."""
    buf = image.getbuffer()
    with open(tmp, "wb") as out:
        for a in range(0, len(buf), 1 << 24):
            out.write(buf[a:a + (1 << 24)])
        out.flush()
        os.fsync(out.fileno())
    del buf


def publish(path: str, item_ids: list[str], groups: dict[str, ModalityData],
            replace: bool = True, remap: bool = False) -> None:
    """Write a new version of the cache at `path` with each modality in `groups` set to its data.

    Other modality groups of an existing cache are copied over unchanged (with replace=False a
    modality already there is an error). With remap=True an existing cache made for a subset of
    `item_ids` is accepted: its other groups are carried over row by row (by item id), the new
    items not done. The new HDF5 file is built in memory -- HDF5 can crash outright when a write
    fails half-way (disk full), so it never touches the disk itself -- then written to
    `path.tmp-<pid>` with plain file I/O, synced, and renamed over `path` while holding the
    publish lock (vmr.cache.lock): at every moment `path` is either the old complete file or the
    new complete file. Any failure (a full disk, Ctrl-C) removes the temporary file and leaves
    the old cache as it was."""
    path = os.path.realpath(path)    # a link to the cache: the file it names is replaced
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        raise VmrError(f"cannot write cache {path}: {os_reason(e)}") from None
    tmp = f"{path}.tmp-{os.getpid()}"
    item_ids = list(item_ids)
    with publish_lock(path):
        _remove_stale_tmps(path)
        old = None
        try:
            old, old_ids = _open_old(path, item_ids, groups, replace, remap)
            _write_synced(tmp, _build_in_memory(path, item_ids, groups, old, old_ids))
            os.replace(tmp, path)
            _fsync_path(os.path.dirname(path), directory=True)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if isinstance(e, OSError):
                raise VmrError(f"cannot write cache {path}: {os_reason(e)}; the previous cache is "
                               "unchanged") from None
            raise
        finally:
            if old is not None:
                old.close()
