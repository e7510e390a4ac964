"""Content fingerprints: what each cached row was encoded from, to tell which rows are stale.

Every row a run processes (a vector or a failure) records, in the modality's `fingerprints`
dataset of the cache, a fingerprint of the content it was made from, taken *before* encoding:

- text: ``text:<sha256 of the exact text, UTF-8>`` (an item without text: the sha256 of "");
- video / image file: ``file:<size>:<mtime_ns>:<sha256>``, the sha256 of the file's first and
  last 64 KiB (of the whole file when it is at most 128 KiB). The path is not part of it, so a
  moved or copied dataset stays fresh;
- ``none`` (no file listed), ``missing`` (listed but absent, or not a regular file),
  ``unreadable`` (cannot be read);
- imported features: ``import:sha256:<file hash>:row:<k>`` (``import:absent`` for items the
  file lacks). They have no source content here; freshness checks skip them.

Two file fingerprints name the same content when size and hash agree; the mtime only spares
reading the file again: same size and mtime as recorded means unchanged without opening it (a
file rewritten in place with its mtime restored, and the same first and last 64 KiB, would go
unnoticed). The encoder settings are the modality's attributes (checked separately).

Caches made before fingerprints existed have no `fingerprints` dataset: their freshness is
unknown; checks warn once and accept them (`vmr extract --overwrite` re-extracts and records
fingerprints).
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from dataclasses import dataclass, field

from vmr.cache.read import resolve_cache
from vmr.errors import VmrError
from vmr.fsio import sha256_text

EDGE = 64 * 1024
_warned: set[tuple[str, str]] = set()


def text_fingerprint(text: str | None) -> str:
    return "text:" + sha256_text(text or "")


def media_fingerprint(path: str | None, stored: str = "") -> str:
    """The fingerprint of a media file; `stored` (a previous fingerprint of the same item) lets
    an unchanged file (same size and mtime) skip the read."""
    if not path:
        return "none"
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):  # a directory, a fifo (opening one can block forever)
        return "missing"
    old = stored.split(":")
    if len(old) == 4 and old[0] == "file" and old[1] == str(st.st_size) \
            and old[2] == str(st.st_mtime_ns):
        return stored
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            if st.st_size <= 2 * EDGE:
                h.update(f.read())
            else:
                h.update(f.read(EDGE))
                f.seek(-EDGE, os.SEEK_END)
                h.update(f.read(EDGE))
    except OSError:
        return "unreadable"
    return f"file:{st.st_size}:{st.st_mtime_ns}:{h.hexdigest()}"


def _content(fp: str) -> str:
    if fp.startswith("file:"):
        parts = fp.split(":")
        if len(parts) == 4:
            return f"file:{parts[1]}:{parts[3]}"  # size and hash; the mtime is only a hint
    return fp


def same(a: str, b: str) -> bool:
    """Do two fingerprints name the same content?"""
    return _content(a) == _content(b)


def checkable(fp: str) -> bool:
    """False for rows whose freshness cannot be checked: unknown ("") or imported."""
    return bool(fp) and not fp.startswith("import:")


def current(items, modality: str, rows, stored: dict[int, str] | None = None) -> dict[int, str]:
    """Fingerprints of the items' content now, for the given rows (row -> fingerprint)."""
    stored = stored or {}
    rows = list(rows)
    if modality == "text":
        return {r: text_fingerprint(items.text[r]) for r in rows}
    paths = items.column(modality)
    if len(rows) < 64:
        return {r: media_fingerprint(paths[r], stored.get(r, "")) for r in rows}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as ex:  # file reads and hashing release the GIL
        fps = ex.map(lambda r: media_fingerprint(paths[r], stored.get(r, "")), rows,
                     chunksize=64)
        return dict(zip(rows, fps))


def warn_unknown(cache_path: str, modality: str) -> None:
    """Say once per process that a cache modality has no fingerprints."""
    key = (os.path.abspath(cache_path), modality)
    if key in _warned:
        return
    _warned.add(key)
    print(f"warning: the {modality} features in {cache_path} were made by an older vmr without "
          "content fingerprints: whether they match the items' current content is unknown "
          f"(`vmr extract --modality {modality} --overwrite` re-extracts them and records it)",
          file=sys.stderr)


# ----------------------------------------------------------------------------------- checking
@dataclass
class Freshness:
    modality: str
    recorded: bool = True  # False: the cache has no fingerprints for this modality
    checked: int = 0
    stale: list[str] = field(default_factory=list)  # item ids, dataset order
    imported: int = 0
    unknown: int = 0


def freshness(items, cache_path: str, modality: str) -> Freshness | None:
    """Compare a cache modality's fingerprints with the dataset's content now (None when the
    cache has no such modality). Raises VmrError when the cache is for other item ids."""
    from vmr.cache import read as cache_read

    with cache_read.open_cache(cache_path) as f:
        cache_read.check_item_ids(cache_path, cache_read.read_ids_from(f, cache_path), items.ids)
        if modality not in f:
            return None
        g = f[modality]
        cache_read.check_group(g, len(items.ids), cache_path, modality)
        fps = cache_read.read_fingerprints(g)
        done = g["done"][...].astype(bool)
    out = Freshness(modality)
    if fps is None:
        out.recorded = False
        return out
    rows = [r for r in range(len(items.ids)) if done[r] and checkable(fps[r])]
    out.imported = sum(1 for r in range(len(fps)) if done[r] and fps[r].startswith("import:"))
    out.unknown = sum(1 for r in range(len(fps)) if done[r] and not fps[r])
    now = current(items, modality, rows, {r: fps[r] for r in rows})
    out.checked = len(rows)
    out.stale = [items.ids[r] for r in rows if not same(fps[r], now[r])]
    return out


def _fix(data_dir: str, cache_path: str, modality: str) -> str:
    cmd = f"vmr extract --data {data_dir} --modality {modality}"
    default = resolve_cache(data_dir)
    if os.path.abspath(cache_path) != os.path.abspath(default):
        cmd += f" --cache {cache_path}"
    return f"rerun `{cmd}` (with the options it was extracted with) to re-encode them"


def check_fresh(data_dir: str, cache_path: str, modalities) -> None:
    """Raise a one-line VmrError when cached features of any of `modalities` were made from
    content that has changed since (a re-`prepare` with other text columns, a replaced image).
    Modalities the cache lacks are skipped (the reader reports them); rows without a
    fingerprint (older caches: one warning) and imported rows are not checked."""
    from vmr.extract.items import load_items

    items = load_items(data_dir)
    for m in modalities:
        fr = freshness(items, cache_path, m)
        if fr is None:
            continue
        if not fr.recorded:
            warn_unknown(cache_path, m)
            continue
        if fr.stale:
            what = "text" if m == "text" else f"{m} file"
            raise VmrError(f"{m} features in {cache_path} are stale for {len(fr.stale):,} of "
                           f"{len(items.ids):,} items: their {what} changed since they were "
                           f"extracted (first: item {fr.stale[0]!r}); "
                           + _fix(data_dir, cache_path, m))


def describe_freshness(data_dir: str, cache_path: str) -> str:
    """The `vmr cache info` lines comparing each modality with the dataset's content."""
    from vmr.cache import read as cache_read
    from vmr.extract.items import load_items

    items = load_items(data_dir)
    head = f"freshness against {data_dir}:"
    try:
        mods = cache_read.list_modalities(cache_path)
        results = [freshness(items, cache_path, m) for m in mods]
    except VmrError as e:
        return f"{head} not checked: {e}"
    lines = [head] if mods else []
    for m, fr in zip(mods, results):
        if not fr.recorded:
            lines.append(f"  {m}: unknown (no fingerprints: cache made by an older vmr)")
            continue
        extra = "".join([f", {fr.imported:,} imported (not checked)" if fr.imported else "",
                         f", {fr.unknown:,} without fingerprint" if fr.unknown else ""])
        if fr.stale:
            shown = ", ".join(repr(i) for i in fr.stale[:3])
            lines.append(f"  {m}: {len(fr.stale):,} of {fr.checked:,} items STALE (content "
                         f"changed since extraction: {shown}){extra}; "
                         + _fix(data_dir, cache_path, m))
        else:
            lines.append(f"  {m}: up to date ({fr.checked:,} items checked){extra}")
    return "\n".join(lines)


def cache_info(cache_path: str, data_dir: str | None = None) -> str:
    """`vmr cache info`: the cache's description, then its freshness against `data_dir`
    (default: the cache's folder when it holds dataset.json)."""
    from vmr.cache import read as cache_read

    text = cache_read.describe(cache_path)
    folder = os.path.dirname(os.path.abspath(cache_path))
    if data_dir is None and os.path.isfile(os.path.join(folder, "dataset.json")):
        data_dir = folder
    return text if data_dir is None else text + "\n" + describe_freshness(data_dir, cache_path)
