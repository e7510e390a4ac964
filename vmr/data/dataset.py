"""The prepared dataset in memory: `load_dataset(path) -> Dataset` (see docs/DESIGN.md).

Items are indexed 0..m-1 in `items.parquet` row order; users 0..n-1 in the order their rows
appear in `interactions.parquet`. Indices are for in-process use only, never written out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmr.data import splits
from vmr.data.splits import SPLITS
from vmr.errors import VmrError

ITEMS = "items.parquet"
FILES = ("dataset.json", "interactions.parquet", ITEMS)


def read_items_table(data_dir: str | Path):
    """DATA/items.parquet as a polars DataFrame, checked: it exists and reads, and its `item`
    column holds distinct, non-empty ids. The one reader of the items table (vmr/extract reads
    it through this too)."""
    import polars as pl

    path = Path(data_dir) / ITEMS
    if not Path(data_dir).is_dir():
        raise VmrError(f"dataset directory {data_dir} does not exist (make one with `vmr prepare`)")
    if not path.is_file():
        raise VmrError(f"{path} not found: {data_dir} is not a dataset directory "
                       "(run `vmr prepare`)")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars raises several exception types for damaged files
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise VmrError(f"cannot read {path}: {reason}") from None
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
    return df


@dataclass
class Dataset:
    """A prepared dataset: ids, item side data, and every user's time-ordered item indices."""

    item_ids: list[str]
    user_ids: list[str]
    items: Any  # polars DataFrame: item, text, title, image, video (row k = item index k)
    sequences: list  # list[np.ndarray[int64]], one per user, same order as user_ids
    item_index: dict[str, int]
    meta: dict
    path: Path | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def new_items(self) -> list[str]:
        """Ids of the items `vmr prepare --new-items` kept out of training (catalogue order)."""
        return list((self.meta.get("new_items") or {}).get("items") or [])

    def new_item_indices(self):
        """The new items as item indices (int64, ascending)."""
        import numpy as np

        return np.asarray(sorted(self.item_index[it] for it in self.new_items), dtype=np.int64)

    def untrained_item_indices(self):
        """Items with no training interaction (new items included), ascending."""
        return splits.untrained_items(self.sequences, len(self.item_ids), self.new_item_indices())

    def split_users(self, split: str):
        """Indices (into user_ids) of the users that `split_sequences(split)` returns, in order."""
        import numpy as np

        _check_split(split)
        if split == "train":
            return np.arange(self.n_users, dtype=np.int64)
        return splits.target_pairs(self.sequences, split)[2]

    def split_sequences(self, split: str) -> list:
        """Leave-one-out views of the sequences, by the one rule of `vmr.data.splits`:
        - `train`: per user (same order as user_ids) the training prefix (int64 array), without
          the new items of the strict new-item protocol;
        - `valid` / `test`: (history, target) of every user with such a target, history = every
          item before the target (the test history includes the valid item).
        Targets are item indices (int); the matching users are `split_users(split)`."""
        _check_split(split)
        if split == "train":
            return splits.train_prefixes(self.sequences, self.new_item_indices())
        hist, tgt, _ = splits.target_pairs(self.sequences, split)
        return [(h, int(t)) for h, t in zip(hist, tgt)]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise VmrError(f"unknown split '{split}' (use train, valid or test)")


def _check_new_items(where: Path, meta: dict, item_index: dict) -> None:
    new = meta.get("new_items")
    if new is None:
        return
    ids = new.get("items") if isinstance(new, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise VmrError(f"{where}: 'new_items' must hold a list of item ids under 'items'")
    bad = next((i for i in ids if i not in item_index), None)
    if bad is not None:
        raise VmrError(f"{where}: new item '{bad}' is not in items.parquet")


def _check_columns(root: Path, items, inter) -> None:
    """The columns every reader relies on, of the types `vmr prepare` writes: ids are text
    without nulls, the display and media columns text (or absent)."""
    import polars as pl

    for name, df, cols in (("items.parquet", items, ("item",)),
                           ("interactions.parquet", inter, ("user", "item"))):
        for c in cols:
            if c not in df.columns:
                raise VmrError(f"{root / name}: no '{c}' column (rerun `vmr prepare`)")
            if df[c].dtype != pl.Utf8 or df[c].null_count():
                raise VmrError(f"{root / name}: column '{c}' must hold text ids without "
                               f"gaps, it is {df[c].dtype} (rerun `vmr prepare`)")
    for c in ("text", "title", "image", "video"):
        if c in items.columns and items[c].dtype not in (pl.Utf8, pl.Null):
            raise VmrError(f"{root / 'items.parquet'}: column '{c}' must be text, it is "
                           f"{items[c].dtype} (rerun `vmr prepare`)")


def load_dataset(path: str | Path) -> Dataset:
    """Load a dataset directory written by `vmr prepare`."""
    import numpy as np
    import polars as pl

    root = Path(path).expanduser()
    if not root.is_dir():
        raise VmrError(f"{path}: dataset directory not found (run `vmr prepare --out {path}`)")
    for name in FILES:
        if not (root / name).is_file():
            raise VmrError(f"{path}: not a prepared dataset: {name} is missing "
                           f"(run `vmr prepare --out {path}`)")
    try:
        meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VmrError(f"{root / 'dataset.json'}: unreadable ({e.__class__.__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != 1:
        raise VmrError(f"{root / 'dataset.json'}: unknown dataset format "
                       f"{meta.get('format') if isinstance(meta, dict) else None!r} (expected 1)")
    items = read_items_table(root)
    try:
        inter = pl.read_parquet(root / "interactions.parquet", columns=["user", "item"])
    except (pl.exceptions.PolarsError, OSError) as e:
        raise VmrError(f"{path}: cannot read the dataset's parquet files: "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    _check_columns(root, items, inter)
    item_ids = items["item"].to_list()
    item_index = {it: k for k, it in enumerate(item_ids)}
    if len(item_index) != len(item_ids):
        raise VmrError(f"{root / 'items.parquet'}: an item id appears twice (rerun `vmr prepare`)")
    codes = inter["item"].replace_strict(item_index, default=None, return_dtype=pl.Int64)
    if codes.null_count():
        bad = inter["item"][int(codes.is_null().arg_true()[0])]
        raise VmrError(f"{root / 'interactions.parquet'}: item '{bad}' is not in items.parquet")
    users = inter["user"]
    change = (users != users.shift(1)).fill_null(True).to_numpy()
    starts = np.flatnonzero(change)
    user_ids = users.gather(starts).to_list()
    if len(set(user_ids)) != len(user_ids):
        raise VmrError(f"{root / 'interactions.parquet'}: rows are not grouped by user")
    bounds = np.r_[starts, len(users)]
    sequences = np.split(codes.to_numpy().astype(np.int64), starts[1:])
    lengths = np.diff(bounds)
    if meta.get("users") not in (None, len(user_ids)) or meta.get("interactions") not in (
            None, int(lengths.sum())) or meta.get("items") not in (None, len(item_ids)):
        raise VmrError(f"{path}: dataset.json counts do not match the parquet files "
                       f"(rerun `vmr prepare`)")
    _check_new_items(root / "dataset.json", meta, item_index)
    return Dataset(item_ids=item_ids, user_ids=user_ids, items=items, sequences=sequences,
                   item_index=item_index, meta=meta, path=root.resolve())
