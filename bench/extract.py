"""Throughput and memory of `vmr extract` (see docs/BENCHMARKS.md, section "Feature extraction").

Three measurements, each against the right reference in the same run:

1. video: end-to-end frames/s of `vmr extract --modality video` (a subprocess, the real CLI) over
   generated videos, divided by the encoder-only frames/s on the same decoded frames (decoded
   here beforehand, then only `encoder.encode` timed, same batch size). Target >= 0.85.
2. text: end-to-end items/s of `vmr extract --modality text` over Amazon Beauty's 12,101 items,
   divided by the raw encoder's items/s on the same batches (tokenized beforehand, only
   `encoder.encode` timed). Target >= 0.9.
3. memory: peak RSS of the extract command including its decode workers (sampled from /proc)
   over 200 and over 2,000 videos; ratio target <= 1.2.
4. decode (bench/decode_modes.py): sampled frames/s per decode core of every decode mode on
   every clip kind (bench/clips.py: today's mp4v clips, long-GOP H.264 at 360p and 720p),
   against today's decode path (decord) in the same run, and each mode's feature cosine to it.
5. modes: the end-to-end / encoder-only ratio of `vmr extract` for each mode (default, today's
   `--decoder decord`, `--keyframes`) on the H.264 clips; on a GPU this is the GPU ratio.
6. ray (bench/extract_ray.py; needs `pip install 'vmr[ray]'`): `--engine ray` items/s vs the local
   engine on the same clips (target >= 0.85), and with unequal video lengths one Ray job over two
   one-core nodes vs 2 static shards on the same two cores (target: Ray's wall time is shorter).

End-to-end rates use the extraction time the command reports (from the first decode to the
cache file published; imports, model loading and worker start-up are reported separately).

    .venv/bin/python bench/extract.py [--videos 200] [--mem 200 2000] [--device auto]
        [--batch-size 64] [--workers N] [--work DIR] [--json bench/out/extract.json]
        [--skip video text mem check decode modes ray] [--rounds 3]
        [--ray-videos 60] [--ray-unequal 24]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import common
from clips import clips_dataset
from common import REPO

BEAUTY = Path(os.environ.get("VMR_SHARED", REPO.parent / "shared")) / "data" / "amazon_beauty"
common.use_checkout()


# ------------------------------------------------------------------------------- inputs
def video_dataset(root: Path, n: int, seconds: float) -> Path:
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    return clips_dataset(root, [(str(media / f"v{k:05d}.mp4"), seconds, k) for k in range(n)])


def beauty_dataset(root: Path) -> Path:
    data = root / "beauty"
    if not (data / "items.parquet").exists():
        subprocess.run([sys.executable, "-m", "vmr", "prepare", "--interactions",
                        str(BEAUTY / "Beauty.txt"), "--format", "sequences", "--items",
                        str(BEAUTY / "Beauty_items.tsv"), "--items-id-col", "item_id",
                        "--text-columns", "title,brand,categories", "--out", str(data)],
                       check=True, cwd=str(REPO), capture_output=True)
    return data


# ------------------------------------------------------------------------------ measuring
def _tree_rss(root_pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [root_pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(children.get(pid, []))
    return total


def run_cli(args: list[str]) -> dict:
    """Run `vmr ...`; returns stdout, wall seconds and peak tree RSS."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "vmr", *args], cwd=str(REPO), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(p.pid))
            time.sleep(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out, err = p.communicate()
    stop.set()
    th.join()
    if p.returncode:
        raise SystemExit(f"vmr {' '.join(args)} failed:\n{err[-3000:]}")
    return {"stdout": out, "wall_s": time.monotonic() - t, "peak_rss_mb": peak[0] / 2**20}


def parse_summary(out: str) -> dict:
    m = re.search(r"([\d,]+) (frames|texts) in ([\d.]+) s .*?start-up ([\d.]+) s", out)
    if not m:
        raise SystemExit(f"cannot parse the extract summary:\n{out}")
    n = int(m.group(1).replace(",", ""))
    busy = re.search(r"encoder busy ([\d.]+) s", out)
    return {"units": n, "extract_s": float(m.group(3)), "rate": n / float(m.group(3)),
            "startup_s": float(m.group(4)),
            "encoder_busy_s": float(busy.group(1)) if busy else None,
            "summary": out.splitlines()[0]}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def invariance(device: str, batch_size: int, text_model: str, video_model: str | None) -> dict:
    """Does a row's output depend on the rest of its batch? The runner relies on it not doing so
    at a fixed batch shape (resume and shards give bit-identical vectors)."""
    import numpy as np

    from vmr.extract.encoders import identify, load_encoder

    out = {}
    enc = load_encoder(identify(video_model, "video"), device=device)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2 * batch_size, enc.pixels.crop, enc.pixels.crop, 3), np.uint8)
    a = enc.encode(x[:batch_size])
    b = enc.encode(np.concatenate([x[batch_size:batch_size + 5], x[:batch_size - 5]]))
    c = enc.encode(np.concatenate([x[:3], np.zeros_like(x[:batch_size - 3])]))  # padded last
    out["video_same_shape_shifted"] = float(np.abs(a[:batch_size - 5] - b[5:]).max())
    out["video_padded_batch"] = float(np.abs(a[:3] - c[:3]).max())
    if text_model == "none":
        return out
    tenc = load_encoder(identify(text_model, "text"), device=device)
    texts = [f"item {k} " + "word " * (k % 7) for k in range(12)]
    t1 = tenc.encode(tenc.tokenize(texts))
    t2 = tenc.encode(tenc.tokenize(texts[:6]))
    out["text_other_batch"] = float(np.abs(t1[:6] - t2).max())  # differs: runner fixes batches
    return out


def encoder_only_video(data: Path, batch_size: int, device: str, model: str | None,
                       decode: tuple = ("auto", False)) -> dict:
    import numpy as np
    import polars as pl

    from vmr.extract.decode import decode_video
    from vmr.extract.encoders import identify, load_encoder

    enc = load_encoder(identify(model, "video"), device=device)
    paths = pl.read_parquet(data / "items.parquet")["video"].to_list()
    frames = np.concatenate([decode_video(p, enc.pixels, 1.0, 32, decode[0], decode[1])
                             for p in paths])
    B = batch_size
    batches = [frames[a:a + B] for a in range(0, len(frames), B)]
    pad = np.zeros((B, *frames.shape[1:]), np.uint8)
    for b in batches[:2]:  # warm-up
        enc.encode(b)
    _sync(device)
    t = time.monotonic()
    for b in batches:
        if len(b) < B:
            pad[:len(b)] = b
            b = pad
        enc.encode(b)
    _sync(device)
    s = time.monotonic() - t
    return {"frames": len(frames), "encode_s": s, "rate": len(frames) / s}


def encoder_only_text(data: Path, batch_size: int, device: str, model: str) -> dict:
    import polars as pl

    from vmr.extract.encoders import identify, load_encoder
    from vmr.extract.shard import text_units

    enc = load_encoder(identify(model, "text"), pooling="cls", device=device)
    texts = pl.read_parquet(data / "items.parquet")["text"].to_list()
    units = text_units(texts, batch_size)
    toks = [enc.tokenize([texts[r] for r in u if (texts[r] or "").strip()]) for u in units]
    for b in toks[:2]:
        enc.encode(b)
    _sync(device)
    t = time.monotonic()
    n = 0
    for b in toks:
        enc.encode(b)
        n += len(b["input_ids"])
    _sync(device)
    s = time.monotonic() - t
    return {"items": n, "encode_s": s, "rate": n / s}


def raw_rate(kind: str, data: Path, a, decode: tuple = ("auto", False)) -> dict:
    """Encoder-only rate measured in a fresh process (as cold as the CLI's), so that the two
    sides of the ratio start from the same state."""
    out = subprocess.run([sys.executable, __file__, "--raw", kind, "--raw-data", str(data),
                          "--batch-size", str(a.batch_size), "--device", a.device,
                          "--text-model", a.text_model, "--raw-decode", json.dumps(decode),
                          *(["--video-model", a.video_model] if a.video_model else [])],
                         check=True, capture_output=True,
                         text=True, cwd=str(REPO), env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def sandwich(kind: str, data: Path, cmd: list[str], a, decode: tuple = ("auto", False)) -> dict:
    """encoder-only, end-to-end, encoder-only again: the reference is the mean of the two
    encoder-only rates, which cancels a steady drift of the machine's load."""
    before = raw_rate(kind, data, a, decode)
    r = run_cli(cmd)
    e2e = parse_summary(r["stdout"])
    after = raw_rate(kind, data, a, decode)
    ref = (before["rate"] + after["rate"]) / 2
    return {"command": "vmr " + " ".join(cmd),
            "end_to_end": {**e2e, "command_wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"]},
            "encoder_only_before": before, "encoder_only_after": after, "reference_rate": ref,
            "ratio": e2e["rate"] / ref,
            "ratio_to_busy_rate": (e2e["extract_s"] and e2e["encoder_busy_s"]
                                   and e2e["encoder_busy_s"] / e2e["extract_s"])}


# ------------------------------------------------------------------------------------ main
def machine(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpus": len(os.sched_getaffinity(0)), "cpu": platform.processor() or platform.machine(),
            "load_avg_start": os.getloadavg()[0], "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each video")
    ap.add_argument("--mem", type=int, nargs="*", default=[200, 2000])
    ap.add_argument("--mem-seconds", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--text-model", default="minilm", help="'none' skips text everywhere")
    ap.add_argument("--video-model", default=None,
                    help="visual --model spec (default: vmr's default, efficientnet-lite0)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["video", "text", "mem", "check", "decode", "modes", "ray"])
    ap.add_argument("--ray-videos", type=int, default=60, help="ray overhead row: 10-s clips")
    ap.add_argument("--ray-rounds", type=int, default=2, help="ray overhead row: Ray runs")
    ap.add_argument("--ray-unequal", type=int, default=24,
                    help="ray dynamic-vs-static row: videos, half 20 s, half 2 s")
    ap.add_argument("--rounds", type=int, default=3, help="decode timing rounds per mode")
    ap.add_argument("--work", default=str(REPO / "bench" / "out" / "extract-work"))
    ap.add_argument("--json", default=str(REPO / "bench" / "out" / "extract.json"))
    ap.add_argument("--raw", choices=["video", "text"], help=argparse.SUPPRESS)
    ap.add_argument("--raw-data", help=argparse.SUPPRESS)
    ap.add_argument("--raw-decode", default='["auto", false]', help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vmr.extract.encoders import resolve_device

    device = resolve_device(a.device)
    if a.raw:  # child process of raw_rate()
        args = (Path(a.raw_data), a.batch_size, device)
        if a.raw == "video":
            r = encoder_only_video(*args, a.video_model, tuple(json.loads(a.raw_decode)))
        else:
            r = encoder_only_text(*args, a.text_model)
        print(json.dumps(r))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--batch-size", str(a.batch_size), "--device", a.device]
    vmodel = ["--model", a.video_model] if a.video_model else []
    if a.workers is not None:
        common += ["--workers", str(a.workers)]
    res: dict = {"machine": machine(device), "args": vars(a)}

    if "check" not in a.skip:
        res["batch_invariance_max_abs_diff"] = invariance(device, a.batch_size, a.text_model,
                                                            a.video_model)
        print("batch invariance (max |diff|):", res["batch_invariance_max_abs_diff"], flush=True)

    if "video" not in a.skip:
        data = video_dataset(work / f"video-{a.videos}", a.videos, a.seconds)
        cache = work / f"video-{a.videos}.h5"
        cache.unlink(missing_ok=True)
        cmd = ["extract", "--data", str(data), "--modality", "video", "--cache", str(cache),
               *vmodel, *common]
        res["video"] = {"videos": a.videos, **sandwich("video", data, cmd, a), "target": 0.85}
        v = res["video"]
        assert v["encoder_only_before"]["frames"] == v["end_to_end"]["units"]
        print(f"video: {v['end_to_end']['rate']:.1f} frames/s end-to-end vs "
              f"{v['reference_rate']:.1f} encoder-only -> ratio {v['ratio']:.3f} (target >= 0.85)",
              flush=True)

    if "decode" not in a.skip or "modes" not in a.skip:
        from clips import describe, make_clips

        clips = make_clips()
        res["clips"] = {k: describe(v) for k, v in clips.items()}
    if "decode" not in a.skip:
        import decode_modes

        timing = decode_modes.measure(clips, a.rounds)
        feats = decode_modes.feature_agreement(clips, device)
        res["decode"] = {"timing": timing, "features": feats}
        print(decode_modes.table(timing, feats), flush=True)
    if "modes" not in a.skip:
        import decode_modes

        h264 = clips["h264-360p"] + clips["h264-720p"]
        res["modes"] = decode_modes.e2e_modes(work, h264, [*vmodel, *common],
                                              lambda data, cmd, dec: sandwich("video", data, cmd,
                                                                              a, dec))

    if "text" not in a.skip and a.text_model != "none" and ((BEAUTY / "Beauty.txt").exists()
                                 or (work / "beauty" / "items.parquet").exists()):
        data = beauty_dataset(work)
        cache = work / "beauty-text.h5"
        cache.unlink(missing_ok=True)
        cmd = ["extract", "--data", str(data), "--modality", "text", "--cache", str(cache),
               "--model", a.text_model, *common]
        res["text"] = {**sandwich("text", data, cmd, a), "target": 0.9}
        t = res["text"]
        print(f"text: {t['end_to_end']['rate']:.1f} items/s end-to-end vs "
              f"{t['reference_rate']:.1f} raw encoder -> ratio {t['ratio']:.3f} (target >= 0.9)",
              flush=True)

    if "ray" not in a.skip:
        import extract_ray

        shared = [*vmodel, *common]
        res["ray"] = {
            "overhead": extract_ray.overhead(work, a.ray_videos, a.seconds, shared,
                                             parse_summary, a.ray_rounds)
            if a.ray_videos else None,
            "unequal": extract_ray.unequal(work, a.ray_unequal, 20.0, 2.0, shared)
            if a.ray_unequal else None}

    if "mem" not in a.skip and a.mem:
        mem = {}
        for n in a.mem:
            data = video_dataset(work / f"mem-{n}", n, a.mem_seconds)
            cache = work / f"mem-{n}.h5"
            cache.unlink(missing_ok=True)
            r = run_cli(["extract", "--data", str(data), "--modality", "video", "--cache",
                         str(cache), *vmodel, *common])
            mem[n] = {"peak_rss_mb": r["peak_rss_mb"], "wall_s": r["wall_s"],
                      **parse_summary(r["stdout"])}
            print(f"memory: {n} videos -> peak RSS {r['peak_rss_mb']:.0f} MB (tree)", flush=True)
        lo, hi = min(a.mem), max(a.mem)
        res["memory"] = {"runs": mem, "ratio": mem[hi]["peak_rss_mb"] / mem[lo]["peak_rss_mb"],
                         "target": 1.2}
        print(f"memory ratio {hi} vs {lo} videos: {res['memory']['ratio']:.3f} (target <= 1.2)")

    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
