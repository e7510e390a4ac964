"""`vmr extract`: encode every item's video, image or text into the HDF5 cache.

Flow: check the cache and any interrupted run (progress.py) -> start decode workers (pool.py)
while the encoder loads -> encode in batches (local_engine.py, or ray_engine.py), committing
each batch to a progress part -> assemble the parts into a new cache file and swap it in
atomically (vmr.cache.store.publish).

Batches are deterministic, so an interrupted and resumed run (or a sharded one) gives the same
vectors as an uninterrupted run: text batches are fixed groups of items (shard.text_units);
visual batches always have exactly --batch-size frames (the last one is zero-padded), and a
frame's features do not depend on what else is in a batch of fixed shape.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from vmr.cache.read import resolve_cache
from vmr.errors import VmrError
from vmr.extract.background import stop_on_sigterm as _stop_on_sigterm


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


def _my_units(opts: ExtractOptions, items, shard) -> tuple[list[list[int]], str]:
    """This run's units of work (fixed text batches, or single items) and their kind."""
    from vmr.extract import shard as sharding

    if opts.modality == "text":
        units = sharding.text_units(items.text, opts.batch_size)
        unit_kind = f"text-batch-{opts.batch_size}"
    else:
        units = [[r] for r in range(len(items.ids))]
        unit_kind = "item"
    return sharding.take(units, shard), unit_kind


def _open_progress(opts: ExtractOptions, target: str, items, plan, mine, info: dict):
    """The progress directory (resumed when it matches `info`) and the units with work left."""
    from vmr.extract.progress import Progress

    ids = items.ids
    progress = Progress(f"{target}.partial-{opts.modality}")
    progress.open(info, overwrite=opts.overwrite)
    progress.fingerprints = {ids[r]: fp for r, fp in plan.fps.items()}
    done_ids, _, _ = progress.done()
    # a unit with work left is encoded whole, except rows kept from the cache (a grown
    # catalogue, unchanged content): a fresh or resumed run encodes the same batches as before
    todo = [[r for r in u if not plan.kept[r]] for u in mine
            if any(not plan.kept[r] and ids[r] not in done_ids for r in u)]
    return progress, todo


def _encode_or_save(opts, items, ident, todo, progress, scope, stats):
    """Encode `todo` (the encoder, or None when there was nothing to encode); on Ctrl-C or
    SIGTERM, say how much is saved for a resume."""
    with _stop_on_sigterm():
        try:
            return _encode(opts, items, ident, todo, progress, scope, stats) if todo else None
        except KeyboardInterrupt:
            saved = len(progress.done()[0])
            print(f"\ninterrupted: {saved:,} of {len(scope):,} items are saved in "
                  f"{progress.path}; rerun the same command to resume", file=sys.stderr)
            raise


def _feature_dim(encoder, progress, plan, ident, opts: ExtractOptions) -> int:
    """The features' width: the encoder's, else the saved parts', else the cache's, else the
    model's (resumed after every remaining item had failed)."""
    dim = encoder.dim if encoder is not None else _dim_from_parts(progress)
    if dim is None and plan.old_attrs is not None:
        dim = int(plan.old_attrs["dim"])
    if dim is None:  # resumed after every remaining item had failed: ask the model
        from vmr.extract.encoders import load_encoder, resolve_device

        dim = load_encoder(ident, opts.pooling, resolve_device(opts.device)).dim
    return dim


def _run_locked(opts, items, ident, target, shard) -> str:
    """The extraction under the cache's lock: plan, encode what is left, publish, summarize."""
    from vmr.cache import read as cache_read
    from vmr.cache import store
    from vmr.extract.incremental import make_plan, publish_run
    from vmr.extract.items import ids_digest
    from vmr.extract.progress import Progress

    settings = _settings(ident, opts)
    mine, unit_kind = _my_units(opts, items, shard)
    scope = sorted(r for u in mine for r in u)
    shard_spec = f"{shard[0]}/{shard[1]}" if shard else ""

    plan = make_plan(target, items, opts.modality, settings, shard_spec, scope, opts.overwrite)
    if plan.nothing_to_do:
        Progress(f"{target}.partial-{opts.modality}").remove()  # killed after publishing
        return f"{opts.modality}: already in {target}, nothing to do\n" + cache_read.describe(target)
    for note in plan.notes:
        print(f"{opts.modality}: {note}", file=sys.stderr)

    progress, todo = _open_progress(opts, target, items, plan, mine, {
        **settings, "modality": opts.modality, "items_sha256": ids_digest(items.ids),
        "shard": shard_spec, "shard_unit": unit_kind, "batch_size": opts.batch_size})
    stats = _Stats()
    t0 = time.monotonic()
    encoder = _encode_or_save(opts, items, ident, todo, progress, scope, stats)
    dim = _feature_dim(encoder, progress, plan, ident, opts)
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

    if opts.engine == "ray":
        from vmr.extract.ray_engine import extract_on_ray as run
    else:
        from vmr.extract.local_engine import extract_locally as run
    try:
        return run(opts, items, ident, todo, progress, len(scope),
                   len(scope) - sum(len(u) for u in todo), stats)
    except BaseException:
        with contextlib.suppress(Exception):
            if not progress._part_names():
                progress.remove()
        raise


# ----------------------------------------------------------------------------------- publish
def _dim_from_parts(progress) -> int | None:
    for p in progress.parts(with_features=True):
        if len(p["ids"]):
            return int(p["features"].shape[1])
    return None


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
