"""Crash-safe progress of one extraction: a directory next to the cache.

    <cache>.partial-<modality>/settings.json     what is being extracted (checked on resume)
    <cache>.partial-<modality>/part-000000.npz   one per encoder batch: ids, features, failures,
                                                 the content fingerprint of each (freshness.py)

A part is written under a temporary name and renamed into place, so after a kill at any moment
every part that exists is complete; a rerun skips the items in them and re-encodes only what was
in flight -- and any item whose content changed since its part was written (its fingerprint
differs from `Progress.fingerprints`, set by the runner). Nothing is ever written into an HDF5
file until the end (HDF5 files killed mid-write can be unreadable); then the parts are
assembled into a new cache file that replaces the old one atomically
(`vmr.cache.store.publish`), and the directory is removed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import sys
import zipfile
from typing import Iterator

from vmr.errors import VmrError
from vmr.fsio import is_disk_full, os_reason


class Progress:
    def __init__(self, path: str):
        self.path = path
        self._next = 0
        # item id -> fingerprint of its content now (set by the runner): recorded with each
        # committed item, and entries made from other content do not count as done
        self.fingerprints: dict[str, str] = {}

    # ------------------------------------------------------------------------------- lifecycle
    def open(self, settings: dict, overwrite: bool) -> None:
        """Start or resume. Progress made under other settings is an error unless `overwrite`."""
        try:
            self._open(settings, overwrite)
        except OSError as e:
            raise VmrError(f"cannot write progress directory {self.path}: {os_reason(e)}"
                           ) from None

    def _open(self, settings: dict, overwrite: bool) -> None:
        cfg = os.path.join(self.path, "settings.json")
        if os.path.isdir(self.path):
            old = None
            with contextlib.suppress(OSError, json.JSONDecodeError):
                with open(cfg) as f:
                    old = json.load(f)
            if old is not None and old != settings and not overwrite:
                diff = ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}"
                                 for k in sorted(set(old) | set(settings))
                                 if old.get(k) != settings.get(k))
                raise VmrError(f"{self.path} holds an interrupted extraction with other settings "
                               f"({diff}); rerun with the same options to finish it, or pass "
                               "--overwrite to discard it")
            if old != settings:
                shutil.rmtree(self.path)
        if not os.path.isdir(self.path):
            os.makedirs(self.path)
            self._write_atomic(cfg, json.dumps(settings, indent=1, sort_keys=True).encode())
        for stale in glob.glob(os.path.join(glob.escape(self.path), "*.tmp")):
            with contextlib.suppress(OSError):
                os.remove(stale)
        names = self._part_names()
        self._next = (int(os.path.basename(names[-1])[5:11]) + 1) if names else 0

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # ---------------------------------------------------------------------------------- parts
    def _part_names(self) -> list[str]:
        return sorted(glob.glob(os.path.join(glob.escape(self.path), "part-??????.npz")))

    def _write_atomic(self, path: str, data: bytes) -> None:
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            hint = "free space and rerun" if is_disk_full(e) else "rerun"
            raise VmrError(f"cannot write progress file {path}: {os_reason(e)}; {hint} the same "
                           "command to resume") from None

    def commit(self, ids: list[str], features, fail_ids: list[str], fail_reasons: list[str],
               frames: int = 0) -> None:
        """Record a finished batch: vectors of `ids` and failures. Atomic."""
        import io

        import numpy as np

        if not ids and not fail_ids:
            return
        buf = io.BytesIO()
        fps = [self.fingerprints.get(i, "") for i in list(ids) + list(fail_ids)]
        np.savez(buf, ids=np.array(ids, dtype=str), features=np.asarray(features, np.float32),
                 fail_ids=np.array(fail_ids, dtype=str),
                 fail_reasons=np.array(fail_reasons, dtype=str), frames=np.int64(frames),
                 fingerprints=np.array(fps, dtype=str))
        self._write_atomic(os.path.join(self.path, f"part-{self._next:06d}.npz"), buf.getvalue())
        self._next += 1

    def parts(self, with_features: bool = False) -> Iterator[dict]:
        """The complete parts, oldest first. An unreadable one (possible only after a power cut)
        is deleted with a warning, so its items are simply encoded again."""
        import numpy as np

        for name in self._part_names():
            try:
                with np.load(name, allow_pickle=False) as z:
                    part = {k: z[k] for k in ("ids", "fail_ids", "fail_reasons", "frames")}
                    part["name"] = name
                    part["fingerprints"] = z["fingerprints"] if "fingerprints" in z.files \
                        else None  # written by an older vmr: content unknown, accepted
                    if with_features:
                        part["features"] = z["features"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                print(f"warning: discarding damaged progress file {name} ({e}); its items will "
                      "be encoded again", file=sys.stderr)
                with contextlib.suppress(OSError):
                    os.remove(name)
                continue
            yield part

    def check_dim(self, dim: int) -> None:
        """Refuse an encoder whose vectors do not match the parts already written."""
        for p in self.parts(with_features=True):
            if len(p["ids"]) and p["features"].shape[1] != dim:
                raise VmrError(f"{self.path} holds {p['features'].shape[1]}-d features but the "
                               f"encoder gives {dim}-d; pass --overwrite to start over")
            break

    def valid(self, part: dict) -> list[bool]:
        """Per entry of a part (its ids, then its fail_ids): was it made from the content the
        item has now? Entries without a recorded fingerprint count as valid."""
        from vmr.extract.freshness import same

        names = part["ids"].tolist() + part["fail_ids"].tolist()
        fps = part.get("fingerprints")
        if fps is None or not self.fingerprints:
            return [True] * len(names)
        return [i not in self.fingerprints or same(f, self.fingerprints[i])
                for i, f in zip(names, fps.tolist())]

    def done(self) -> tuple[set[str], int, int]:
        """(ids done (success or failure) from their current content, number of vectors,
        number of frames) so far."""
        ids: set[str] = set()
        vectors = frames = 0
        for p in self.parts():
            ok = self.valid(p)
            k = len(p["ids"])
            ids.update(i for i, v in zip(p["ids"].tolist(), ok[:k]) if v)
            ids.update(i for i, v in zip(p["fail_ids"].tolist(), ok[k:]) if v)
            vectors += sum(ok[:k])
            frames += int(p["frames"])
        return ids, vectors, frames
