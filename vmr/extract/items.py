"""The item table of a dataset directory, read straight from `items.parquet` (the cache must not
depend on training code)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from vmr.data.media import reader_paths
from vmr.errors import VmrError


@dataclass
class ItemTable:
    """Item ids in dataset order and, per item, its text and media paths (None when absent)."""

    ids: list[str]
    text: list[str | None]
    image: list[str | None]
    video: list[str | None]

    def column(self, modality: str) -> list[str | None]:
        return {"text": self.text, "image": self.image, "video": self.video}[modality]


def load_items(data_dir: str, check_media: bool = True) -> ItemTable:
    """Read DATA/items.parquet; relative media paths are taken relative to DATA, and every media
    path is checked against the dataset's recorded media root, links resolved
    (`vmr.data.media.reader_paths`; `check_media=False` for readers of the ids alone)."""
    import polars as pl

    path = os.path.join(data_dir, "items.parquet")
    if not os.path.isdir(data_dir):
        raise VmrError(f"dataset directory {data_dir} does not exist (make one with `vmr prepare`)")
    if not os.path.isfile(path):
        raise VmrError(f"{path} not found: {data_dir} is not a dataset directory "
                       "(run `vmr prepare`)")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars raises several exception types for damaged files
        raise VmrError(f"cannot read {path}: {str(e).splitlines()[0][:200]}") from None
    if "item" not in df.columns:
        raise VmrError(f"{path} has no 'item' column (columns: {', '.join(df.columns)})")
    ids = df.get_column("item").cast(pl.Utf8).to_list()
    if any(i is None for i in ids):
        raise VmrError(f"{path}: row {ids.index(None) + 1} has an empty item id")
    bad = next((k for k, i in enumerate(ids) if any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f
                                                    for c in i)), None)
    if bad is not None:   # prepare refuses these; a dataset edited by hand may hold them
        raise VmrError(f"{path}: row {bad + 1}: item id {ids[bad]!r:.60} holds a control "
                       "character; ids must be printable text (prepare the dataset again)")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise VmrError(f"{path}: item id {dup!r} appears more than once")

    def col(name: str, is_path: bool) -> list[str | None]:
        if name not in df.columns:
            return [None] * len(ids)
        values = df.get_column(name).cast(pl.Utf8).to_list()
        if not is_path:
            return values
        if check_media:
            return reader_paths(values, data_dir, ids, name)
        root = os.path.abspath(data_dir)
        return [None if not v else (v if os.path.isabs(v) else os.path.join(root, v))
                for v in values]

    return ItemTable(ids=ids, text=col("text", False), image=col("image", True),
                     video=col("video", True))


def ids_digest(ids: list[str]) -> str:
    """A fingerprint of an ordered id list (to tell datasets apart in progress files)."""
    h = hashlib.sha256()
    for i in ids:
        b = i.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
