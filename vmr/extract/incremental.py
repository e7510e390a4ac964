"""What an extraction has to encode, given the cache it updates, and how its results are
published.

Rows of the modality already in the cache are kept when they were made with the same settings
(and, for a shard file, the same shard) from the content the item has now (freshness.py);
every other row in the run's scope is encoded. A cache made for a subset of the dataset's items
(the catalogue grew) is carried over by item id; a cache holding items the dataset lacks is an
error. Publishing takes each row from exactly one place -- the newest progress entry made from
the current content, else the kept cache row -- and refuses to mark a row present unless its
vector was written.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from vmr.errors import VmrError


@dataclass
class Plan:
    kept: "np.ndarray"  # noqa: F821  bool [n]: rows taken unchanged from the cache
    fps: dict[int, str]  # row -> fingerprint of its content now (rows in scope)
    kept_fps: dict[int, str] = field(default_factory=dict)  # fingerprint published for kept rows
    remap: bool = False  # the cache was made for a subset of the items: carry it over by id
    old_attrs: dict | None = None  # the modality's attributes when rows are kept
    nothing_to_do: bool = False
    notes: list[str] = field(default_factory=list)


def _cached_rows(target: str, items, modality: str, settings: dict, shard_spec: str,
                 overwrite: bool, plan: Plan) -> tuple:
    """What the cache at `target` already holds for this run: row -> stored fingerprint ("" =
    unknown) of each done row that may be kept, the done mask, and whether the cache has no
    fingerprints. Sets plan.remap, plan.old_attrs and notes; refuses another dataset or other
    settings (without --overwrite)."""
    import numpy as np

    from vmr.cache import read as cache_read

    ids = items.ids
    n = len(ids)
    stored: dict[int, str] = {}
    cached_done = np.zeros(n, bool)
    unknown = False
    if not os.path.exists(target):
        return stored, cached_done, unknown
    cache_ids = cache_read.read_item_ids(target)
    if cache_ids != ids:
        if not set(cache_ids) <= set(ids):
            cache_read.check_item_ids(target, cache_ids, ids)  # raises: another dataset
        plan.remap = True
        plan.notes.append(f"the dataset has {n - len(cache_ids):,} items more than {target}; "
                          "its cached rows are kept, the new items are added")
    with cache_read.open_cache(target) as f:
        if modality in f:
            old = cache_read.group_attrs(f[modality])
            diff = [d for d in cache_read.settings_diff(old, settings) if not d.startswith("dim ")]
            if diff and not overwrite:
                raise VmrError(f"{target} already holds {modality} features made with other "
                               f"settings ({'; '.join(diff)}); pass --overwrite to replace "
                               "them or use another --cache")
            if not overwrite and old.get("shard", "") == shard_spec:
                plan.old_attrs = old
                g = f[modality]
                done = g["done"][...].astype(bool)
                old_fps = cache_read.read_fingerprints(g)
                unknown = old_fps is None
                where = {i: r for r, i in enumerate(cache_ids)}
                for r in range(n):
                    o = where.get(ids[r])
                    if o is not None and done[o]:
                        cached_done[r] = True
                        stored[r] = "" if old_fps is None else old_fps[o]
    return stored, cached_done, unknown


def make_plan(target: str, items, modality: str, settings: dict, shard_spec: str, scope,
              overwrite: bool) -> Plan:
    """Which rows of `scope` to keep from the cache and which to encode (see the module
    docstring)."""
    import numpy as np

    from vmr.extract import freshness

    ids = items.ids
    n = len(ids)
    plan = Plan(kept=np.zeros(n, bool), fps={})
    stored, cached_done, unknown = _cached_rows(target, items, modality, settings, shard_spec,
                                                overwrite, plan)
    in_scope = _scope_mask(n, scope)
    plan.fps = freshness.current(items, modality, np.flatnonzero(in_scope).tolist(), stored)
    stale = []
    for r, fp in stored.items():
        if not in_scope[r]:
            continue
        if not fp:  # made before fingerprints: unknown, kept
            plan.kept[r], plan.kept_fps[r], unknown = True, "", True
        elif freshness.same(fp, plan.fps[r]):
            plan.kept[r], plan.kept_fps[r] = True, plan.fps[r]
        else:
            stale.append(r)
    if unknown:
        freshness.warn_unknown(target, modality)
    if stale:
        plan.notes.append(f"{len(stale):,} cached {modality} items changed since they were "
                          f"extracted (first: {ids[stale[0]]!r}); encoding them again")
    plan.nothing_to_do = (plan.old_attrs is not None and not plan.remap
                          and bool(plan.kept[in_scope].all())
                          and not (cached_done & ~in_scope).any())
    return plan


def _scope_mask(n: int, scope):
    """A bool mask over the n rows: True for the rows in `scope`."""
    import numpy as np

    in_scope = np.zeros(n, bool)
    in_scope[np.asarray(list(scope), dtype=np.int64)] = True
    return in_scope


def _read_parts(progress, index: dict[str, int], in_scope):
    """Where each row's result is, from the progress parts (oldest first: the newest valid
    entry of an item wins): present and got masks, row -> part holding its vector, row ->
    failure reason."""
    import numpy as np

    n = len(in_scope)
    present = np.zeros(n, bool)
    got = np.zeros(n, bool)
    owner: dict[int, str] = {}  # row -> the part holding its vector
    failures: dict[int, str] = {}
    for p in progress.parts():
        ok = progress.valid(p)
        k = len(p["ids"])
        for i, v in zip(p["ids"].tolist(), ok[:k]):
            if v and in_scope[index[i]]:
                r = index[i]
                present[r] = got[r] = True
                owner[r] = p["name"]
                failures.pop(r, None)
        for i, reason, v in zip(p["fail_ids"].tolist(), p["fail_reasons"].tolist(), ok[k:]):
            if v and in_scope[index[i]]:
                r = index[i]
                got[r], present[r] = True, False
                owner.pop(r, None)
                failures[r] = reason
    return present, got, owner, failures


def _part_copier(progress, ids: list[str], index: dict[str, int], owner: dict[int, str],
                 present, dtype: str):
    """A `write_features` that copies each row's vector from the part that owns it, and fails
    when a vector the first pass found can no longer be read."""
    import numpy as np

    def write_features(ds) -> None:
        written = np.zeros(len(ids), bool)
        for p in progress.parts(with_features=True):
            rows = [(index[i], j) for j, i in enumerate(p["ids"].tolist())
                    if owner.get(index[i]) == p["name"]]
            if not rows:
                continue
            rows.sort()
            ds[[r for r, _ in rows]] = p["features"][[j for _, j in rows]].astype(dtype)
            written[[r for r, _ in rows]] = True
        lost = np.flatnonzero(present & ~written)
        if len(lost):  # a part vanished or was damaged since the first pass
            raise VmrError(f"{progress.path}: the vectors of {len(lost):,} items could not be "
                           f"read back (first: {ids[lost[0]]!r}); rerun the same command to "
                           "encode them again")

    return write_features


def publish_run(target: str, items, modality: str, progress, scope, plan: Plan, attrs: dict,
                dtype: str, dim: int) -> None:
    """Assemble the progress parts and the kept cache rows into the modality's new group and
    publish it (vmr.cache.store.publish)."""
    import numpy as np

    from vmr.cache.store import ModalityData, publish

    ids = items.ids
    index = {i: r for r, i in enumerate(ids)}
    n = len(ids)
    in_scope = _scope_mask(n, scope)
    present, got, owner, failures = _read_parts(progress, index, in_scope)
    keep = plan.kept & in_scope & ~got
    content = items.column(modality)
    no_content = np.array([not content[r] for r in range(n)]) & in_scope & ~keep & ~got
    if modality == "text":
        no_content[:] = False  # every text item is committed (empty texts as failures)
    missing = np.flatnonzero(in_scope & ~keep & ~got & ~no_content)
    if len(missing):
        raise VmrError(f"{progress.path}: the results of {len(missing):,} items are missing "
                       f"(first: {ids[missing[0]]!r}); its progress files changed while this "
                       "run was working (another process?); rerun the same command")
    if plan.old_attrs is not None and keep.any() and int(plan.old_attrs.get("dim", -1)) != dim:
        raise VmrError(f"{target} holds {plan.old_attrs.get('dim')}-d {modality} features but the "
                       f"encoder gives {dim}-d; pass --overwrite to replace them")
    fps = [""] * n
    for r in np.flatnonzero(in_scope).tolist():
        fps[r] = plan.kept_fps.get(r, "") if keep[r] else plan.fps.get(r, "")
    fails = [(ids[r], failures[r]) for r in sorted(failures)]
    data = ModalityData(attrs=attrs, present=present, done=in_scope, failures=fails,
                        write_features=_part_copier(progress, ids, index, owner, present, dtype),
                        dtype=dtype, dim=dim, fingerprints=fps, keep=keep)
    publish(target, ids, {modality: data}, replace=True, remap=plan.remap)
    for note in _other_modalities(target, modality, plan):
        print(note, file=sys.stderr)


def _other_modalities(target: str, modality: str, plan: Plan) -> list[str]:
    """After carrying a cache over to a larger catalogue: which other modalities now lack the
    new items."""
    if not plan.remap:
        return []
    from vmr.cache import read as cache_read

    out = []
    with cache_read.open_cache(target) as f:
        for m in cache_read.MODALITIES:
            if m != modality and m in f:
                missing = int((~f[m]["done"][...].astype(bool)).sum())
                if missing:
                    out.append(f"note: the {m} features in {target} lack the {missing:,} new "
                               f"items; run `vmr extract --modality {m}` (or import them again)")
    return out
