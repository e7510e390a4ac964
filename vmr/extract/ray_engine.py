"""`vmr extract --engine ray`: one extraction spread over a Ray cluster (docs/SCALE.md).

The runner (runner.py) does everything around the encoding loop exactly as for a local run -- the
writer lock, the plan of what is left, the progress directory, publishing the cache -- and hands
this module the units still to encode. Here (the driver: ray_jobs.py; the workers: ray_workers.py):

- video, image: the items are cut into small groups; a CPU task decodes a group through the local
  decode workers' own path (pool.decode_one: same decoder, same frames) and leaves the pixels in
  Ray's object store. The driver packs decoded frames into encoder batches of exactly
  --batch-size frames (the last one zero-padded), as the local loop does, and sends each batch to
  the least loaded encoder actor; an item's vector is the mean of its frames' features in frame
  order. A frame's features do not depend on the rest of a batch of fixed shape, so the vectors
  are the local run's, bit for bit on CPU.
- text: each unit (a fixed, length-sorted batch: shard.text_units) goes to an actor whole, so
  the batches are the local run's.
- encoder actors: one per GPU of the cluster; without a GPU (or with --device cpu), CPU actors,
  one per node unless --ray-encoders says otherwise.
- only the driver writes: each finished batch is committed to the progress directory as it
  arrives, so a killed job resumes where it stopped (with either engine).
- failures: Ray retries a decode task whose worker dies (max_retries), restarts a dead actor
  (max_restarts) and retries its calls; a call that still fails is resubmitted by the driver, and
  a decode group that still fails is decoded item by item, so that an item whose decoder keeps
  dying (or hangs past --timeout: a watchdog ends its worker) is that item's failure, as locally.

Ray is imported only inside functions: without it, `--engine ray` is a one-line error.
"""

from __future__ import annotations

import os
import sys
import time

from vmr.errors import VmrError

MISSING = "--engine ray needs Ray, which is not installed: pip install 'vmr[ray]'"


def require_ray():
    try:
        import ray
    except ImportError:
        raise VmrError(MISSING) from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local one on this machine.
    True when this call started Ray (the caller shuts it down); a session the caller opened
    with ray.init() is used as it is."""
    import logging

    from vmr.fsio import one_line

    if ray.is_initialized():
        return False
    extra = {} if address or os.environ.get("RAY_ADDRESS") else {"include_dashboard": False}
    try:
        ray.init(address=address or None, log_to_driver=False, logging_level=logging.WARNING,
                 **extra)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"--ray-address {address}" if address else "ray.init()"
        raise VmrError(f"{where}: cannot reach or start a Ray cluster ({one_line(e)})") from None
    return True


def extract_on_ray(opts, items, ident, todo, progress, total, initial, stats):
    """The runner's encoding loop on a Ray cluster; returns the encoders (their `dim`)."""
    from tqdm import tqdm

    from vmr.extract.ray_jobs import Encoders, TextJob, VisualJob

    ray = require_ray()
    started = connect(ray, opts.ray_address)
    enc = None
    try:
        enc = Encoders(ray, opts, ident)
        progress.check_dim(enc.dim)
        bar = tqdm(total=total, initial=initial, unit="item", desc=f"{opts.modality} (ray)",
                   file=sys.stderr, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty()
                   else 10.0, smoothing=0.05)
        stats.started = time.monotonic()
        job = (TextJob if opts.modality == "text" else VisualJob)(ray, opts, items, progress,
                                                                   bar, stats, enc)
        try:
            if opts.modality == "text":
                job.run(items.text, todo)
            else:
                _run_visual(job, opts, items, todo, enc)
        finally:
            job.flush()
            bar.close()
        stats.engine = enc.describe + (f", {job.resubmitted} batch(es) resubmitted"
                                       if job.resubmitted else "")
        return enc
    finally:
        if enc is not None:
            enc.close(ray)
        if started:
            ray.shutdown()


def _run_visual(job, opts, items, todo, enc) -> None:
    from vmr.extract.decode import DecodeTask, resolve_decoder

    paths = items.column(opts.modality)
    rows = [u[0] for u in todo]
    no_file = [r for r in rows if not paths[r]]
    job.bar.update(len(no_file))  # no file listed: done, not present, not a failure
    video = ()
    if opts.modality == "video":
        video = (resolve_decoder(opts.decoder), opts.keyframes, opts.decode_threads or 1)

    def make_task(path):
        return DecodeTask(opts.modality, path, enc.pixels, opts.fps, opts.max_frames, *video)

    job.run(paths, [r for r in rows if paths[r]], make_task)

