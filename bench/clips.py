"""Benchmark clips for the decode measurements (docs/BENCHMARKS.md, "Video decoding").

Three kinds, generated into bench/out/clips/ (gitignored), reused when already there:

- `mp4v-240p`: the clips the extraction benchmark always used: 320x240, 24 fps, 10 s, MPEG-4
  part 2 from OpenCV's `mp4v` writer (a keyframe every 12 frames, no B-frames).
- `h264-360p`, `h264-720p`: what web video looks like to a decoder: H.264 from PyAV's bundled
  libx264 (preset veryfast, CRF 23: High profile, 3 B-frames with b-pyramid), a keyframe every
  250 frames (8-10 s; scene-cut keyframes off), 640x360 at 25 fps and 1280x720 at 30 fps,
  30 to 120 s. Content: a textured background panning slowly, a moving disc, the frame number,
  and mild per-frame noise, giving web-like bitrates (about 0.6 and 2.4 Mbit/s).

    .venv/bin/python bench/clips.py [--out bench/out/clips]   # generates all kinds, prints them
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing import Pool
from pathlib import Path

from common import REPO
OUT = REPO / "bench" / "out" / "clips"

# kind -> (width, height, fps, [seconds of each clip], codec)
KINDS = {
    "mp4v-240p": (320, 240, 24, [10.0] * 20, "mp4v"),
    "h264-360p": (640, 360, 25, [30.0, 60.0, 90.0, 120.0], "h264"),
    "h264-720p": (1280, 720, 30, [30.0, 45.0, 60.0], "h264"),
}
KEYINT = 250


def _h264(path: str, w: int, h: int, fps: int, seconds: float, seed: int) -> None:
    import av
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (h // 4 + 8, w // 4 + 8, 3), dtype=np.uint8)
    tex = cv2.resize(tex, (w + 32, h + 32), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 3, (8, h, w, 3)).astype(np.int16)
    out = av.open(path, "w")
    s = out.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.options = {"preset": "veryfast", "crf": "23", "g": str(KEYINT),
                 "keyint_min": str(KEYINT), "sc_threshold": "0"}
    color = tuple(int(c) for c in rng.integers(40, 256, 3))
    for i in range(int(seconds * fps)):
        dx, dy = int(16 + 15 * np.sin(i / 40 + seed)), int(16 + 15 * np.cos(i / 53))
        f = tex[dy:dy + h, dx:dx + w].copy()
        x = int((w - 80) * (0.5 + 0.5 * np.sin(i / 30 + seed)))
        cv2.circle(f, (x + 40, h // 2), h // 8, color, -1)
        cv2.putText(f, str(i), (10, h // 6), cv2.FONT_HERSHEY_SIMPLEX, h / 300, (255, 255, 255), 2)
        f = np.clip(f.astype(np.int16) + noise[i % 8], 0, 255).astype(np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()


def clips_dataset(root: Path, jobs: list[tuple[str, float, int]]) -> Path:
    """Render the clips `jobs` ((path, seconds, seed) each) in parallel and write ROOT/ds/
    items.parquet with one video item per clip (ids v00000, v00001, ...); returns ROOT/ds."""
    import polars as pl

    with Pool(max(1, os.cpu_count() or 2)) as pool:
        paths = pool.map(make_mp4v_clip, jobs, chunksize=4)
    data = root / "ds"
    data.mkdir(exist_ok=True)
    n = len(paths)
    cols = ("item", "text", "title", "image", "video")
    pl.DataFrame({"item": [f"v{k:05d}" for k in range(n)], "text": [None] * n,
                  "title": [None] * n, "image": [None] * n, "video": paths},
                 schema={c: pl.Utf8 for c in cols}).write_parquet(data / "items.parquet")
    # the media root readers re-check every path against (what `vmr prepare` records)
    (data / "dataset.json").write_text(json.dumps({"media_root": os.path.realpath(root)}) + "\n")
    return data


def make_mp4v_clip(args) -> str:
    """A 320x240 clip, 24 fps: moving shapes over a textured background (not trivially
    compressible, so decoding costs what it costs for real footage); the extraction
    benchmark's clip (bench/extract.py)."""
    import cv2
    import numpy as np

    path, seconds, seed = args
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    w, h, fps = 320, 240, 24
    bg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    bg = cv2.GaussianBlur(bg, (0, 0), 3)
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    vw = cv2.VideoWriter(path + ".tmp.mp4", cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(int(seconds * fps)):
        f = np.roll(bg, i * 2, axis=1).copy()
        x = int((w - 60) * (0.5 + 0.5 * np.sin(i / 12 + seed)))
        cv2.circle(f, (x + 30, h // 2), 28, color, -1)
        cv2.putText(f, str(i), (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        vw.write(f)
    vw.release()
    os.replace(path + ".tmp.mp4", path)
    return path


def _make(job) -> str:
    path, kind, seconds, seed = job
    if os.path.exists(path):
        return path
    w, h, fps, _, codec = KINDS[kind]
    tmp = path + ".tmp.mp4"
    if codec == "mp4v":
        make_mp4v_clip((tmp, seconds, seed))
    else:
        _h264(tmp, w, h, fps, seconds, seed)
    os.replace(tmp, path)
    return path


def make_clips(out: Path = OUT, kinds=tuple(KINDS)) -> dict[str, list[str]]:
    """kind -> clip paths (generated on 2 processes where missing)."""
    jobs = []
    for kind in kinds:
        (out / kind).mkdir(parents=True, exist_ok=True)
        jobs += [(str(out / kind / f"{k:03d}.mp4"), kind, s, k)
                 for k, s in enumerate(KINDS[kind][3])]
    with Pool(min(2, os.cpu_count() or 1)) as pool:
        paths = pool.map(_make, sorted(jobs, key=lambda j: -j[2]), chunksize=1)
    by_kind: dict[str, list[str]] = {k: [] for k in kinds}
    for (_, kind, _, _), p in zip(sorted(jobs, key=lambda j: -j[2]), paths):
        by_kind[kind].append(p)
    return {k: sorted(v) for k, v in by_kind.items()}


def describe(paths: list[str]) -> dict:
    """Codec, size, rate, duration, keyframe interval and bitrate of a kind's clips."""
    import av

    info = []
    for p in paths:
        with av.open(p) as c:
            st = c.streams.video[0]
            keys = [i for i, pk in enumerate(c.demux(st)) if pk.size and pk.is_keyframe]
            info.append({"codec": st.codec_context.name, "size": f"{st.width}x{st.height}",
                         "fps": float(st.average_rate), "seconds": float(c.duration / 1e6),
                         "frames": st.frames, "keyframe_every": keys[1] - keys[0]
                         if len(keys) > 1 else None,
                         "mbit_s": os.path.getsize(p) * 8 / (c.duration / 1e6) / 1e6})
    return {"clips": len(paths), "codec": info[0]["codec"], "size": info[0]["size"],
            "fps": info[0]["fps"], "seconds": [round(i["seconds"], 1) for i in info],
            "keyframe_every": info[0]["keyframe_every"],
            "mbit_s": round(sum(i["mbit_s"] for i in info) / len(info), 2)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    t = time.monotonic()
    clips = make_clips(Path(a.out))
    for kind, paths in clips.items():
        print(kind, describe(paths))
    print(f"{time.monotonic() - t:.1f} s")
