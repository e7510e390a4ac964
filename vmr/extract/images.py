"""Decoding one image with bounded memory, for the decode workers.

A decoded image costs width x height x bytes per pixel before it can be resized: an 8000 x 8000
PNG took 514 MB of a decode worker (the RGB image, then a copy made by converting it to RGB).
Here:

- JPEG is decoded at a reduced scale (`Image.draft`: 1/2, 1/4 or 1/8, the smallest that keeps
  the shorter side >= the encoder's resize size), so an 8000 x 8000 JPEG costs about 10 MB;
- any image still larger than `max_pixels()` pixels after that (default 25 million, e.g.
  5000 x 5000; environment variable VMR_MAX_IMAGE_PIXELS) is refused from its header, before
  anything is decoded: the item becomes a recorded failure `image too large: ...` (Pillow's own
  MAX_IMAGE_PIXELS check only refuses above 179 million pixels);
- an RGB image is resized as decoded, without the copy a conversion to RGB used to make.

Peak memory per worker is therefore at most about max_pixels x (bytes per pixel of the file's
mode, plus 3 when it must be converted to RGB): 75 MB for RGB, 175 MB for RGBA or CMYK at the
default. Images within the limit give exactly the pixels they always gave.
"""

from __future__ import annotations

import os

DEFAULT_MAX_PIXELS = 25_000_000


class ImageFailure(Exception):
    """The image cannot be used; the message is the reason (callers pass their own class)."""


def max_pixels() -> int:
    try:
        return max(1, int(os.environ.get("VMR_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def _target_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side equal to `short`, aspect ratio kept."""
    if w <= h:
        return short, max(short, round(h * short / w))
    return max(short, round(w * short / h)), short


def check_file(path: str | None, failure: type = ImageFailure) -> str:
    """The checks every media file gets before a decoder sees it; raises `failure`."""
    if not path:
        raise failure("no file given")
    if not os.path.exists(path):
        raise failure(f"missing file {path}")
    if os.path.isdir(path):
        raise failure(f"{path} is a directory")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise failure(f"empty file {path}")
    return path


def load_image(path: str, resize: int, failure: type = ImageFailure, limit: int | None = None):
    """An image as uint8 RGB [1, h, w, 3] with its shorter side resized to `resize` (bicubic).
    Raises `failure` (the decode workers pass vmr.extract.decode.DecodeFailure; this module
    does not import decode.py, which calls it) with the reason when it cannot be used."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    limit = limit or max_pixels()
    check_file(path, failure)
    try:
        with Image.open(path) as im:  # reads the header only
            full = im.size
            im.draft("RGB", (resize, resize))  # JPEG: decode at a reduced scale
            w, h = im.size
            if w * h > limit:
                raise failure(f"image too large: {full[0]} x {full[1]} = "
                              f"{full[0] * full[1] / 1e6:.1f} million pixels (limit "
                              f"{limit / 1e6:.1f} million, VMR_MAX_IMAGE_PIXELS); downscale it")
            im.load()
            if im.mode != "RGB":  # (converting an RGB image would only copy it)
                im = im.convert("RGB")
            tw, th = _target_size(im.width, im.height, resize)
            im = im.resize((tw, th), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)[None]
    except failure:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        raise failure(f"cannot decode image: {text[:160]}") from None


def decode_image(path: str, spec, failure: type = ImageFailure):
    """For vmr.extract.decode.decode_image: one image as uint8 [1, crop, crop, 3]."""
    import numpy as np

    arr = load_image(path, spec.resize, failure)
    h, w = arr.shape[1:3]
    top, left = max(0, (h - spec.crop) // 2), max(0, (w - spec.crop) // 2)
    return np.ascontiguousarray(arr[:, top:top + spec.crop, left:left + spec.crop])
