"""Reading one item's pixels: a video's sampled frames or an image, resized (shorter side) and
center-cropped to the encoder's input size, as uint8 RGB. Runs inside decode worker processes
(see pool.py), so it imports only numpy, decord, cv2 and PIL -- never torch."""

from __future__ import annotations

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


def decode_video(path: str, spec: PixelSpec, fps: float, max_frames: int):
    """Sampled frames of one video as uint8 [k, crop, crop, 3] (see sampling.py)."""
    import cv2
    import numpy as np

    _check_file(path)
    cap = cv2.VideoCapture(path)  # only the container header: the frame size, no decoding
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    frames = None
    if w > 0 and h > 0:  # decode straight at (about) the encoder's input size ...
        try:
            frames = _read_frames(path, fps, max_frames, _target_size(w, h, spec.resize))
        except DecodeFailure:
            frames = None  # ... which decord cannot do for some sizes: retry at full size
    if frames is None:
        frames = _read_frames(path, fps, max_frames, None)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise DecodeFailure("decoder returned no frames")
    if min(frames.shape[1:3]) != spec.resize or max(frames.shape[1:3]) < spec.crop:
        return np.ascontiguousarray(_resize_frames(frames, spec))
    return np.ascontiguousarray(_center_crop(frames, spec.crop))


def _read_frames(path: str, fps: float, max_frames: int, size: tuple[int, int] | None):
    """Open with decord (at `size` = (width, height) if given) and read the sampled frames."""
    import numpy as np
    from decord import DECORDError, VideoReader, cpu

    from vmr.extract.sampling import frame_times, sample_frame_indices

    try:
        if size:
            vr = VideoReader(path, ctx=cpu(0), width=size[0], height=size[1], num_threads=1)
        else:
            vr = VideoReader(path, ctx=cpu(0), num_threads=1)
    except (RuntimeError, DECORDError) as e:
        raise DecodeFailure(f"cannot open video: {_short(e)}") from None
    try:
        n = len(vr)
        if n == 0:
            raise DecodeFailure("video has no frames")
        times = None
        try:
            ts = vr.get_frame_timestamp(np.arange(n))
            times, duration = ts[:, 0].tolist(), float(ts[-1, 1] - ts[0, 0])
        except (RuntimeError, DECORDError, IndexError):
            pass
        if times is None:
            native = float(vr.get_avg_fps() or 0)
            times, duration = frame_times(n, native) if native > 0 else (list(range(n)), 0.0)
        idx = sample_frame_indices(times, duration, fps, max_frames)
        return vr.get_batch(idx).asnumpy()
    except (RuntimeError, DECORDError) as e:
        raise DecodeFailure(f"decode error: {_short(e)}") from None


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
        return decode_video(task.path, task.spec, task.fps, task.max_frames)
    if task.kind == "image":
        return decode_image(task.path, task.spec)
    raise ValueError(f"unknown decode task kind {task.kind!r}")
