"""Reading one item's pixels: a video's sampled frames or an image, resized (shorter side) and
center-cropped to the encoder's input size, as uint8 RGB. Runs inside decode worker processes
(see pool.py), so it imports only numpy, av / decord, cv2 and PIL -- never torch.

Videos go through one interface, `decode_video`, to either backend: video_av.py (PyAV, the
default where installed, every platform) or video_decord.py (decord, Linux x86-64). Both apply
the same sampling rule (sampling.py) to the same frame timestamps; docs/EXTRACT.md, "Decode
modes", has the modes and what each costs."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class PixelSpec:
    """How an encoder wants its pixels: resize the shorter side to `resize`, center-crop `crop`."""

    resize: int
    crop: int


@dataclass(frozen=True)
class DecodeTask:
    kind: str  # "video" or "image"
    path: str
    spec: PixelSpec
    fps: float = 1.0
    max_frames: int = 32
    decoder: str = "auto"  # video: "pyav", "decord" or "auto" (see resolve_decoder)
    keyframes: bool = False  # video: the keyframe nearest each sample moment (approximation)
    threads: int = 1  # video: decoder threads in this worker


class DecodeFailure(Exception):
    """The item's file cannot be used; the message is the reason recorded in the cache."""


def _short(e: BaseException) -> str:
    """A one-line reason from a (possibly multi-line, native) error message."""
    import re

    text = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip()) or type(e).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] ", "", text)  # decord's "[hh:mm:ss] " stamps
    text = re.sub(r"\S+\.(cc|h|cpp):\d+: ", "", text)  # ... and "file.cc:123: " locations
    text = text.replace("Stack trace returned", "").strip()
    return text[:160]


def _target_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side equal to `short`, aspect ratio kept."""
    if w <= h:
        return short, max(short, round(h * short / w))
    return max(short, round(w * short / h)), short


def _center_crop(frames, size: int):
    """frames [k, H, W, 3] -> [k, size, size, 3]."""
    h, w = frames.shape[1:3]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return frames[:, top:top + size, left:left + size]


def _resize_frames(frames, spec: PixelSpec):
    import cv2
    import numpy as np

    h, w = frames.shape[1:3]
    tw, th = _target_size(w, h, spec.resize)
    out = np.stack([cv2.resize(f, (tw, th), interpolation=cv2.INTER_AREA) for f in frames])
    return _center_crop(out, spec.crop)


def _check_file(path: str | None) -> str:
    if not path:
        raise DecodeFailure("no file given")
    if not os.path.exists(path):
        raise DecodeFailure(f"missing file {path}")
    if os.path.isdir(path):
        raise DecodeFailure(f"{path} is a directory")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise DecodeFailure(f"empty file {path}")
    return path


DECODERS = ("auto", "pyav", "decord")


@functools.lru_cache(maxsize=None)
def resolve_decoder(name: str = "auto") -> str:
    """"pyav" or "decord": `name` itself when that package is installed; "auto" takes PyAV
    (faster: it skips frames nothing refers to), else decord. Cheap: nothing is imported."""
    from importlib.util import find_spec

    from vmr.errors import VmrError

    have = {"pyav": find_spec("av") is not None, "decord": find_spec("decord") is not None}
    if name == "auto":
        for d in ("pyav", "decord"):
            if have[d]:
                return d
        raise VmrError("no video decoder is installed: pip install av")
    if name not in have:
        raise VmrError(f"--decoder {name!r}: expected one of {', '.join(DECODERS)}")
    if not have[name]:
        pkg = "av" if name == "pyav" else "decord"
        where = "" if name == "pyav" else " (wheels exist for Linux x86-64 only)"
        raise VmrError(f"--decoder {name}: the package {pkg!r} is not installed{where}; "
                       f"pip install {pkg}, or use --decoder auto")
    return name


def decode_video(path: str, spec: PixelSpec, fps: float, max_frames: int, decoder: str = "auto",
                 keyframes: bool = False, threads: int = 1, with_indices: bool = False):
    """Sampled frames of one video as uint8 [k, crop, crop, 3] (see sampling.py); with
    `with_indices` also the frame indices they are (display order)."""
    _check_file(path)
    if resolve_decoder(decoder) == "pyav":
        from vmr.extract import video_av as backend
    else:
        from vmr.extract import video_decord as backend
    frames, idx = backend.decode(path, spec, fps, max_frames, keyframes, threads)
    return (frames, idx) if with_indices else frames


def decode_image(path: str, spec: PixelSpec):
    """One image as uint8 [1, crop, crop, 3]."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    _check_file(path)
    try:
        with Image.open(path) as im:
            im.draft("RGB", (spec.resize, spec.resize))  # JPEG: decode at a reduced scale
            im = im.convert("RGB")
            tw, th = _target_size(im.width, im.height, spec.resize)
            im = im.resize((tw, th), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8)[None]
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DecodeFailure(f"cannot decode image: {_short(e)}") from None
    return np.ascontiguousarray(_center_crop(arr, spec.crop))


def run_task(task: DecodeTask):
    """Decode one task; raises DecodeFailure with the reason when the file cannot be used."""
    if task.kind == "video":
        return decode_video(task.path, task.spec, task.fps, task.max_frames, task.decoder,
                            task.keyframes, task.threads)
    if task.kind == "image":
        return decode_image(task.path, task.spec)
    raise ValueError(f"unknown decode task kind {task.kind!r}")


# the helpers the video backends share
target_size, center_crop, resize_frames, short_reason = (_target_size, _center_crop,
                                                         _resize_frames, _short)
