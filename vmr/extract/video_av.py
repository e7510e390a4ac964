"""Video decoding with PyAV (FFmpeg's libraries, wheels for every platform), for the decode
workers. Same frames as the decord backend (the sampling rule in sampling.py applied to the
same frame timestamps), decoded with less work:

1. Index: one demux pass over the stream's packets (no decoding) gives every frame's
   presentation timestamp and the keyframe positions, with the times computed as decord does
   (so both backends pick the same frame indices).
2. Plan: `sampling.plan_reads` chooses, gap by gap, between decoding on and seeking to the
   keyframe before the next wanted frame, whichever decodes fewer frames.
3. Decode: for H.264 / HEVC, packets of frames that are neither wanted nor used as a reference
   by other frames are not decoded at all (the decoder's skip_frame = NONREF, set per packet);
   reference frames are decoded in full, so the wanted frames come out bit-identical to a full
   decode. Only wanted frames are converted: straight from the decoder's YUV to RGB at the
   encoder's resize size in one swscale call (bilinear, like decord's scale filter).

--keyframes: the wanted frames are the keyframes nearest each sample moment, decoded with
skip_frame = NONKEY (nothing but keyframes is decoded).

Imports only numpy and av (never torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from vmr.extract.pixels import DecodeFailure, PixelSpec, center_crop, short_reason, target_size
from vmr.extract.sampling import (frame_times, nearest_keyframes, plan_reads,
                                  sample_frame_indices)

# Codecs whose FFmpeg decoder honours skip_frame = NONREF per packet (nal_ref_idc / NAL type).
SKIP_NONREF = {"h264", "hevc"}
# --keyframes decodes on (demuxing only: every other frame is skipped) unless a jump is longer.
KEYFRAME_SEEK_COST = 64


@dataclass
class StreamIndex:
    pts: list[int]  # presentation timestamps in display order
    times: list[float]  # frame start times (s), as decord computes them
    duration: float
    keyframes: list[int]  # display-order indices of keyframe packets
    timed: bool  # False: the packets carry no timestamps (frames are counted instead)


def _index(container, stream) -> StreamIndex:
    import numpy as np

    rows, untimed = [], 0
    for p in container.demux(stream):
        if p.size == 0:  # the end-of-stream marker
            continue
        if p.pts is None:
            untimed += 1
            continue
        rows.append((p.pts, p.duration or 0, p.is_keyframe))
    if untimed and not rows:  # e.g. a raw elementary stream: count frames, assume the rate
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        times, duration = frame_times(untimed, rate) if rate > 0 else (list(range(untimed)), 0.0)
        return StreamIndex(list(range(untimed)), times, duration, [0], timed=False)
    rows.sort(key=lambda r: r[0])
    start = stream.start_time or 0
    tb = stream.time_base
    factor = float(tb.numerator) / float(tb.denominator) if tb else 0.0
    # decord stores (pts - start) * time_base as float32; do the same, for the same indices
    begin = np.array([(r[0] - start) * factor for r in rows], np.float32)
    end = np.float32((rows[-1][0] + rows[-1][1] - start) * factor) if rows else np.float32(0)
    duration = float(end - begin[0]) if rows else 0.0
    return StreamIndex([r[0] for r in rows], begin.tolist(), duration,
                       [i for i, r in enumerate(rows) if r[2]], timed=True)


def _rgb(frame, spec: PixelSpec):
    """One decoded frame -> uint8 RGB with the shorter side `spec.resize` (display rotation
    applied, as decord does), in one scale + convert step."""
    import numpy as np

    clockwise = (-int(getattr(frame, "rotation", 0) or 0)) % 360
    w, h = frame.width, frame.height
    if clockwise in (90, 270):
        tw, th = target_size(h, w, spec.resize)
        out = frame.reformat(width=th, height=tw, format="rgb24", interpolation="BILINEAR")
    else:
        tw, th = target_size(w, h, spec.resize)
        out = frame.reformat(width=tw, height=th, format="rgb24", interpolation="BILINEAR")
    arr = out.to_ndarray()
    if clockwise == 90:
        arr = np.rot90(arr, k=-1)
    elif clockwise == 180:
        arr = arr[::-1, ::-1]
    elif clockwise == 270:
        arr = np.rot90(arr, k=1)
    return np.ascontiguousarray(arr)


class _Unseekable(Exception):
    """The container cannot seek (a raw stream, a pipe): decode from a fresh start instead."""


def _decode_runs(container, stream, index: StreamIndex, runs, spec: PixelSpec, skip: str | None,
                 got: dict, at_start: bool = False) -> None:
    """Decode the planned runs; wanted frames (matched by timestamp) go into `got`."""
    import av

    cc = stream.codec_context
    if skip is None:
        cc.skip_frame = "DEFAULT"
    for n, (seek_to, frames) in enumerate(runs):
        if seek_to is not None or (n == 0 and not at_start):
            target = index.pts[seek_to if seek_to is not None else 0]
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
            except (av.error.FFmpegError, OSError):
                raise _Unseekable() from None
        need = {index.pts[i]: i for i in frames if i not in got}
        unsent = set(need)  # wanted frames whose packet the decoder has not had yet
        state = None
        for packet in container.demux(stream):
            if skip is not None:  # decode a packet fully only when its frame is wanted
                mode = "DEFAULT" if packet.pts in need else skip
                if mode != state:
                    cc.skip_frame = state = mode
            unsent.discard(packet.pts)
            # every frame a wanted one refers to precedes it in decoding order: once the last
            # wanted packet is in, drain the decoder's reordering delay instead of reading on
            _take(cc.decode(packet) + (cc.decode(None) if not unsent else []), need, got, spec)
            if not unsent or not need:
                break


def _take(frames, need: dict, got: dict, spec: PixelSpec) -> None:
    for frame in frames:
        i = need.pop(frame.pts, None)
        if i is not None:
            got[i] = _rgb(frame, spec)


def _decode_counted(container, stream, wanted: list[int], spec: PixelSpec) -> dict:
    """No timestamps (a freshly opened container): count frames in output order."""
    want, got = set(wanted), {}
    for i, frame in enumerate(container.decode(stream)):
        if i in want:
            got[i] = _rgb(frame, spec)
            if len(got) == len(want):
                break
    return got


def _open(path: str, threads: int, probe: bool = True):
    """Open the container. probe=False: FFmpeg's stream probing does not decode frames (it
    usually decodes the first keyframe to learn the reordering delay, among others); only for
    --keyframes, where every keyframe is decoded and drained on its own, so that delay does
    not matter."""
    import av

    try:
        container = None
        if not probe:
            try:
                container = av.open(path, metadata_errors="ignore", options={"skip_frame": "all"})
            except (av.error.FFmpegError, OSError, UnicodeError, ValueError):
                container = None  # try again the usual way, for the usual error
        if container is None:
            container = av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeError, ValueError) as e:
        raise DecodeFailure(f"cannot open video: {short_reason(e)}") from None
    if not container.streams.video or container.streams.video[0].codec_context is None:
        container.close()
        raise DecodeFailure("cannot open video: no video stream it can decode")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = max(1, int(threads))
    stream.codec_context.thread_type = "FRAME" if threads > 1 else "NONE"
    return container, stream


def read_video(path: str, spec: PixelSpec, fps: float, max_frames: int, keyframes: bool = False,
               threads: int = 1):
    """(frames uint8 [k, resize-sized H, W, 3], their frame indices) of one video."""
    import av
    import numpy as np

    container, stream = _open(path, threads, probe=not keyframes)
    try:
        index = _index(container, stream)
        n = len(index.pts)
        if n == 0:
            raise DecodeFailure("video has no frames")
        if keyframes:
            wanted = nearest_keyframes(index.times, index.duration, index.keyframes, fps,
                                       max_frames)
            runs = plan_reads(wanted, wanted, seek_cost=KEYFRAME_SEEK_COST)
            skip = "NONKEY" if index.timed else None
        else:
            wanted = sample_frame_indices(index.times, index.duration, fps, max_frames)
            runs = plan_reads(wanted, index.keyframes)
            skip = "NONREF" if stream.codec_context.name in SKIP_NONREF else None
        got: dict = {}
        try:
            if not index.timed:
                raise _Unseekable()
            _decode_runs(container, stream, index, runs, spec, skip, got)
            if len(got) < len(wanted):  # a seek landed late, or a skip misfired: plain pass
                _decode_runs(container, stream, index, [(None, wanted)], spec, None, got)
        except _Unseekable:  # start again from a fresh open, in one pass
            container.close()
            container, stream = _open(path, threads, probe=not keyframes)
            if index.timed:
                _decode_runs(container, stream, index, [(None, wanted)], spec, skip, got,
                             at_start=True)
            else:
                got = _decode_counted(container, stream, wanted, spec)
        missing = [i for i in wanted if i not in got]
        if missing:
            raise DecodeFailure(f"decode error: frame {missing[0]} of {n} could not be decoded")
        frames = [got[i] for i in wanted]
        if len({f.shape for f in frames}) != 1:
            raise DecodeFailure("decode error: the frame size changes within the video")
        return np.stack(frames), wanted
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise DecodeFailure(f"decode error: {short_reason(e)}") from None
    finally:
        container.close()


def decode(path: str, spec: PixelSpec, fps: float, max_frames: int, keyframes: bool = False,
           threads: int = 1):
    """(sampled frames uint8 [k, crop, crop, 3], their frame indices)."""
    import numpy as np

    frames, idx = read_video(path, spec, fps, max_frames, keyframes, threads)
    return np.ascontiguousarray(center_crop(frames, spec.crop)), idx
