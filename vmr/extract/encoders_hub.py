"""Finding encoder weights on disk: the local Hugging Face cache, weights identities, and keeping
the hub client off the network.

Hub ids (`st:org/name`, `open_clip:hf-hub:org/name`) are resolved through the local Hugging Face
cache only, never downloaded during an extraction: the cache directory is huggingface_hub's
(`HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
~/.cache/huggingface/hub), its layout `models--org--name/refs/main` (a commit hash) and
`models--org--name/snapshots/<commit>/<files>` (links into `blobs/`). A model that is not there
fails at once with one line naming the id and the directory searched.
"""

from __future__ import annotations

import contextlib
import os
import re

from vmr.errors import VmrError
from vmr.fsio import sha256_file

_SHA_CACHE: dict[tuple, str] = {}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes, remembered per path, size and mtime. A file of the Hugging
    Face cache is a link to `blobs/<sha256 of its bytes>` when it is stored with git LFS (model
    weights are), so that name is used instead of reading the file again."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        name = os.path.basename(real)
        parent = os.path.basename(os.path.dirname(real))
        if parent == "blobs" and _HEX64.fullmatch(name) and real != os.path.abspath(path):
            _SHA_CACHE[key] = name
        else:
            _SHA_CACHE[key] = sha256_file(real)
    return _SHA_CACHE[key]


def hub_cache_dir() -> str:
    """The Hugging Face hub cache directory the hub client uses (read from the environment when
    huggingface_hub is first imported)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_hub_id(text: str) -> bool:
    """`name` or `org/name` as the hub spells repository ids (not a path like ./x or /x)."""
    return bool(_HUB_ID.fullmatch(text)) and ".." not in text and not text.endswith(".")


def cached_snapshot(repo_id: str, spec: str, need: tuple[str, ...] = (), also: str = "") -> str:
    """The local snapshot directory of hub model `repo_id` (refs/main, or the only snapshot when
    there is no ref). Raises a one-line VmrError naming the id and the cache directory when the
    model is not cached (`also`: what else was tried, e.g. "not a local directory and "), or
    when a file in `need` is missing from the snapshot."""
    cache = hub_cache_dir()
    repo_dir = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    how = (f"fetch it where the network allows (`hf download {repo_id}`, or any earlier use of "
           "the model) and copy that cache here, or point HF_HOME / HF_HUB_CACHE at a cache that "
           "has it, or pass a local directory")
    snapshots = os.path.join(repo_dir, "snapshots")
    revs = sorted(os.listdir(snapshots)) if os.path.isdir(snapshots) else []
    if not revs:
        raise VmrError(f"--model {spec}: {repo_id} is {also}not in the local Hugging Face cache "
                       f"{cache} (no {os.path.basename(repo_dir)}/snapshots there); {how}")
    ref = os.path.join(repo_dir, "refs", "main")
    if os.path.isfile(ref):
        with open(ref) as f:
            rev = f.read().strip()
        if rev not in revs:
            raise VmrError(f"--model {spec}: {ref} names snapshot {rev!r}, which is not in "
                           f"{snapshots}; the cache is incomplete: {how}")
    elif len(revs) == 1:
        rev = revs[0]
    else:
        raise VmrError(f"--model {spec}: {repo_dir} has {len(revs)} snapshots and no refs/main "
                       "to choose one; pass the snapshot directory itself")
    snap = os.path.join(snapshots, rev)
    for name in need:
        if not os.path.isfile(os.path.join(snap, name)):
            raise VmrError(f"--model {spec}: the cached snapshot {snap} has no {name}; {how}")
    return snap


@contextlib.contextmanager
def hub_offline(on: bool = True):
    """Keep the Hugging Face hub client off the network while models load from local files (it
    reads HF_HUB_OFFLINE once, at import, so the module constant is what counts)."""
    if not on:
        yield
        return
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def host_reachable(host: str, port: int = 443, seconds: float = 4.0) -> str | None:
    """None when a TCP connection opens within `seconds` (DNS included), else the reason."""
    import socket
    import threading

    result: list[str | None] = ["timed out"]

    def probe():
        try:
            socket.create_connection((host, port), timeout=seconds).close()
            result[0] = None
        except OSError as e:
            result[0] = str(e) or type(e).__name__

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(seconds + 0.5)
    return result[0]
