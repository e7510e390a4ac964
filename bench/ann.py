"""Exact inner-product search vs faiss (HNSW, IVF) on a large synthetic catalogue.

    .venv/bin/python bench/ann.py [--items 1000000] [--dim 64] [--queries 1000]

Item vectors are clustered (Gaussian blobs around random centres, with varying norms, as
trained item embeddings are); queries are drawn the same way. Ground truth is the exact top-10
by inner product (`vmr.serve.export.exact_search`, chunked torch matmul). Reports recall@10
against it and single-process queries/s (queries batched, all cores). Needs faiss-cpu
(`pip install 'vmr[ann]'`); without it only the exact search is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import common

common.use_checkout()
from vmr.serve.export import HNSW_EF_CONSTRUCTION, HNSW_M, exact_search  # noqa: E402

K = 10


def clustered(n: int, d: int, n_clusters: int, rng: np.random.Generator,
              centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n vectors around n_clusters random centres; norms vary by a log-normal factor."""
    if centres is None:
        centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    step = 200_000
    for s in range(0, n, step):
        m = min(step, n - s)
        c = rng.integers(0, len(centres), m)
        x = centres[c] + 0.6 * rng.standard_normal((m, d)).astype(np.float32)
        x *= rng.lognormal(0.0, 0.25, (m, 1)).astype(np.float32)
        out[s:s + m] = x
    return out, centres


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-hnsw", action="store_true")
    ap.add_argument("--skip-ivf", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    items, centres = clustered(args.items, args.dim, args.clusters, rng)
    queries, _ = clustered(args.queries, args.dim, args.clusters, rng, centres)
    rows: list[dict] = []

    exact_search(items[:50_000], queries[:100], K)  # warm-up: torch's first matmul is slow
    (truth, _), t = timed(exact_search, items, queries, K)
    rows.append({"method": "exact (torch matmul + top-k)", "build_s": 0.0, "recall@10": 1.0,
                 "qps": args.queries / t})
    print(f"exact: {t:.2f}s for {args.queries} queries", file=sys.stderr)

    try:
        import faiss
    except ImportError:
        faiss = None
        print("faiss not installed: only exact search timed", file=sys.stderr)

    if faiss is not None:
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(items)
        (_, idx), t = timed(flat.search, queries, K)
        rows.append({"method": "faiss IndexFlatIP (exact)", "build_s": 0.0,
                     "recall@10": recall_at_k(idx, truth), "qps": args.queries / t})
        del flat

        if not args.skip_ivf:
            nlist = int(4 * np.sqrt(args.items))
            quant = faiss.IndexFlatIP(args.dim)
            ivf = faiss.IndexIVFFlat(quant, args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            t0 = time.perf_counter()
            sample = items[rng.choice(args.items, min(args.items, 50 * nlist), replace=False)]
            ivf.train(sample)
            ivf.add(items)
            build = time.perf_counter() - t0
            print(f"IVF{nlist} built in {build:.1f}s", file=sys.stderr)
            for nprobe in (1, 8, 32, 128):
                ivf.nprobe = nprobe
                (_, idx), t = timed(ivf.search, queries, K)
                rows.append({"method": f"faiss IVF{nlist},Flat nprobe={nprobe}", "build_s": build,
                             "recall@10": recall_at_k(idx, truth), "qps": args.queries / t})
            del ivf

        if not args.skip_hnsw:
            hnsw = faiss.IndexHNSWFlat(args.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            (_, build) = timed(hnsw.add, items)
            print(f"HNSW built in {build:.1f}s", file=sys.stderr)
            for ef in (16, 64, 128, 256):
                hnsw.hnsw.efSearch = ef
                (_, idx), t = timed(hnsw.search, queries, K)
                rows.append({"method": f"faiss HNSW{HNSW_M} efC={HNSW_EF_CONSTRUCTION} "
                                       f"efSearch={ef}", "build_s": build,
                             "recall@10": recall_at_k(idx, truth), "qps": args.queries / t})

    import torch

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
               f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
               + (f", faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads)"
                  if faiss is not None else ""))
    print(f"items {args.items:,} x d={args.dim} ({args.clusters} clusters), {args.queries} "
          f"queries, k={K}; {machine}\n")
    print("| method | build s | recall@10 | queries/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['build_s']:.1f} | {r['recall@10']:.3f} | {r['qps']:,.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
