"""The item table of a dataset directory as extraction needs it: ids, text and absolute media
paths (items.parquet is read by vmr.data.dataset.read_items_table, its one reader)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from vmr.data.dataset import read_items_table
from vmr.data.media import reader_paths


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

    df = read_items_table(data_dir)
    ids = df.get_column("item").cast(pl.Utf8).to_list()

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
