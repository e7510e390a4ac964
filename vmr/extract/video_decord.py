"""Video decoding with decord (Linux x86-64 wheels only), for the decode workers: the decode
path vmr used before PyAV, kept as `--decoder decord`. decord reads every packet's timestamp at
open; `get_batch` then seeks to the keyframe before a wanted frame only when it lies in another
group of pictures, else decodes on (decord's own rule, close to `sampling.plan_reads`), and
converts only the wanted frames. It cannot skip non-reference frames. decord scales in its
filter graph while converting: the frames come out at the encoder's resize size.

Imports only numpy, cv2 and decord (never torch).
"""

from __future__ import annotations

from vmr.extract.pixels import (DecodeFailure, PixelSpec, center_crop, resize_frames,
                                short_reason, target_size)


def decode(path: str, spec: PixelSpec, fps: float, max_frames: int, keyframes: bool = False,
           threads: int = 1):
    """(sampled frames uint8 [k, crop, crop, 3], their frame indices)."""
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(path)  # only the container header: the frame size, no decoding
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    frames = None
    if w > 0 and h > 0:  # decode straight at (about) the encoder's input size ...
        try:
            frames, idx = _read(path, fps, max_frames, target_size(w, h, spec.resize),
                                keyframes, threads)
        except DecodeFailure:
            frames = None  # ... which decord cannot do for some sizes: retry at full size
    if frames is None:
        frames, idx = _read(path, fps, max_frames, None, keyframes, threads)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise DecodeFailure("decoder returned no frames")
    if min(frames.shape[1:3]) != spec.resize or max(frames.shape[1:3]) < spec.crop:
        return np.ascontiguousarray(resize_frames(frames, spec)), idx
    return np.ascontiguousarray(center_crop(frames, spec.crop)), idx


def _read(path: str, fps: float, max_frames: int, size: tuple[int, int] | None,
          keyframes: bool, threads: int):
    """Open with decord (at `size` = (width, height) if given) and read the sampled frames."""
    import numpy as np
    from decord import DECORDError, VideoReader, cpu

    from vmr.extract.sampling import frame_times, nearest_keyframes, sample_frame_indices

    threads = max(1, int(threads))
    try:
        if size:
            vr = VideoReader(path, ctx=cpu(0), width=size[0], height=size[1], num_threads=threads)
        else:
            vr = VideoReader(path, ctx=cpu(0), num_threads=threads)
    except (RuntimeError, DECORDError) as e:
        raise DecodeFailure(f"cannot open video: {short_reason(e)}") from None
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
        if keyframes:
            keys = [int(k) for k in vr.get_key_indices()]
            idx = nearest_keyframes(times, duration, keys, fps, max_frames)
        else:
            idx = sample_frame_indices(times, duration, fps, max_frames)
        return vr.get_batch(idx).asnumpy(), idx
    except (RuntimeError, DECORDError) as e:
        raise DecodeFailure(f"decode error: {short_reason(e)}") from None
