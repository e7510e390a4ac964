"""What runs on the Ray workers for `vmr extract --engine ray` (ray_engine.py): the decode task
and the encoder actor. Imported by Ray on every node; nothing here imports ray at module level."""

from __future__ import annotations

import os
import time


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def decode_group(tasks: list, timeout: float):
    """Ray task: decode [(row, DecodeTask)] -> (meta, frames): meta[j] = (row, True, frames)
    or (row, False, reason); frames[j] the uint8 pixels (None for a failure). A watchdog ends
    this worker when one item takes longer than `timeout` (a hung native decoder)."""
    import threading

    import cv2

    from vmr.extract.pool import decode_one

    cv2.setNumThreads(1)
    meta, frames = [], []
    for row, task in tasks:
        dog = threading.Timer(timeout, os._exit, args=(75,))
        dog.daemon = True
        dog.start()
        try:
            ok, payload = decode_one(task)
        finally:
            dog.cancel()
        if ok and len(payload) == 0:
            ok, payload = False, "no frames decoded"
        meta.append((row, True, len(payload)) if ok else (row, False, payload))
        frames.append(payload if ok else None)
    return meta, frames


class EncoderActor:
    """Ray actor: one loaded encoder. Calls are stateless (a retried call gives the same
    result), so Ray may restart the actor and replay them."""

    def __init__(self, ident, pooling, device: str, batch_size: int, warm: bool):
        import torch

        from vmr.extract.encoders import load_encoder, resolve_device

        self.device = resolve_device(device)
        if self.device == "cpu":  # Ray sets 1 thread per reserved CPU; torch's default is all
            torch.set_num_threads(_cores())
        self.enc = load_encoder(ident, pooling=pooling, device=self.device)
        if warm:
            self.enc.warmup(batch_size)

    def info(self) -> dict:
        import ray

        from vmr._version import __version__

        return {"dim": self.enc.dim, "pixels": getattr(self.enc, "pixels", None),
                "device": self.device, "vmr": __version__,
                "node": ray.get_runtime_context().get_node_id()}

    def encode_frames(self, spec: list, batch_size: int, *groups):
        """spec [(group, index, first, stop)]: frames of decoded items, in batch order."""
        import numpy as np

        parts = [groups[g][i][a:b] for g, i, a, b in spec]
        take = sum(len(p) for p in parts)
        crop = self.enc.pixels.crop
        batch = np.zeros((batch_size, crop, crop, 3), np.uint8)  # fixed shape, as locally
        np.concatenate(parts, out=batch[:take])
        t = time.monotonic()
        feats = self.enc.encode(batch)[:take]
        return feats, time.monotonic() - t

    def encode_texts(self, texts: list[str]):
        tok = self.enc.tokenize(texts)
        t = time.monotonic()
        feats = self.enc.encode(tok)
        return feats, time.monotonic() - t
