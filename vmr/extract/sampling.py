"""Which frames of a video to encode (pure arithmetic, no decoding)."""

from __future__ import annotations

import math
from typing import Sequence


def frame_times(n_frames: int, native_fps: float) -> tuple[list[float], float]:
    """Start time of every frame and the duration, for a constant frame rate."""
    return [i / native_fps for i in range(n_frames)], n_frames / native_fps


def sample_frame_indices(times: Sequence[float], duration: float, fps: float = 1.0,
                         max_frames: int = 32) -> list[int]:
    """Indices of the frames to encode.

    `times` are the start times (seconds, non-decreasing) of the video's frames, `duration` its
    length. One frame is taken every 1/fps seconds from t = 0 -- the frame on screen at that
    moment -- so a video shorter than 1/fps gives exactly one frame. When that would be more than
    `max_frames`, `max_frames` moments evenly spread over the whole video are used instead
    (t_j = j * duration / max_frames). Works for variable frame rates (the times need not be
    evenly spaced). Repeated frames (fps above the video's own rate) are kept once; the result
    is sorted. Without usable timing (no duration) up to max_frames frames are spread by index.
    """
    n = len(times)
    if n == 0:
        return []
    if fps <= 0 or max_frames < 1:
        raise ValueError("fps must be > 0 and max_frames >= 1")
    t0 = float(times[0])
    rel = [float(t) - t0 for t in times]
    ok = (math.isfinite(duration) and duration > 0
          and all(math.isfinite(t) for t in rel) and all(b >= a for a, b in zip(rel, rel[1:])))
    if not ok:  # no trustworthy timing: spread by frame index
        k = min(n, max_frames)
        return sorted({(j * n) // k for j in range(k)})
    count = max(1, math.ceil(duration * fps - 1e-6))
    if count <= max_frames:
        targets = [k / fps for k in range(count)]
    else:
        targets = [j * duration / max_frames for j in range(max_frames)]
    out = []
    lo = 0
    for t in targets:  # the last frame starting at or before t (targets are increasing)
        while lo + 1 < n and rel[lo + 1] <= t + 1e-9:
            lo += 1
        out.append(lo)
    return sorted(set(out))
