"""Decode throughput per core of each decode mode on each clip kind (bench/clips.py), against
today's decode path (decord, exact frames) in the same run, and what each mode does to the
features (cosine of each item's mean-pooled efficientnet-lite0 vector to today's).

Timing runs in a child process pinned to one core (two for the 2-thread mode): the modes take
turns, clip kind by clip kind, for --rounds rounds after an untimed warm-up round, and each
mode's time is the median over rounds. "Sampled frames" are the moments the sampling rule asks
for (--fps 1, --max-frames 32), the same count for every mode; --keyframes answers each with
its nearest keyframe (fewer distinct frames: "frames decoded out").

Used by bench/extract.py (section "decode"); alone:
    .venv/bin/python bench/decode_modes.py [--rounds 3] [--kinds h264-360p ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
from common import REPO

common.use_checkout()

BASELINE = "today: decord"
# name -> (decoder, keyframes, threads, cores the child is pinned to)
MODES = {
    BASELINE: ("decord", False, 1, 1),
    "exact: pyav (default)": ("pyav", False, 1, 1),
    "exact: pyav, 2 threads": ("pyav", False, 2, 2),
    "keyframes: pyav": ("pyav", True, 1, 1),
    "keyframes: decord": ("decord", True, 1, 1),
}
FPS, MAX_FRAMES = 1.0, 32


def _installed(decoder: str) -> bool:
    from importlib.util import find_spec

    return find_spec("av" if decoder == "pyav" else decoder) is not None


def modes() -> dict:
    return {k: v for k, v in MODES.items() if _installed(v[0])}


def _decode_all(paths, spec, mode):
    from vmr.extract.decode import decode_video

    dec, kf, threads, _ = mode
    return [decode_video(p, spec, FPS, MAX_FRAMES, dec, kf, threads, with_indices=True)
            for p in paths]


def child(kind_paths: dict, rounds: int) -> dict:
    """Timings (runs in the pinned child)."""
    from vmr.extract.decode import PixelSpec

    spec = PixelSpec(256, 224)  # efficientnet-lite0's
    cpus = sorted(os.sched_getaffinity(0))
    out = {}
    for kind, paths in kind_paths.items():
        times: dict = {m: [] for m in modes()}
        counts = {}
        for r in range(rounds + 1):  # round 0: warm-up
            for name, mode in modes().items():
                os.sched_setaffinity(0, set(cpus[:mode[3]]))
                t = time.perf_counter()
                res = _decode_all(paths, spec, mode)
                dt = time.perf_counter() - t
                if r:
                    times[name].append(dt)
                counts[name] = sum(len(idx) for _, idx in res)
        out[kind] = {"times_s": times, "frames_out": counts}
    return out


def measure(kind_paths: dict, rounds: int = 3) -> dict:
    """Per kind and mode: median seconds, sampled frames/s per core, ratio to today's."""
    from vmr.extract.decode import PixelSpec, decode_video

    spec = PixelSpec(256, 224)
    cpus = sorted(os.sched_getaffinity(0))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(kind_paths),
                        "--rounds", str(rounds)], capture_output=True, text=True, env=env,
                       cwd=str(REPO))
    if p.returncode:
        raise SystemExit(f"decode timing child failed:\n{p.stderr[-3000:]}")
    raw = json.loads(p.stdout.strip().splitlines()[-1])
    res = {"cpus_available": len(cpus), "rounds": rounds, "kinds": {}}
    for kind, r in raw.items():
        samples = sum(len(decode_video(x, spec, FPS, MAX_FRAMES, "pyav", with_indices=True)[1])
                      for x in kind_paths[kind])
        rows = {}
        for name, ts in r["times_s"].items():
            med, cores = statistics.median(ts), MODES[name][3]
            rows[name] = {"seconds": med, "all_seconds": ts, "cores": cores,
                          "sampled_frames": samples, "frames_out": r["frames_out"][name],
                          "sampled_per_s_per_core": samples / med / cores}
        base = rows[BASELINE]["sampled_per_s_per_core"] if BASELINE in rows else None
        for row in rows.values():
            row["ratio_to_today"] = row["sampled_per_s_per_core"] / base if base else None
        res["kinds"][kind] = rows
    return res


def feature_agreement(kind_paths: dict, device: str = "cpu") -> dict:
    """Per kind and mode: cosine of each item's mean-pooled default-encoder vector to today's."""
    import numpy as np

    from vmr.extract.encoders import identify, load_encoder

    enc = load_encoder(identify(None, "video"), device=device)

    def vectors(paths, mode):
        out = []
        for frames, _ in _decode_all(paths, enc.pixels, mode):
            out.append(np.concatenate([enc.encode(frames[i:i + 64])
                                       for i in range(0, len(frames), 64)]).mean(0))
        return np.stack(out)

    res = {}
    available = modes()
    for kind, paths in kind_paths.items():
        ref = vectors(paths, MODES[BASELINE]) if BASELINE in available else None
        res[kind] = {}
        for name, mode in available.items():
            if name == BASELINE or ref is None or mode[2] != 1:
                continue
            v = vectors(paths, mode)
            cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
            res[kind][name] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    return res


def e2e_modes(work: Path, paths: list[str], extra: list[str], sandwich) -> dict:
    """End-to-end / encoder-only ratio of `vmr extract` in each decode mode, same clips
    (`sandwich(data, cmd, (decoder, keyframes))` is bench/extract.py's measurement)."""
    import polars as pl

    data = work / "modes" / "ds"
    data.mkdir(parents=True, exist_ok=True)
    n = len(paths)
    pl.DataFrame({"item": [f"c{k}" for k in range(n)], "text": [None] * n, "title": [None] * n,
                  "image": [None] * n, "video": paths},
                 schema={c: pl.Utf8 for c in ("item", "text", "title", "image", "video")}
                 ).write_parquet(data / "items.parquet")
    out = {}
    for name, flags, decode in [("default (pyav, exact)", [], ("auto", False)),
                                ("today (--decoder decord)", ["--decoder", "decord"],
                                 ("decord", False)),
                                ("--keyframes", ["--keyframes"], ("auto", True))]:
        cache = work / "modes" / "features.h5"
        cache.unlink(missing_ok=True)
        cmd = ["extract", "--data", str(data), "--modality", "video", "--cache", str(cache),
               *extra, *flags]
        r = sandwich(data, cmd, decode)
        assert r["encoder_only_before"]["frames"] == r["end_to_end"]["units"]
        r["items_per_s"] = len(paths) / r["end_to_end"]["extract_s"]
        out[name] = r
        print(f"{name}: {r['end_to_end']['rate']:.1f} frames/s end-to-end vs "
              f"{r['reference_rate']:.1f} encoder-only -> ratio {r['ratio']:.3f} "
              f"({r['items_per_s']:.2f} items/s)", flush=True)
    return out


def table(timing: dict, features: dict) -> str:
    lines = ["| clip kind | mode | s (median) | sampled frames | frames out | sampled frames/s "
             "per core | ratio to today | cosine to today (min / mean) |", "|---" * 8 + "|"]
    for kind, rows in timing["kinds"].items():
        for name, r in rows.items():
            f = features.get(kind, {}).get(name)
            cos = f"{f['min_cosine']:.5f} / {f['mean_cosine']:.5f}" if f else ""
            lines.append(f"| {kind} | {name} | {r['seconds']:.2f} | {r['sampled_frames']} | "
                         f"{r['frames_out']} | {r['sampled_per_s_per_core']:.1f} | "
                         f"{r['ratio_to_today']:.2f} | {cos} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kinds", nargs="*", default=None)
    ap.add_argument("--no-features", action="store_true")
    ap.add_argument("--json", default=str(REPO / "bench" / "out" / "decode_modes.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child), a.rounds)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from clips import KINDS, describe, make_clips

    clips = make_clips(kinds=a.kinds or tuple(KINDS))
    res = {"clips": {k: describe(v) for k, v in clips.items()}, "timing": measure(clips, a.rounds)}
    res["features"] = {} if a.no_features else feature_agreement(clips)
    print(table(res["timing"], res["features"]))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
