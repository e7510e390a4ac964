"""Which frames of a video to encode, and how to reach them (pure arithmetic, no decoding).

- `sample_frame_indices`: the sampling rule (frames at --fps, at most --max-frames, evenly
  spread), the same for every decoder and decode mode except --keyframes.
- `nearest_keyframes`: the --keyframes approximation: the keyframe nearest each sample moment.
- `plan_reads`: the cheapest way to decode a set of frames given the keyframe positions, by the
  cost rule documented in docs/EXTRACT.md ("Decode modes and their costs").
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

# A seek (demuxer jump + decoder flush + re-filling the reorder delay) is taken to cost as much
# as decoding this many frames (an estimate; the plans it gives on the benchmark clips are the
# obvious ones: docs/EXTRACT.md, "Decode modes and their costs").
SEEK_COST_FRAMES = 4


def frame_times(n_frames: int, native_fps: float) -> tuple[list[float], float]:
    """Start time of every frame and the duration, for a constant frame rate."""
    return [i / native_fps for i in range(n_frames)], n_frames / native_fps


def _timing_ok(rel: Sequence[float], duration: float) -> bool:
    return (math.isfinite(duration) and duration > 0
            and all(math.isfinite(t) for t in rel) and all(b >= a for a, b in zip(rel, rel[1:])))


def sample_times(duration: float, fps: float = 1.0, max_frames: int = 32) -> list[float]:
    """The sample moments (seconds from the first frame): every 1/fps seconds from t = 0, at
    least one; when that is more than `max_frames`, `max_frames` moments evenly spread over the
    whole video, t_j = j * duration / max_frames."""
    if fps <= 0 or max_frames < 1:
        raise ValueError("fps must be > 0 and max_frames >= 1")
    count = max(1, math.ceil(duration * fps - 1e-6))
    if count <= max_frames:
        return [k / fps for k in range(count)]
    return [j * duration / max_frames for j in range(max_frames)]


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
    if not _timing_ok(rel, duration):  # no trustworthy timing: spread by frame index
        k = min(n, max_frames)
        return sorted({(j * n) // k for j in range(k)})
    out = []
    lo = 0
    for t in sample_times(duration, fps, max_frames):  # the last frame starting at or before t
        while lo + 1 < n and rel[lo + 1] <= t + 1e-9:
            lo += 1
        out.append(lo)
    return sorted(set(out))


def nearest_keyframes(times: Sequence[float], duration: float, keyframes: Sequence[int],
                      fps: float = 1.0, max_frames: int = 32) -> list[int]:
    """--keyframes: for each sample moment of the rule above, the keyframe whose start time is
    nearest (the earlier one on a tie); each keyframe kept once, sorted. `keyframes` are frame
    indices (display order). Without usable timing, nearest by frame index. A video without
    keyframe information gives its first frame."""
    n = len(times)
    keys = sorted({k for k in keyframes if 0 <= k < n})
    if n == 0:
        return []
    if not keys:
        return [0]
    t0 = float(times[0])
    rel = [float(t) - t0 for t in times]
    if _timing_ok(rel, duration):
        pos = [rel[k] for k in keys]
        targets = sample_times(duration, fps, max_frames)
    else:
        pos = [float(k) for k in keys]
        targets = [float(i) for i in sample_frame_indices(times, 0.0, fps, max_frames)]
    out = set()
    for t in targets:
        j = bisect_right(pos, t + 1e-9)  # pos[j - 1] <= t < pos[j]
        if j == 0:
            out.add(keys[0])
        elif j == len(keys) or t - pos[j - 1] <= pos[j] - t:
            out.add(keys[j - 1])
        else:
            out.add(keys[j])
    return sorted(out)


def keyframe_at_or_before(keyframes: Sequence[int], i: int) -> int:
    """The last keyframe index <= i (0 when none is: decoding then starts at the first frame)."""
    j = bisect_right(keyframes, i)
    return keyframes[j - 1] if j else 0


def plan_reads(wanted: Sequence[int], keyframes: Sequence[int],
               seek_cost: float = SEEK_COST_FRAMES) -> list[tuple[int | None, list[int]]]:
    """How to decode the (sorted, distinct) frame indices `wanted`: a list of runs
    (seek_to, frames). A run with seek_to = None continues decoding from where the previous one
    stopped (the first run: from the start of the file); otherwise it seeks to keyframe
    `seek_to` first. Within a run frames are decoded in order up to its last wanted frame.

    Cost rule, per gap: after decoding frame p the decoder stands at p + 1. Reaching the next
    wanted frame w costs w - p frames by decoding on, or seek_cost + (w - k + 1) frames by
    seeking to k, the last keyframe <= w. Seek only when that is cheaper (k - p - 1 > seek_cost).
    Either way the decoder ends at w + 1, so choosing per gap is optimal for the whole video: the
    plan never decodes more than one sequential pass, nor more than seeking to every sample.
    """
    keys = sorted(set(keyframes))
    runs: list[tuple[int | None, list[int]]] = []
    pos = 0  # next frame the decoder would produce
    for w in wanted:
        k = keyframe_at_or_before(keys, w)
        if k > pos and (k - pos) > seek_cost:
            runs.append((k, [w]))
        elif runs:
            runs[-1][1].append(w)
        else:
            runs.append((None, [w]))
        pos = w + 1
    return runs


def plan_cost(runs: list[tuple[int | None, list[int]]], seek_cost: float = SEEK_COST_FRAMES
              ) -> float:
    """Frames decoded by a plan (a seek counted as seek_cost frames)."""
    cost, pos = 0.0, 0
    for seek_to, frames in runs:
        if seek_to is not None:
            cost += seek_cost
            pos = seek_to
        cost += frames[-1] + 1 - pos
        pos = frames[-1] + 1
    return cost
