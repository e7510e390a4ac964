"""Media paths of the item table, confined to the media root.

A relative path is relative to the media root (`--media-root`, default: the items file's folder);
`~` is expanded; the path is normalised (`a/../b` is `b`). The result must lie inside the media
root, or the whole table is refused with a one-line error naming the row, the column and the
path: an item table downloaded from elsewhere must not make vmr read `/etc/shadow`,
`/proc/self/environ` or `~/.ssh/id_rsa` as a "video". `--media-root /` allows any path.
`dataset.json` records the root, and every reader (`extract`, `gallery`) checks each path
again before opening it (`reader_paths`), this time with symbolic links resolved: a link inside
the root that points out of it is refused (a media folder that links to another disk needs a
--media-root covering both).
"""

from __future__ import annotations

import os
from pathlib import Path

from vmr.errors import VmrError


def media_root(given: str | None, items_file: Path) -> Path:
    """The media root as an absolute, normalised path (it must be an existing folder)."""
    if given is None:
        return items_file.parent
    root = Path(os.path.abspath(os.path.expanduser(given)))
    if not root.is_dir():
        raise VmrError(f"--media-root {given}: not an existing folder")
    return root


def _inside(path: str, root: str) -> bool:
    if root == os.sep:
        return True
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:
        return False


def confine(cells, root: Path, col: str, src, rows, what: str = "image") -> list[str | None]:
    """Absolute paths of a media column's cells (None where empty); a VmrError for the first
    path outside `root`. `rows[k]` is the source row of cell k (for src.where)."""
    base = os.path.normpath(str(root))
    out: list[str | None] = []
    for k, value in enumerate(cells):
        text = None if value is None else str(value).strip()
        if not text:
            out.append(None)
            continue
        path = os.path.normpath(os.path.join(base, os.path.expanduser(text)))
        if not _inside(path, base):
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise VmrError(f"{src.name}: {src.where(int(rows[k]))}: {what} path {shown!r} in "
                           f"column '{col}' is outside the media root {base} (set --media-root "
                           f"to a folder that holds the media, or / to allow any path)")
        out.append(path)
    return out


def recorded_root(data_dir, meta: dict | None = None) -> str | None:
    """The media root `vmr prepare` recorded in DATA/dataset.json, resolved (symlinks
    followed); None when none is recorded."""
    import json

    if meta is None:
        try:
            meta = json.loads((Path(data_dir) / "dataset.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            meta = {}
    root = meta.get("media_root") if isinstance(meta, dict) else None
    return os.path.realpath(root) if isinstance(root, str) and root else None


def reader_paths(values, data_dir, ids, col: str, meta: dict | None = None) -> list[str | None]:
    """A media column as a reader opens it, re-checked against the recorded media root: each
    path (relative ones are relative to DATA) with every symbolic link resolved must lie
    inside the resolved root. A dataset edited after `vmr prepare`, copied from someone else,
    or a link inside the root pointing out of it is refused with one line naming the item --
    whatever prepare checked, the reader checks again. Returns the resolved paths."""
    values = list(values)
    if not any(values):
        return [None] * len(values)
    root = recorded_root(data_dir, meta)
    if root is None:
        first = next(i for i, v in zip(ids, values) if v)
        raise VmrError(f"{data_dir}: item {first!r} has a {col} path but dataset.json records "
                       "no media root to check it against (prepared by hand or by an older vmr);"
                       " prepare the dataset again")
    base = os.path.abspath(data_dir)
    out: list[str | None] = []
    for item, v in zip(ids, values):
        if not v:
            out.append(None)
            continue
        real = os.path.realpath(os.path.join(base, v))
        if not _inside(real, root):
            shown = v if len(v) <= 80 else v[:77] + "..."
            raise VmrError(f"{data_dir}: item {item!r}: {col} path {shown!r} resolves to "
                           f"{real[:120]!r}, outside the dataset's media root {root}; refusing "
                           "to read it (prepare the dataset again, with --media-root covering "
                           "the media)")
        out.append(real)
    return out
