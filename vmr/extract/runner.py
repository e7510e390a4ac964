"""`vmr extract`: encode every item's video, image or text into the HDF5 cache.

Flow: check the cache and any interrupted run (progress.py) -> start decode workers (pool.py)
while the encoder loads -> encode in batches, committing each batch to a progress part ->
assemble the parts into a new cache file and swap it in atomically (vmr.cache.store.publish).

Batches are deterministic, so an interrupted and resumed run (or a sharded one) gives the same
vectors as an uninterrupted run: text batches are fixed groups of items (shard.text_units);
visual batches always have exactly --batch-size frames (the last one is zero-padded), and a
frame's features do not depend on what else is in a batch of fixed shape.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from dataclasses import dataclass

from vmr.cache.read import resolve_cache
from vmr.errors import VmrError
from vmr.extract.background import prefetch as _prefetch
from vmr.extract.background import stop_on_sigterm as _stop_on_sigterm
from vmr.extract.finite import check_finite as _check_finite


@dataclass
class ExtractOptions:
    data: str
    modality: str
    model: str | None = None
    cache: str | None = None
    fps: float = 1.0
    max_frames: int = 32
    pooling: str | None = None  # text: cls, mean or model; None = the encoder's default
    batch_size: int = 64
    workers: int | None = None
    timeout: float = 60.0
    dtype: str = "float16"
    device: str = "auto"
    shard: str | None = None
    overwrite: bool = False
    decoder: str = "auto"  # video: auto, pyav or decord (vmr.extract.decode.resolve_decoder)
    keyframes: bool = False  # video: nearest keyframes instead of exact frames
    decode_threads: int | None = None  # video: per worker [default: pool.default_decode_threads]
    engine: str = "local"  # "local" (this machine) or "ray" (vmr.extract.ray_engine)
    ray_address: str | None = None  # engine ray: the cluster to join; None = a local one
    ray_encoders: int | None = None  # engine ray, no GPU: CPU encoder actors [default: 1/node]


@dataclass
class _Stats:
    items: int = 0  # vectors made in this run
    failed: int = 0  # failures recorded in this run
    frames: int = 0  # frames (video/image) or texts encoded in this run
    encoder_s: float = 0.0  # time spent inside encoder.encode
    started: float = 0.0  # time.monotonic() when the encoding loop started
    parallelism: str = ""  # threads and workers used, for the summary
    engine: str = ""  # how the work was spread, for the summary ("ray: 2 nodes, ...")


def _validate(opts: ExtractOptions) -> None:
    from vmr.cache.read import MODALITIES

    if opts.modality not in MODALITIES:
        raise VmrError(f"--modality {opts.modality!r}: expected video, image or text")
    if not opts.fps > 0:
        raise VmrError(f"--fps {opts.fps}: must be > 0")
    if opts.max_frames < 1:
        raise VmrError(f"--max-frames {opts.max_frames}: must be >= 1")
    if opts.batch_size < 1:
        raise VmrError(f"--batch-size {opts.batch_size}: must be >= 1")
    if not opts.timeout > 0:
        raise VmrError(f"--timeout {opts.timeout}: must be > 0 seconds")
    if opts.dtype not in ("float16", "float32"):
        raise VmrError(f"--dtype {opts.dtype!r}: expected float16 or float32")
    if opts.workers is not None and opts.workers < 0:
        raise VmrError(f"--workers {opts.workers}: must be >= 0")
    if opts.engine not in ("local", "ray"):
        raise VmrError(f"--engine {opts.engine!r}: expected local or ray")
    if opts.engine != "ray" and (opts.ray_address or opts.ray_encoders is not None):
        raise VmrError("--ray-address and --ray-encoders need --engine ray")
    if opts.engine == "ray" and opts.shard is not None:
        raise VmrError("--shard with --engine ray: Ray schedules the whole job over the cluster "
                       "itself; drop --shard")
    if opts.ray_encoders is not None and opts.ray_encoders < 1:
        raise VmrError(f"--ray-encoders {opts.ray_encoders}: must be >= 1")


def _settings(ident, opts: ExtractOptions) -> dict:
    """The cache attributes that identify what the features are (dim added once loaded)."""
    video, text = opts.modality == "video", opts.modality == "text"
    return {
        "encoder": ident.name,
        "weights": ident.weights,
        "dtype": opts.dtype,
        "fps": float(opts.fps) if video else 0.0,
        "max_frames": int(opts.max_frames) if video else 0,
        "pooling": ident.pooling if text else (
            ("mean-keyframes" if opts.keyframes else "mean") if video else "none"),
        **({"decoder": _decoder(opts)} if video else {}),  # not compared with the cache's
    }


def _decoder(opts: ExtractOptions) -> str:
    from vmr.extract.decode import resolve_decoder

    return resolve_decoder(opts.decoder)


def run_extract(opts: ExtractOptions) -> str:
    """Run one extraction; returns the summary the CLI prints.

    The whole run holds the lock of the target cache file and modality (vmr.cache.lock): a
    second extraction of the same cache and modality stops at once with an error naming this
    one's pid; other modalities run side by side and publish in turn."""
    from vmr.cache.lock import modality_lock
    from vmr.extract import shard as sharding
    from vmr.extract.encoders import identify
    from vmr.extract.items import load_items

    _validate(opts)
    if opts.engine == "ray":
        from vmr.extract.ray_engine import require_ray

        require_ray()
    items = load_items(opts.data)
    if not any((v or "").strip() for v in items.column(opts.modality)):
        raise VmrError(f"no item of {opts.data} has {opts.modality} content (column "
                       f"'{opts.modality}' of items.parquet is empty); nothing to extract")
    cache = str(resolve_cache(opts.data, opts.cache))
    shard = sharding.parse_shard(opts.shard)
    # the real file: a symbolic link to the cache shares its lock and progress, and is kept
    target = os.path.realpath(sharding.shard_path(cache, *shard) if shard else cache)
    ident = identify(opts.model, opts.modality, opts.pooling if opts.modality == "text" else None)
    if os.path.isdir(target):
        raise VmrError(f"cache {target} is a directory; --cache must name an HDF5 file")
    command = f"vmr extract --data {opts.data} --modality {opts.modality}" + \
        (f" --shard {shard[0]}/{shard[1]}" if shard else "")
    with modality_lock(target, opts.modality, command):
        return _run_locked(opts, items, ident, target, shard)


def _run_locked(opts, items, ident, target, shard) -> str:
    from vmr.cache import read as cache_read
    from vmr.cache import store
    from vmr.extract import shard as sharding
    from vmr.extract.incremental import make_plan, publish_run
    from vmr.extract.items import ids_digest
    from vmr.extract.progress import Progress

    ids = items.ids
    settings = _settings(ident, opts)
    if opts.modality == "text":
        units = sharding.text_units(items.text, opts.batch_size)
        unit_kind = f"text-batch-{opts.batch_size}"
    else:
        units = [[r] for r in range(len(ids))]
        unit_kind = "item"
    mine = sharding.take(units, shard)
    scope = sorted(r for u in mine for r in u)
    shard_spec = f"{shard[0]}/{shard[1]}" if shard else ""

    plan = make_plan(target, items, opts.modality, settings, shard_spec, scope, opts.overwrite)
    if plan.nothing_to_do:
        Progress(f"{target}.partial-{opts.modality}").remove()  # killed after publishing
        return f"{opts.modality}: already in {target}, nothing to do\n" + cache_read.describe(target)
    for note in plan.notes:
        print(f"{opts.modality}: {note}", file=sys.stderr)

    progress = Progress(f"{target}.partial-{opts.modality}")
    progress.open({**settings, "modality": opts.modality, "items_sha256": ids_digest(ids),
                   "shard": shard_spec, "shard_unit": unit_kind,
                   "batch_size": opts.batch_size}, overwrite=opts.overwrite)
    progress.fingerprints = {ids[r]: fp for r, fp in plan.fps.items()}
    done_ids, _, _ = progress.done()
    # a unit with work left is encoded whole, except rows kept from the cache (a grown
    # catalogue, unchanged content): a fresh or resumed run encodes the same batches as before
    todo = [[r for r in u if not plan.kept[r]] for u in mine
            if any(not plan.kept[r] and ids[r] not in done_ids for r in u)]

    stats = _Stats()
    t0 = time.monotonic()
    encoder = None
    with _stop_on_sigterm():
        try:
            if todo:
                encoder = _encode(opts, items, ident, todo, progress, scope, stats)
        except KeyboardInterrupt:
            saved = len(progress.done()[0])
            print(f"\ninterrupted: {saved:,} of {len(scope):,} items are saved in "
                  f"{progress.path}; rerun the same command to resume", file=sys.stderr)
            raise
    dim = encoder.dim if encoder is not None else _dim_from_parts(progress)
    if dim is None and plan.old_attrs is not None:
        dim = int(plan.old_attrs["dim"])
    if dim is None:  # resumed after every remaining item had failed: ask the model
        from vmr.extract.encoders import load_encoder, resolve_device

        dim = load_encoder(ident, opts.pooling, resolve_device(opts.device)).dim
    attrs = {**settings, "dim": dim, "batch_size": opts.batch_size, "engine": opts.engine,
             **store.base_attrs()}
    if shard:
        attrs.update(shard=shard_spec, shard_unit=unit_kind)
    publish_run(target, items, opts.modality, progress, scope, plan, attrs, opts.dtype, dim)
    progress.remove()
    started = stats.started or t0
    wall = time.monotonic() - started
    return (_summary(opts.modality, target, stats, wall, started - t0) + "\n"
            + "".join(f"{opts.modality}: {note}\n" for note in plan.notes)
            + cache_read.describe(target))


def _encode(opts, items, ident, todo, progress, scope, stats):
    """The encoding loop of the chosen engine (this machine, or vmr.extract.ray_engine). When it
    fails before any batch was saved (a model that would not load), the empty progress folder
    is removed, so that it cannot block the next run, with another model, as an 'interrupted'
    extraction."""
    import contextlib

    run = _extract
    if opts.engine == "ray":
        from vmr.extract.ray_engine import extract_on_ray as run
    try:
        return run(opts, items, ident, todo, progress, len(scope),
                   len(scope) - sum(len(u) for u in todo), stats)
    except BaseException:
        with contextlib.suppress(Exception):
            if not progress._part_names():
                progress.remove()
        raise


def _extract(opts, items, ident, todo, progress, total, initial, stats):
    """Load the encoder, run the loop; returns the encoder."""
    from tqdm import tqdm

    import vmr.parallel as parallel
    from vmr.extract.encoders import load_encoder, resolve_device
    from vmr.extract.pool import DecodePool

    device = resolve_device(opts.device)
    threads = parallel.apply()  # the encoder's; before any decode worker adds to the load
    stats.parallelism = _describe_threads(threads)
    pool = None
    try:
        if opts.modality != "text":  # workers start (spawn) while the model loads
            n_workers = max(1, threads["threads"] - 1) if opts.workers is None else opts.workers
            pool = DecodePool(n_workers, opts.timeout)
            stats.parallelism += f", {n_workers} decode worker{'s' * (n_workers != 1)}"
        encoder = load_encoder(ident, pooling=opts.pooling, device=device)
        progress.check_dim(encoder.dim)
        if opts.modality != "text":
            encoder.warmup(opts.batch_size)
        bar = tqdm(total=total, initial=initial, unit="item", desc=opts.modality,
                   file=sys.stderr, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty()
                   else 10.0, smoothing=0.05)
        stats.started = time.monotonic()
        try:
            if opts.modality == "text":
                _run_text(encoder, items, todo, progress, bar, stats, opts.dtype)
            else:
                _run_visual(encoder, items, opts, todo, progress, pool, bar, stats)
        finally:
            bar.close()
        return encoder
    finally:
        if pool is not None:
            pool.close()


# ------------------------------------------------------------------------------------- loops
def _run_text(encoder, items, todo, progress, bar, stats, dtype) -> None:
    import numpy as np

    ids = items.ids

    def batches():  # tokenizing runs ahead in a thread (the fast tokenizer releases the GIL)
        for unit in todo:
            good = [r for r in unit if (items.text[r] or "").strip()]
            empty = [r for r in unit if not (items.text[r] or "").strip()]
            tok = encoder.tokenize([items.text[r] for r in good]) if good else None
            yield good, empty, tok

    for good, empty, tok in _prefetch(batches()):
        feats = np.zeros((0, encoder.dim), np.float32)
        if good:
            t = time.monotonic()
            feats = encoder.encode(tok)
            stats.encoder_s += time.monotonic() - t
            stats.frames += len(good)
        ok_ids, feats, bad_ids = _check_finite(feats, [ids[r] for r in good], "text", dtype)
        fail_ids = [ids[r] for r in empty] + bad_ids
        reasons = (["empty text"] * len(empty)
                   + ["encoder returned non-finite values"] * len(bad_ids))
        progress.commit(ok_ids, feats, fail_ids, reasons)
        stats.items += len(ok_ids)
        stats.failed += len(fail_ids)
        bar.update(len(good) + len(empty))


def _run_visual(encoder, items, opts, todo, progress, pool, bar, stats) -> None:
    import numpy as np

    from vmr.extract.decode import DecodeTask

    ids, paths = items.ids, items.column(opts.modality)
    rows = [u[0] for u in todo]
    no_file = [r for r in rows if not paths[r]]
    bar.update(len(no_file))  # no file listed: done, not present, not a failure
    video = ()
    if opts.modality == "video":
        from vmr.extract.pool import default_decode_threads

        video = (_decoder(opts), opts.keyframes, opts.decode_threads or
                 default_decode_threads(pool.n))
        stats.parallelism += f" x {video[2]} decode thread{'s' * (video[2] != 1)}"
    tasks = ((r, DecodeTask(opts.modality, paths[r], encoder.pixels, opts.fps, opts.max_frames,
                            *video))
             for r in rows if paths[r])
    B = opts.batch_size
    chunks: collections.deque = collections.deque()  # (row, frames not yet encoded)
    buffered = 0
    per_item: dict[int, list] = {}  # row -> [frames expected, feature chunks]
    fail_ids: list[str] = []
    reasons: list[str] = []
    crop = encoder.pixels.crop

    def encode_batch() -> None:
        nonlocal buffered
        take, parts = 0, []
        while chunks and take < B:
            row, fr = chunks[0]
            k = min(B - take, len(fr))
            parts.append((row, fr[:k]))
            if k == len(fr):
                chunks.popleft()
            else:
                chunks[0] = (row, fr[k:])
            take += k
        buffered -= take
        batch = np.zeros((B, crop, crop, 3), np.uint8)  # fixed shape: see the module docstring
        np.concatenate([p[1] for p in parts], out=batch[:take])
        t = time.monotonic()
        feats = encoder.encode(batch)[:take]
        stats.encoder_s += time.monotonic() - t
        stats.frames += take
        done_rows, at = [], 0
        for row, fr in parts:
            entry = per_item[row]
            entry[1].append(feats[at:at + len(fr)])
            at += len(fr)
            if sum(len(c) for c in entry[1]) == entry[0]:
                done_rows.append(row)
        vecs = [np.concatenate(per_item.pop(r)[1]).mean(axis=0, dtype=np.float64)
                for r in done_rows]
        vecs = (np.stack(vecs).astype(np.float32) if vecs
                else np.zeros((0, encoder.dim), np.float32))
        ok_ids, vecs, bad = _check_finite(vecs, [ids[r] for r in done_rows], opts.modality,
                                          opts.dtype)
        commit(ok_ids, vecs, bad, ["encoder returned non-finite values"] * len(bad), take)

    def commit(ok_ids, vecs, bad_ids, bad_reasons, frames) -> None:
        fail_ids.extend(bad_ids)
        reasons.extend(bad_reasons)
        progress.commit(ok_ids, vecs, fail_ids, reasons, frames=frames)
        stats.items += len(ok_ids)
        stats.failed += len(fail_ids)
        bar.update(len(ok_ids) + len(fail_ids))
        fail_ids.clear()
        reasons.clear()
        elapsed = max(bar.format_dict.get("elapsed", 0) or 0, 1e-6)
        bar.set_postfix_str(f"{stats.frames / elapsed:.1f} frames/s", refresh=False)

    frame_bytes = crop * crop * 3
    ahead = pool.run(tasks, max_items=max(4 * B, 2 * pool.n + 2),
                     max_bytes=max(64 << 20, 4 * B * frame_bytes))
    for row, ok, payload in ahead:
        if not ok:
            fail_ids.append(ids[row])
            reasons.append(payload)
            continue
        per_item[row] = [len(payload), []]
        chunks.append((row, payload))
        buffered += len(payload)
        while buffered >= B:
            encode_batch()
    while buffered > 0:
        encode_batch()
    if fail_ids:
        commit([], np.zeros((0, 0), np.float32), [], [], 0)


# ----------------------------------------------------------------------------------- publish
def _dim_from_parts(progress) -> int | None:
    for p in progress.parts(with_features=True):
        if len(p["ids"]):
            return int(p["features"].shape[1])
    return None


def _describe_threads(p: dict) -> str:
    """'encoder 2 threads (auto: 0.1 of 2 cores busy with other work)' from parallel.plan."""
    how = (f"auto: {p['others_busy']:g} of {p['cores']} cores busy with other work"
           if p["source"] == "auto" else p["source"])
    return f"encoder {p['threads']} thread{'s' * (p['threads'] != 1)} ({how})"


def _summary(modality: str, target: str, s: _Stats, wall: float, startup_s: float) -> str:
    unit = "texts" if modality == "text" else "frames"
    wall = max(wall, 1e-9)
    enc = (f"encoder busy {s.encoder_s:.1f} s = {s.frames / s.encoder_s:.1f} {unit}/s"
           if s.encoder_s > 0 else "encoder idle")
    return (f"{modality}: {s.items:,} items encoded, {s.failed:,} failed in this run; {s.frames:,} "
            f"{unit} in {wall:.1f} s ({(s.items + s.failed) / wall:.1f} items/s, "
            f"{s.frames / wall:.1f} {unit}/s; {enc}; start-up {startup_s:.1f} s"
            f"{'; ' + s.engine if s.engine else ''}) -> {target}"
            + (f"\n{modality}: ran on {s.parallelism}" if s.parallelism else ""))
