"""The file helpers every layer shares: atomic writes, hashing, and turning an exception into the
few words a one-line error needs. This module imports nothing from vmr but `vmr.errors`.

Atomic write: the bytes go to a temporary file beside the target, are flushed and fsynced, and
the temporary file is renamed over the target, so a reader sees the old or the new content,
never a truncated mix (a kill, a full disk). A failed write removes the temporary file."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp makes the file private; ours are not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically (a temporary file beside `path`, then a rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def one_line(e: BaseException, limit: int = 200) -> str:
    """`TypeName: first sentence of the message`, at most `limit` characters, for an error that
    must fit on one line."""
    msg = (str(e).splitlines() or [""])[0].split(". ")[0].strip()[:limit]
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def is_disk_full(e: BaseException) -> bool:
    """A full disk or a file-size limit, also where a library hides the errno in its message
    (h5py: 'errno = 28', polars: 'os error 28')."""
    text = str(e)
    return (getattr(e, "errno", None) in DISK_FULL or "errno = 28" in text
            or "os error 28" in text or "No space left" in text or "errno = 27" in text
            or "File too large" in text)


def os_reason(e: BaseException) -> str:
    """Why a file operation failed, in a few words."""
    text = str(e)
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "errno = 28" in text \
            or "os error 28" in text or "No space left" in text:
        return "the disk is full (no space left on device)"
    if getattr(e, "errno", None) == errno.EFBIG or "errno = 27" in text or "File too large" in text:
        return "file too large for this file system or limit"
    return getattr(e, "strerror", None) or (text.splitlines() or [type(e).__name__])[0][:200]
