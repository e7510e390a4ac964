"""Media and cache builders for the extraction and cache tests: hand-written dataset directories
(per docs/DESIGN.md), generated videos and images, a tiny open_clip model with seeded random
weights, and a reader of one cache group straight from HDF5."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from helpers import ENV, PY, REPO  # noqa: F401  (PY and REPO are used by the tests)

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}


def make_video(path, n_frames: int = 12, fps: float = 4.0, size=(64, 48), seed: int = 0) -> str:
    """An mp4v clip whose frames differ (a moving square on a seeded background colour)."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 256, 3)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(n_frames):
        f = np.empty((h, w, 3), np.uint8)
        f[:] = bg
        x = (i * 5) % max(1, w - 12)
        f[10:22, x:x + 12] = 255 - bg
        vw.write(f)
    vw.release()
    return str(path)


def make_image(path, size=(80, 60), seed: int = 0) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(str(path))
    return str(path)


def write_dataset(root, ids, text=None, image=None, video=None, media_root=None) -> str:
    """A dataset directory as `vmr prepare` writes it (items, interactions, dataset.json);
    the recorded media root is `media_root`, else a folder holding the dataset and its media."""
    import os

    import polars as pl

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    none = [None] * n
    pl.DataFrame({"item": list(ids), "text": text or none, "title": text or none,
                  "image": image or none, "video": video or none},
                 schema={c: pl.Utf8 for c in ("item", "text", "title", "image", "video")}
                 ).write_parquet(root / "items.parquet")
    users = [f"u{k}" for k in range(3) for _ in range(n)]
    pl.DataFrame({"user": users, "item": list(ids) * 3, "time": [float(t) for t in range(3 * n)],
                  "split": ["train"] * (3 * n)}).write_parquet(root / "interactions.parquet")
    if media_root is None:
        media = [str(root.parent)] + [os.path.dirname(os.path.realpath(p))
                                      for p in (image or []) + (video or []) if p]
        media_root = os.path.commonpath([os.path.realpath(m) for m in media])
    (root / "dataset.json").write_text(json.dumps({"format": 1, "users": 3, "items": n,
                                                   "interactions": 3 * n,
                                                   "media_root": str(media_root)}))
    return str(root)


def tiny_open_clip(tmp, fmt: str = "pt") -> tuple[str, str]:
    """A tiny open_clip config (JSON) and a checkpoint of seeded random weights for it."""
    import open_clip
    import torch

    tmp = Path(tmp)
    cfg = tmp / "vmr-tiny-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model("vmr-tiny-clip", pretrained=None)
    sd = model.state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        ckpt = tmp / "tiny.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt))
    else:
        ckpt = tmp / "tiny.pt"
        torch.save(sd, str(ckpt))
    return str(cfg), str(ckpt)


def vmr(*args, check: bool = True, env=None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess."""
    e = dict(ENV, **(env or {}))
    p = subprocess.run([PY, "-m", "vmr", *map(str, args)], capture_output=True, text=True,
                       env=e, cwd=str(REPO), **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"vmr {' '.join(map(str, args))} failed ({p.returncode}):\n"
                             f"{p.stdout}\n{p.stderr}")
    return p


def read_group(path, modality):
    """(item ids, features, present, done, failures, attrs) straight from the HDF5 file."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f[modality]
        return ([s for s in f["item_ids"].asstr()[...]], g["features"][...], g["present"][...],
                g["done"][...], list(zip(g["failure_ids"].asstr()[...],
                                         g["failure_reasons"].asstr()[...])), dict(g.attrs))
