"""Reading one item's pixels: a video's sampled frames or an image, resized (shorter side) and
center-cropped to the encoder's input size, as uint8 RGB. Runs inside decode worker processes
(see pool.py), so it imports only numpy, av / decord, cv2 and PIL -- never torch.

Videos go through one interface, `decode_video`, to either backend: video_av.py (PyAV, the
default where installed, every platform) or video_decord.py (decord, Linux x86-64). Both apply
the same sampling rule (sampling.py) to the same frame timestamps; docs/EXTRACT.md, "Decode
modes", has the modes and what each costs."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vmr.extract.pixels import (DecodeFailure, PixelSpec, center_crop, resize_frames,  # noqa: F401
                                short_reason, target_size)

# the names decode_image uses (the helpers live in pixels.py, shared with the video backends)
_short, _target_size, _center_crop = short_reason, target_size, center_crop


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


def _check_file(path: str | None) -> str:
    from vmr.extract.images import check_file

    return check_file(path, DecodeFailure)


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
    """One image as uint8 [1, crop, crop, 3], bounded in pixels before it is resized
    (vmr/extract/images.py: JPEGs decode at a reduced scale, oversized images are refused
    from their header and recorded as the item's failure)."""
    from vmr.extract.images import decode_image as bounded

    _check_file(path)
    return bounded(path, spec, DecodeFailure)


def run_task(task: DecodeTask):
    """Decode one task; raises DecodeFailure with the reason when the file cannot be used."""
    if task.kind == "video":
        return decode_video(task.path, task.spec, task.fps, task.max_frames, task.decoder,
                            task.keyframes, task.threads)
    if task.kind == "image":
        return decode_image(task.path, task.spec)
    raise ValueError(f"unknown decode task kind {task.kind!r}")
