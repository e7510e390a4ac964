"""The Ray rows of bench/extract.py (`--skip` leaves them out with `ray`; needs `pip install
'vmr[ray]'`): both ratios are measured in one run, each on clusters this script starts and stops.

1. overhead: `vmr extract --engine ray --ray-address` on a local one-node cluster (2 CPUs, 200 MB
   object store) vs `vmr extract` (local engine), the same clips, items/s of the extraction
   each command reports (start-up apart); local and Ray runs alternate (L R L R L), each Ray run
   is divided by the mean of the local runs around it, the median is the ratio. Target: Ray >=
   0.85 of local. Also each run's encoder busy share (encode time / extraction time).
2. dynamic vs static: videos of unequal lengths laid out so that modulo sharding gives one shard
   all the long ones. Two emulated machines of one core each (CPU affinity): 2 static shards
   (`--shard 1/2` on core 0, `--shard 2/2` on core 1, at once, then `vmr cache merge`) vs one Ray
   job over a two-node cluster (a node per core, one encoder actor each). Wall time of each whole
   job. Target: Ray's wall time < the shards'.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from clips import clips_dataset
from common import REPO


def _dataset(root: Path, seconds: list[float]) -> Path:
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    return clips_dataset(root, [(str(media / f"v{k:05d}-{s:g}s.mp4"), s, k)
                                for k, s in enumerate(seconds)])


def _cluster(nodes: list[set[int]]):
    """A local Ray cluster, one node per CPU set (each node's processes pinned to it)."""
    from ray.cluster_utils import Cluster

    mine = os.sched_getaffinity(0)
    cluster = None
    try:
        for k, cpus in enumerate(nodes):
            os.sched_setaffinity(0, cpus)
            args = {"num_cpus": len(cpus), "object_store_memory": 200 << 20}
            if k == 0:
                cluster = Cluster(initialize_head=True,
                                  head_node_args={**args, "include_dashboard": False})
            else:
                cluster.add_node(**args)
    finally:
        os.sched_setaffinity(0, mine)
    return cluster


def _popen(cmd: list[str], cpus: set[int] | None = None) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(REPO))
    pre = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    return subprocess.Popen(pre + [sys.executable, "-m", "vmr", *cmd], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> str:
    out, err = p.communicate()
    if p.returncode:
        raise SystemExit(f"{' '.join(p.args)} failed:\n{err[-3000:]}")
    return out


def overhead(work: Path, n: int, seconds: float, flags: list[str], parse_summary,
             rounds: int = 2) -> dict:
    data = _dataset(work / f"ray-clips-{n}", [seconds] * n)
    cluster = _cluster([set(os.sched_getaffinity(0))])
    rows = {}
    tags = ["local_0"]
    for k in range(rounds):
        tags += [f"ray_{k}", f"local_{k + 1}"]
    try:
        for tag in tags:
            cache = work / f"ray-clips-{tag}.h5"
            cache.unlink(missing_ok=True)
            cmd = ["extract", "--data", str(data), "--modality", "video", "--cache", str(cache),
                   *flags]
            if tag.startswith("ray"):
                cmd += ["--engine", "ray", "--ray-address", cluster.address]
            t = time.monotonic()
            out = _finish(_popen(cmd))
            s = parse_summary(out)
            rows[tag] = {**s, "items_per_s": n / s["extract_s"],
                         "command_wall_s": time.monotonic() - t,
                         "load_avg": os.getloadavg()[0]}
            print(f"ray overhead, {tag}: {rows[tag]['items_per_s']:.2f} items/s "
                  f"({s['summary']})", flush=True)
    finally:
        cluster.shutdown()
    ratios = []  # each Ray run against the mean of the local runs just before and after it
    for k in range(rounds):
        ref = (rows[f"local_{k}"]["items_per_s"] + rows[f"local_{k + 1}"]["items_per_s"]) / 2
        ratios.append(rows[f"ray_{k}"]["items_per_s"] / ref)
    busy = {t: r["encoder_busy_s"] / r["extract_s"] for t, r in rows.items()}
    ratio = statistics.median(ratios)
    print(f"ray overhead: items/s ratios {', '.join(f'{x:.3f}' for x in ratios)} -> median "
          f"{ratio:.3f} (target >= 0.85); encoder busy share "
          + ", ".join(f"{t} {b:.3f}" for t, b in busy.items()), flush=True)
    return {"videos": n, "seconds": seconds, "runs": rows, "ratios": ratios, "ratio": ratio,
            "encoder_busy_share": busy, "target": 0.85}


def unequal(work: Path, n: int, long_s: float, short_s: float, flags: list[str]) -> dict:
    """Even rows long, odd rows short: shard 1/2 (rows 0, 2, 4, ...) gets every long video."""
    seconds = [long_s if k % 2 == 0 else short_s for k in range(n)]
    data = _dataset(work / f"ray-unequal-{n}", seconds)
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        raise SystemExit("the unequal-lengths rows need 2 CPUs")
    base = ["extract", "--data", str(data), "--modality", "video", *flags]
    cache = work / "ray-unequal-static.h5"
    shard_files = [work / f"ray-unequal-static.shard-{i}-of-2.h5" for i in (1, 2)]
    for f in [cache, *shard_files, work / "ray-unequal-ray.h5"]:
        f.unlink(missing_ok=True)
    t = time.monotonic()
    procs = [_popen([*base, "--cache", str(cache), "--shard", f"{i + 1}/2"], {cores[i]})
             for i in (0, 1)]
    shard_s = [0.0, 0.0]
    while not all(shard_s):
        for i, p in enumerate(procs):
            if not shard_s[i] and p.poll() is not None:
                _finish(p)
                shard_s[i] = time.monotonic() - t
        time.sleep(0.1)
    _finish(_popen(["cache", "merge", *map(str, shard_files), "--out", str(cache)]))
    static_s = time.monotonic() - t
    load_static = os.getloadavg()[0]
    print(f"unequal lengths, 2 static shards: {static_s:.1f} s (shards done at "
          f"{shard_s[0]:.1f} / {shard_s[1]:.1f} s)", flush=True)
    cluster = _cluster([{cores[0]}, {cores[1]}])
    try:
        t = time.monotonic()
        out = _finish(_popen([*base, "--cache", str(work / "ray-unequal-ray.h5"),
                              "--engine", "ray", "--ray-address", cluster.address]))
        ray_s = time.monotonic() - t
    finally:
        cluster.shutdown()
    print(f"unequal lengths, ray on 2 one-core nodes: {ray_s:.1f} s -> static / ray "
          f"{static_s / ray_s:.2f} (target > 1)", flush=True)
    return {"videos": n, "long_s": long_s, "short_s": short_s, "static_wall_s": static_s,
            "static_shard_done_s": shard_s, "ray_wall_s": ray_s, "ray_summary":
            out.splitlines()[0], "speedup": static_s / ray_s, "load_avg":
            [load_static, os.getloadavg()[0]]}
