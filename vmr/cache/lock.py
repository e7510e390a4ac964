"""Advisory locks that keep concurrent writers of one cache file from spoiling each other's work.

Two locks, both `fcntl.flock` (released by the kernel when the holder exits, even by SIGKILL):

- the **modality lock**, `CACHE.lock-MODALITY`, held for the whole of an extraction (or an
  import, or a merge) of that modality into that cache file. A second writer of the same cache
  and modality does not wait: it stops at once with a one-line error naming the holder's pid and
  command. Different modalities, and different cache (or shard) files, have different locks and
  run side by side. The lock file holds the holder's pid and command (for that message) and is
  deleted when the lock is released; one left by a killed holder is simply reused.
- the **publish lock**, on the cache's folder, held only while a new version of a cache file is
  written and renamed into place (`vmr.cache.store.publish`). Publishers wait for it, so two
  extractions of different modalities finishing at once both land in the file. It locks the
  folder itself, so it leaves no file behind.

On a file system without flock support both degrade to no locking, with a warning for the
modality lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from typing import Iterator

from vmr.errors import VmrError
from vmr.fsio import os_reason

_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


def lock_path(cache_path: str, modality: str) -> str:
    """The lock file of a cache and modality, keyed on the cache's real path (symbolic links
    resolved): a link to the cache and the cache itself share one lock."""
    return f"{os.path.realpath(cache_path)}.lock-{modality}"


def _holder(fd: int, path: str) -> str:
    """Who holds the lock on `fd`'s file, from what the holder wrote into it (it writes right
    after locking, so give it a moment) or else from /proc/locks."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            return f"pid {int(info['pid'])}, `{info.get('command', '?')}` since {info.get('since')}"
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        ino = os.fstat(fd).st_ino
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and \
                        fields[5].rsplit(":", 1)[-1] == str(ino):
                    return f"pid {fields[4]}"
    return "another process"


@contextlib.contextmanager
def modality_lock(cache_path: str, modality: str, command: str) -> Iterator[str]:
    """Hold the lock of one cache file and modality while the body runs (see the module
    docstring); raises VmrError at once when another process holds it."""
    import fcntl

    path = lock_path(cache_path, modality)
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        reason = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) \
            else os_reason(e)
        raise VmrError(f"cannot create the folder {folder} of cache "
                       f"{os.path.abspath(cache_path)}: {reason}") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise VmrError(f"cannot create lock file {path}: {os_reason(e)}; the cache's folder "
                           "must be writable (or pass --cache PATH somewhere writable)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd, path)
            os.close(fd)
            raise VmrError(f"{os.path.abspath(cache_path)} is already being written with "
                           f"{modality} features by {who} (lock file {path}); wait for it to "
                           "finish, or stop it and rerun") from None
        except OSError as e:
            os.close(fd)
            if e.errno not in _UNSUPPORTED:
                raise VmrError(f"cannot lock {path}: {os_reason(e)}") from None
            print(f"warning: {path}: this file system cannot lock files ({os_reason(e)}); make "
                  f"sure no other process writes {modality} features into the same cache",
                  file=sys.stderr)
            fd = None
            break
        try:  # the previous holder may have deleted the file between our open and flock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        if fd is not None:
            with contextlib.suppress(OSError):  # who we are, for the message above; best effort
                info = {"pid": os.getpid(), "command": command,
                        "since": time.strftime("%Y-%m-%d %H:%M:%S")}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):  # while still locked: whoever opened it meanwhile
            if fd is None or os.stat(path).st_ino == os.fstat(fd).st_ino:  # retries
                os.remove(path)
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def publish_lock(cache_path: str) -> Iterator[None]:
    """An exclusive lock on the cache's folder while a new version of the cache is written and
    renamed into place, so two extractions finishing at once (say text and video) cannot drop
    each other's group. Waits for the current holder."""
    import fcntl

    d = os.path.dirname(os.path.realpath(cache_path))
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError as e:
        raise VmrError(f"cannot write cache {cache_path}: cannot open its folder {d} "
                       f"({os_reason(e)})") from None
    try:
        with contextlib.suppress(OSError):  # file systems without flock: go on unlocked
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
