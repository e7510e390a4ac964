"""`vmr extract --engine local` (the default): the encoding loop on this machine.

The runner (runner.py) does everything around it -- the lock, the plan, the progress directory,
publishing -- and hands `extract_locally` the units still to encode, as it hands them to the Ray
engine (ray_engine.py). Text: each unit is a fixed batch of items, tokenized ahead in a thread.
Video and image: decode worker processes (pool.py) decode ahead of the encoder; their frames are
encoded in batches of exactly --batch-size frames (the last one zero-padded), and an item's
vector is the mean of its frames' features, committed once all its frames are encoded.
"""

from __future__ import annotations

import collections
import sys
import time

from vmr.extract.background import prefetch
from vmr.extract.finite import check_finite


def extract_locally(opts, items, ident, todo, progress, total, initial, stats):
    """Load the encoder, run the loop; returns the encoder."""
    from tqdm import tqdm

    import vmr.parallel as parallel
    from vmr.extract.encoders import load_encoder, resolve_device
    from vmr.extract.pool import DecodePool

    device = resolve_device(opts.device)
    threads = parallel.apply()  # the encoder's; before any decode worker adds to the load
    stats.parallelism = describe_threads(threads)
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
                run_text(encoder, items, todo, progress, bar, stats, opts.dtype)
            else:
                run_visual(encoder, items, opts, todo, progress, pool, bar, stats)
        finally:
            bar.close()
        return encoder
    finally:
        if pool is not None:
            pool.close()


def describe_threads(p: dict) -> str:
    """'encoder 2 threads (auto: 0.1 of 2 cores busy with other work)' from parallel.plan."""
    how = (f"auto: {p['others_busy']:g} of {p['cores']} cores busy with other work"
           if p["source"] == "auto" else p["source"])
    return f"encoder {p['threads']} thread{'s' * (p['threads'] != 1)} ({how})"


# ------------------------------------------------------------------------------------- text
def run_text(encoder, items, todo, progress, bar, stats, dtype) -> None:
    """Encode each text unit as one batch; empty texts are failures."""
    import numpy as np

    ids = items.ids

    def batches():  # tokenizing runs ahead in a thread (the fast tokenizer releases the GIL)
        for unit in todo:
            good = [r for r in unit if (items.text[r] or "").strip()]
            empty = [r for r in unit if not (items.text[r] or "").strip()]
            tok = encoder.tokenize([items.text[r] for r in good]) if good else None
            yield good, empty, tok

    for good, empty, tok in prefetch(batches()):
        feats = np.zeros((0, encoder.dim), np.float32)
        if good:
            t = time.monotonic()
            feats = encoder.encode(tok)
            stats.encoder_s += time.monotonic() - t
            stats.frames += len(good)
        ok_ids, feats, bad_ids = check_finite(feats, [ids[r] for r in good], "text", dtype)
        fail_ids = [ids[r] for r in empty] + bad_ids
        reasons = (["empty text"] * len(empty)
                   + ["encoder returned non-finite values"] * len(bad_ids))
        progress.commit(ok_ids, feats, fail_ids, reasons)
        stats.items += len(ok_ids)
        stats.failed += len(fail_ids)
        bar.update(len(good) + len(empty))


# ------------------------------------------------------------------------------ video, image
def run_visual(encoder, items, opts, todo, progress, pool, bar, stats) -> None:
    """Decode the items' frames in the worker pool and encode them in fixed-size batches."""
    from vmr.extract.decode import DecodeTask, resolve_decoder

    paths = items.column(opts.modality)
    rows = [u[0] for u in todo]
    no_file = [r for r in rows if not paths[r]]
    bar.update(len(no_file))  # no file listed: done, not present, not a failure
    video = ()
    if opts.modality == "video":
        from vmr.extract.pool import default_decode_threads

        video = (resolve_decoder(opts.decoder), opts.keyframes, opts.decode_threads or
                 default_decode_threads(pool.n))
        stats.parallelism += f" x {video[2]} decode thread{'s' * (video[2] != 1)}"
    tasks = ((r, DecodeTask(opts.modality, paths[r], encoder.pixels, opts.fps, opts.max_frames,
                            *video))
             for r in rows if paths[r])
    batcher = _FrameBatcher(encoder, items.ids, opts, progress, bar, stats)
    B = opts.batch_size
    frame_bytes = encoder.pixels.crop * encoder.pixels.crop * 3
    ahead = pool.run(tasks, max_items=max(4 * B, 2 * pool.n + 2),
                     max_bytes=max(64 << 20, 4 * B * frame_bytes))
    for row, ok, payload in ahead:
        if ok:
            batcher.add(row, payload)
        else:
            batcher.fail(row, payload)
    batcher.finish()


class _FrameBatcher:
    """Decoded frames queued in item order and encoded in batches of exactly `batch_size` frames
    (the last one zero-padded: a fixed shape, see the module docstring). An item's vector, the
    mean of its frames' features, is committed with the batch that completes it; decode
    failures are committed with the next batch."""

    def __init__(self, encoder, ids: list[str], opts, progress, bar, stats):
        self.encoder, self.ids, self.progress, self.bar, self.stats = (encoder, ids, progress,
                                                                       bar, stats)
        self.modality, self.dtype, self.B = opts.modality, opts.dtype, opts.batch_size
        self.chunks: collections.deque = collections.deque()  # (row, frames not yet encoded)
        self.buffered = 0
        self.per_item: dict[int, list] = {}  # row -> [frames expected, feature chunks]
        self.fail_ids: list[str] = []
        self.reasons: list[str] = []

    def add(self, row: int, frames) -> None:
        """Queue an item's frames; encode every full batch."""
        self.per_item[row] = [len(frames), []]
        self.chunks.append((row, frames))
        self.buffered += len(frames)
        while self.buffered >= self.B:
            self.encode_batch()

    def fail(self, row: int, reason: str) -> None:
        """Record an item whose frames could not be decoded."""
        self.fail_ids.append(self.ids[row])
        self.reasons.append(reason)

    def finish(self) -> None:
        """Encode the frames left (a padded last batch), then commit any failures still held."""
        import numpy as np

        while self.buffered > 0:
            self.encode_batch()
        if self.fail_ids:
            self.commit([], np.zeros((0, 0), np.float32), [], [], 0)

    def _take(self) -> tuple[int, list]:
        """Up to B frames off the front of the queue: (how many, [(row, frames)])."""
        take, parts = 0, []
        while self.chunks and take < self.B:
            row, fr = self.chunks[0]
            k = min(self.B - take, len(fr))
            parts.append((row, fr[:k]))
            if k == len(fr):
                self.chunks.popleft()
            else:
                self.chunks[0] = (row, fr[k:])
            take += k
        self.buffered -= take
        return take, parts

    def encode_batch(self) -> None:
        """Encode one batch; commit the items whose frames are now all encoded."""
        import numpy as np

        take, parts = self._take()
        crop = self.encoder.pixels.crop
        batch = np.zeros((self.B, crop, crop, 3), np.uint8)  # fixed shape: see the docstring
        np.concatenate([p[1] for p in parts], out=batch[:take])
        t = time.monotonic()
        feats = self.encoder.encode(batch)[:take]
        self.stats.encoder_s += time.monotonic() - t
        self.stats.frames += take
        done_rows, at = [], 0
        for row, fr in parts:
            entry = self.per_item[row]
            entry[1].append(feats[at:at + len(fr)])
            at += len(fr)
            if sum(len(c) for c in entry[1]) == entry[0]:
                done_rows.append(row)
        vecs = [np.concatenate(self.per_item.pop(r)[1]).mean(axis=0, dtype=np.float64)
                for r in done_rows]
        vecs = (np.stack(vecs).astype(np.float32) if vecs
                else np.zeros((0, self.encoder.dim), np.float32))
        ok_ids, vecs, bad = check_finite(vecs, [self.ids[r] for r in done_rows], self.modality,
                                         self.dtype)
        self.commit(ok_ids, vecs, bad, ["encoder returned non-finite values"] * len(bad), take)

    def commit(self, ok_ids, vecs, bad_ids, bad_reasons, frames) -> None:
        """Commit vectors and failures to the progress directory; update the bar."""
        self.fail_ids.extend(bad_ids)
        self.reasons.extend(bad_reasons)
        self.progress.commit(ok_ids, vecs, self.fail_ids, self.reasons, frames=frames)
        self.stats.items += len(ok_ids)
        self.stats.failed += len(self.fail_ids)
        self.bar.update(len(ok_ids) + len(self.fail_ids))
        self.fail_ids.clear()
        self.reasons.clear()
        elapsed = max(self.bar.format_dict.get("elapsed", 0) or 0, 1e-6)
        self.bar.set_postfix_str(f"{self.stats.frames / elapsed:.1f} frames/s", refresh=False)
