"""Output folders that vmr replaces as a whole (`vmr export --out`, `vmr gallery --out`).

Before anything in an existing folder is replaced or deleted, the folder must be proven to be
vmr's: its marker file (`manifest.json`, `gallery.json`) must be a JSON object with vmr's `kind`
and a known `format`, and every entry in the folder must be one that vmr writes there (a file the
marker lists, or a name of vmr's own pattern). Anything else -- another program's
`manifest.json`, a file the user added -- is refused with one line naming the folder and the
entry, and nothing is touched.

The new content is written into a temporary sibling folder and swapped in with one atomic
`renameat2(RENAME_EXCHANGE)` (two renames where the file system cannot), so a kill leaves the
old folder or the new one, never a mix."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from vmr.errors import VmrError
from vmr.fsio import os_reason


def exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where
    the system or file system cannot."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`, replacing a previous folder there (already proven to
    be vmr's). With an atomic exchange there is no moment at which `out` is missing."""
    if not out.exists():
        os.rename(tmp, out)
        return
    if exchange(tmp, out):  # tmp now holds the previous folder
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _read_marker(out: Path, marker: str, what: str) -> dict:
    path = out / marker
    if path.is_symlink() or not path.is_file():
        raise VmrError(f"--out {out}: exists and is not a {what} (no {marker}); choose another "
                       "directory (nothing in it was changed)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        raise VmrError(f"--out {out}: its {marker} is not one vmr wrote (not a JSON object); "
                       "choose another directory (nothing in it was changed)")
    return doc


def _foreign(out: Path, name: str, what: str) -> VmrError:
    return VmrError(f"--out {out}: holds {name!r}, which a {what} does not contain; refusing to "
                    "replace the folder (move it away or choose another directory; nothing in "
                    "it was changed)")


def check_replaceable(out: Path, marker: str, kind: str, formats: tuple, allowed,
                      what: str, legacy=None) -> None:
    """Refuse (one line) unless `out` is absent, empty, or a folder vmr wrote: `marker` a JSON
    object with `"kind": kind` and a format in `formats` (or, written before markers had a
    kind, `legacy(doc)` true), and `allowed(doc, relpath, is_dir)` true for every entry under
    it (symlinks are never vmr's)."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise VmrError(f"--out {out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    doc = _read_marker(out, marker, what)
    old = "kind" not in doc and legacy is not None and legacy(doc)
    if not old and (doc.get("kind") != kind or doc.get("format") not in formats):
        raise VmrError(f"--out {out}: its {marker} was not written by vmr (kind "
                       f"{doc.get('kind')!r}, format {doc.get('format')!r}; a {what} has kind "
                       f"{kind!r}); choose another directory (nothing in it was changed)")
    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            p = Path(root) / name
            rel = p.relative_to(out).as_posix()
            if rel == marker:
                continue
            if p.is_symlink() or not (p.is_dir() or p.is_file()) \
                    or not allowed(doc, rel, p.is_dir()):
                raise _foreign(out, rel, what)


def legacy_export(doc: dict) -> bool:
    """A manifest.json of vmr 0.x before exports named their kind."""
    return (doc.get("format") == 2 and isinstance(doc.get("vmr_version"), str)
            and isinstance(doc.get("files"), dict) and str(doc.get("score", "")).startswith(
                "inner_product") and "user_tower_ts" in doc)


def legacy_gallery(doc: dict) -> bool:
    """A gallery.json of vmr 0.x before galleries named their kind."""
    return (doc.get("format") == 1 and isinstance(doc.get("users"), list)
            and {"run", "checkpoint", "top", "hits"} <= set(doc))


def export_entry(doc: dict, rel: str, is_dir: bool) -> bool:
    """An entry of an export folder: a plain file its manifest lists."""
    files = doc.get("files")
    return not is_dir and isinstance(files, dict) and rel in files


GALLERY_ENTRY = re.compile(r"(index\.html|users|thumbs|users/[0-9a-f]{20}\.html|"
                           r"thumbs/[0-9a-f]{20}-(image|video)\.jpg)")


def gallery_entry(doc: dict, rel: str, is_dir: bool) -> bool:
    """An entry of a gallery folder: index.html, users/<hash>.html, thumbs/<hash>-*.jpg."""
    return bool(GALLERY_ENTRY.fullmatch(rel)) and is_dir == (rel in ("users", "thumbs"))


def make_tmp_dir(out: Path) -> Path:
    """A temporary sibling of `out` with the permissions of a normal folder."""
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private
    return tmp


def write_swapped(out: Path, write, recheck, failure: str, what: str):
    """Write the new content of `out` with `write(tmp)` into a temporary sibling folder, check
    `out` again with `recheck(out)` (it may have changed meanwhile) and swap the new folder in;
    returns what `write` returned. Any failure, Ctrl-C included, removes the temporary folder and
    leaves `out` as it was. An OSError becomes one line, `<failure>: <reason>`, which adds `; a
    previous <what> there is unchanged` once the temporary folder exists."""
    try:
        tmp = make_tmp_dir(out)
    except OSError as e:
        raise VmrError(f"{failure}: {os_reason(e)}") from None
    try:
        result = write(tmp)
        recheck(out)
        replace_dir(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise VmrError(f"{failure}: {os_reason(e)}; a previous {what} there is "
                           "unchanged") from None
        raise
    return result
