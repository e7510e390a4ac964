"""Media paths of the item table, confined to the media root.

A relative path is relative to the media root (`--media-root`, default: the items file's folder);
`~` is expanded; the path is normalised (`a/../b` is `b`). The result must lie inside the media
root, or the whole table is refused with a one-line error naming the row, the column and the
path: an item table downloaded from elsewhere must not make vmr read `/etc/shadow`,
`/proc/self/environ` or `~/.ssh/id_rsa` as a "video". The check is on the path as written;
symbolic links inside the media root are followed (a media folder may link to another disk).
`--media-root /` allows any path.
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
