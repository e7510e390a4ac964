"""What the decoders share: the encoder's pixel spec, the failure type, resizing and cropping
arithmetic (imports nothing from vmr, so every decoder backend can use it without cycles)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PixelSpec:
    """How an encoder wants its pixels: resize the shorter side to `resize`, center-crop `crop`."""

    resize: int
    crop: int


class DecodeFailure(Exception):
    """The item's file cannot be used; the message is the reason recorded in the cache."""


def short_reason(e: BaseException) -> str:
    """A one-line reason from a (possibly multi-line, native) error message."""
    import re

    text = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip()) or type(e).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] ", "", text)  # decord's "[hh:mm:ss] " stamps
    text = re.sub(r"\S+\.(cc|h|cpp):\d+: ", "", text)  # ... and "file.cc:123: " locations
    text = text.replace("Stack trace returned", "").strip()
    return text[:160]


def target_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side equal to `short`, aspect ratio kept."""
    if w <= h:
        return short, max(short, round(h * short / w))
    return max(short, round(w * short / h)), short


def center_crop(frames, size: int):
    """frames [k, H, W, 3] -> [k, size, size, 3]."""
    h, w = frames.shape[1:3]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return frames[:, top:top + size, left:left + size]


def resize_frames(frames, spec: PixelSpec):
    import cv2
    import numpy as np

    h, w = frames.shape[1:3]
    tw, th = target_size(w, h, spec.resize)
    out = np.stack([cv2.resize(f, (tw, th), interpolation=cv2.INTER_AREA) for f in frames])
    return center_crop(out, spec.crop)
