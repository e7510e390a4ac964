"""`vmr cache merge`: assemble the shard files of a sharded extraction into one cache.

The shards must agree (same dataset item ids, same encoder and settings per modality) and,
for every modality they hold, cover each item exactly once (their `done` masks). The merged file
is written atomically (store.publish); other modalities of an existing --out file are kept. The
rows' content fingerprints are carried over from the shards. The merge holds --out's lock for
each modality it writes (vmr/cache/lock.py), like an extraction.
"""

from __future__ import annotations

import contextlib
import os

from vmr.cache.lock import modality_lock
from vmr.errors import VmrError

CHUNK = 4096


def _check_paths(paths: list[str], out: str) -> None:
    """At least one shard, none given twice, and --out not one of them."""
    if not paths:
        raise VmrError("give at least one shard file")
    absolute = [os.path.abspath(p) for p in paths]
    if len(set(absolute)) != len(absolute):
        dup = next(p for p in absolute if absolute.count(p) > 1)
        raise VmrError(f"shard {dup} is given twice")
    if os.path.abspath(out) in absolute:
        raise VmrError(f"--out {out} is one of the shards; write the merged cache elsewhere")


def _read_shards(paths: list[str]) -> tuple[list[str], dict[str, list]]:
    """The item ids the shards share, and per modality the (path, attrs, done mask) of each
    shard that holds it."""
    from vmr.cache import read as cache_read

    ids = cache_read.read_item_ids(paths[0])
    info: dict[str, list] = {}  # modality -> [(path, attrs, done)]
    for p in paths:
        with cache_read.open_cache(p) as f:
            other = cache_read.read_ids_from(f, p)
            if other != ids:
                raise VmrError(f"shards {paths[0]} and {p} were made for different datasets "
                               f"(item ids differ: {len(ids)} vs {len(other)} items or order)")
            mods = [m for m in cache_read.MODALITIES if m in f]
            if not mods:
                raise VmrError(f"shard {p} holds no features")
            for m in mods:
                info.setdefault(m, []).append((p, cache_read.group_attrs(f[m]), f[m]["done"][...]))
    return ids, info


def _check_settings(m: str, held: list) -> None:
    """Every shard of modality m was made with the first one's settings (and shard unit)."""
    from vmr.cache import read as cache_read

    p0, a0, _ = held[0]
    for p, a, _ in held[1:]:
        diff = cache_read.settings_diff(a0, a)
        if a0.get("shard_unit") != a.get("shard_unit"):
            diff.append(f"shard_unit {a0.get('shard_unit')!r} -> {a.get('shard_unit')!r} "
                        "(text shards must use the same --batch-size)")
        if diff:
            raise VmrError(f"{m} shards {p0} and {p} were made with different settings: "
                           f"{'; '.join(diff)}")


def _check_coverage(m: str, held: list, ids: list[str]) -> None:
    """The shards of modality m cover every item exactly once (their done masks)."""
    import numpy as np

    n = len(ids)
    count = np.zeros(n, np.int64)
    owner = np.full(n, -1, np.int64)
    for k, (p, _, done) in enumerate(held):
        twice = np.flatnonzero(done & (count > 0))
        if len(twice):
            r = twice[0]
            raise VmrError(f"{m} shards overlap: item {ids[r]!r} is in both "
                           f"{held[owner[r]][0]} and {p} ({len(twice):,} items in common); "
                           "were two shards given the same --shard?")
        count += done
        owner[done] = k
    gap = np.flatnonzero(count == 0)
    if len(gap):
        specs = {a.get("shard", "") for _, a, _ in held}
        totals = {s.split("/")[1] for s in specs if "/" in s}
        missing = ""
        if len(totals) == 1:
            total = int(totals.pop())
            have = {int(s.split("/")[0]) for s in specs if "/" in s}
            lost = [f"{i}/{total}" for i in range(1, total + 1) if i not in have]
            missing = f"; missing shard(s): {', '.join(lost)}" if lost else ""
        first = ", ".join(repr(ids[r]) for r in gap[:3])
        raise VmrError(f"{m} shards leave {len(gap):,} of {n:,} items uncovered (e.g. "
                       f"{first}){missing}")


def _merged_rows(m: str, held: list, ids: list[str]):
    """Modality m's present mask, failures (in item order) and fingerprints (None when no
    shard has any) over all the shards."""
    import numpy as np

    from vmr.cache import read as cache_read

    n = len(ids)
    present = np.zeros(n, bool)
    failures = []
    fps = [""] * n  # "" (unknown) for rows of shards made before fingerprints
    any_fps = False
    for p, _, done in held:
        with cache_read.open_cache(p) as f:
            present |= f[m]["present"][...].astype(bool) & done
            failures += cache_read.read_failures(f[m])
            shard_fps = cache_read.read_fingerprints(f[m])
            if shard_fps is not None:
                any_fps = True
                for r in np.flatnonzero(done).tolist():
                    fps[r] = shard_fps[r]
    index = {i: r for r, i in enumerate(ids)}
    failures.sort(key=lambda x: index.get(x[0], n))
    return present, failures, (fps if any_fps else None)


def _feature_copier(m: str, held: list):
    """A `write_features` that copies each shard's done rows of modality m, chunk by chunk."""
    import numpy as np

    from vmr.cache import read as cache_read

    def write_features(ds) -> None:
        for p, _, done in held:
            with cache_read.open_cache(p) as f:
                src = f[m]["features"]
                rows = np.flatnonzero(done)
                for a in range(0, len(rows), CHUNK):
                    chunk = rows[a:a + CHUNK].tolist()
                    ds[chunk] = src[chunk]

    return write_features


def merge_shards(paths: list[str], out: str) -> str:
    """Merge the shard files `paths` into the cache `out`; returns the summary the CLI prints."""
    import numpy as np

    from vmr.cache import store

    _check_paths(paths, out)
    ids, info = _read_shards(paths)
    n = len(ids)
    groups = {}
    lines = []
    for m, held in info.items():
        _check_settings(m, held)
        _check_coverage(m, held, ids)
        present, failures, fps = _merged_rows(m, held, ids)
        a0 = held[0][1]
        attrs = {k: v for k, v in a0.items() if k not in ("shard", "shard_unit")}
        attrs.update(store.base_attrs())
        groups[m] = store.ModalityData(attrs=attrs, present=present, done=np.ones(n, bool),
                                       failures=failures, write_features=_feature_copier(m, held),
                                       dtype=str(a0.get("dtype")), dim=int(a0.get("dim")),
                                       fingerprints=fps)
        lines.append(f"{m}: {len(held)} shards, {int(present.sum()):,} of {n:,} items present, "
                     f"{len(failures):,} failures")
    with contextlib.ExitStack() as locks:  # like an extraction of each modality into --out
        for m in groups:
            locks.enter_context(modality_lock(out, m, f"vmr cache merge --out {out}"))
        store.publish(out, ids, groups, replace=False)
    return "\n".join([f"merged {len(paths)} shard file(s) into {out}"] + lines)
