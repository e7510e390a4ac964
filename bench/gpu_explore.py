"""Model exploration and training throughput on a GPU, for a lent accelerator session.

Inputs are carried as plain files (the device has torch and h5py, not polars): the Beauty
sequences (npz), item ids, and the text feature caches extracted here. It trains each config
of a grid to early stopping (validation NDCG@10 only is used to choose), evaluates the best
checkpoint on test, and measures training throughput with and without bf16 autocast.

    python bench/gpu_explore.py --inputs .gpu --out $OUT --workers 4
Prepare the inputs with `python bench/gpu_explore.py --export DATASET_DIR CACHE... --inputs .gpu`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import common

common.use_checkout()

GRID = {
    "sasrec": ["model.kind=sasrec"],
    "vmr-id-cls": ["model.kind=vmr", "model.item_id_emb=true", "data.modalities=['text_cls']"],
    "vmr-id-mean": ["model.kind=vmr", "model.item_id_emb=true", "data.modalities=['text_mean']"],
    "vmr-noid-cls": ["model.kind=vmr", "model.item_id_emb=false", "data.modalities=['text_cls']"],
    "vmr-id-cls-masked": ["model.kind=vmr", "model.item_id_emb=true", "model.objective=masked",
                          "data.modalities=['text_cls']"],
    "vmr-id-cls-none": ["model.kind=vmr", "model.item_id_emb=true", "model.share=none",
                        "data.modalities=['text_cls']"],
    "vmr-id-cls-pre": ["model.kind=vmr", "model.item_id_emb=true", "pretrain.epochs=10",
                       "data.modalities=['text_cls']"],
    "vmr-id-cls-t07": ["model.kind=vmr", "model.item_id_emb=true", "model.temperature=0.07",
                       "data.modalities=['text_cls']"],
    "vmr-id-mean-t07": ["model.kind=vmr", "model.item_id_emb=true", "model.temperature=0.07",
                        "data.modalities=['text_mean']"],
    "vmr-id-cls-d128": ["model.kind=vmr", "model.item_id_emb=true", "model.d_model=128",
                        "data.modalities=['text_cls']"],
    "vmr-id-cls-do3": ["model.kind=vmr", "model.item_id_emb=true", "model.dropout=0.3",
                       "data.modalities=['text_cls']"],
    "sasrec-t07": ["model.kind=sasrec", "model.temperature=0.07"],
}

# Second session: around the current defaults (ID residual, item dropout 0.1), text [CLS] features.
CLS = "data.modalities=['text_cls']"
TUNE = {
    "base": [CLS],
    "t05": [CLS, "model.temperature=0.05"],
    "t10": [CLS, "model.temperature=0.1"],
    "d128": [CLS, "model.d_model=128"],
    "d128-t05": [CLS, "model.d_model=128", "model.temperature=0.05"],
    "do4": [CLS, "model.dropout=0.4"],
    "sasrec-t05": ["model.kind=sasrec", "model.temperature=0.05"],
}
# Third seed of the close ones, and two combinations ("NAME@SEED" pins a job's seed).
TUNE2 = {f"{n}@3": TUNE[n] for n in ("base", "t10", "d128", "do4")}
TUNE2.update({f"{n}@{k}": sets for k in (1, 2, 3) for n, sets in (
    ("d128-t10", [CLS, "model.d_model=128", "model.temperature=0.1"]),
    ("d128-do4", [CLS, "model.d_model=128", "model.dropout=0.4"]))})
GRIDS = {"explore": GRID, "tune": TUNE, "tune2": TUNE2}


def export(dataset_dir: str, caches: list[str], inputs: Path) -> None:
    import shutil

    import numpy as np

    from vmr.data.dataset import load_dataset

    ds = load_dataset(dataset_dir)
    inputs.mkdir(parents=True, exist_ok=True)
    lens = np.array([len(s) for s in ds.sequences])
    np.savez(inputs / "seqs.npz", items=np.concatenate(ds.sequences), lens=lens)
    (inputs / "item_ids.txt").write_text("\n".join(ds.item_ids) + "\n")
    for c in caches:
        shutil.copy(c, inputs / Path(c).name)


def load_inputs(inputs: Path, modalities: list[str]):
    import numpy as np

    from vmr.model.features import load_features
    from vmr.train.data import TrainData

    z = np.load(inputs / "seqs.npz")
    seqs = np.split(z["items"].astype(np.int64), np.cumsum(z["lens"])[:-1])
    item_ids = (inputs / "item_ids.txt").read_text().splitlines()
    feats, present = {}, {}
    for m in modalities:                      # "text_cls" -> cache beauty_cls.h5, modality text
        pooling = m.split("_", 1)[1]
        f, p, _ = load_features(inputs / f"beauty_{pooling}.h5", item_ids, ["text"])
        feats["text"], present["text"] = f["text"], p["text"]
    return TrainData(item_ids, seqs, feats, present, {})


def run_one(args) -> dict:
    name, sets, inputs, out, seed = args
    import torch

    from vmr.data.splits import target_pairs
    from vmr.evaluate.metrics import evaluate_model
    from vmr.model.config import load_config
    from vmr.model.registry import attach_features, build_model
    from vmr.model.rundir import read_checkpoint
    from vmr.model.towers import TowerView
    from vmr.train.trainer import train

    mods = [s for s in sets if s.startswith("data.modalities")]
    modalities = eval(mods[0].split("=", 1)[1]) if mods else []
    sets = [s for s in sets if not s.startswith("data.modalities")]
    cfg = load_config(None, sets + [f"train.seed={seed}",
                                    f"train.epochs={os.environ.get('EXPLORE_EPOCHS', '200')}",
                                    "train.patience=8",
                                  f"train.max_minutes={os.environ.get('EXPLORE_MINUTES', '0')}",
                                  f"train.threads={os.environ.get('EXPLORE_THREADS', '2')}"])
    data = load_inputs(Path(inputs), modalities)
    run_dir = Path(out) / f"{name}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    summary = train(cfg, data, run_dir, quiet=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ck = read_checkpoint(run_dir / "best.pt")
    model = build_model(ck["model_args"])
    attach_features(model, data.feats, data.present)
    model.load_state_dict(ck["model"])
    hist, tgt, _ = target_pairs(data.sequences, "test")
    test = evaluate_model(TowerView(model.to(dev).eval(), dev), hist, tgt, [5, 10])
    import csv
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    seq_rows = [r for r in rows if r["stage"] == "sequence"]
    res = {"name": name, "seed": seed, "sets": sets, "modalities": modalities,
           "best_epoch": summary.get("best_epoch"), "valid": summary.get("best_valid"),
           "test": {k: v for k, v in test.items() if "@" in k or k == "MRR"},
           "epochs_run": len(seq_rows), "wall_s": round(time.time() - t0, 1),
           "s_per_epoch": round(sum(float(r["seconds"]) for r in seq_rows) / max(len(seq_rows), 1), 3),
           "valid_curve": [float(r.get("valid_NDCG@10") or 0) for r in seq_rows]}
    for f in ("checkpoint.pt", "best.pt", "pretrain.pt"):
        (run_dir / f).unlink(missing_ok=True)
    print(json.dumps({k: res[k] for k in ("name", "seed", "best_epoch", "valid", "test", "s_per_epoch")}),
          flush=True)
    return res


def throughput(inputs: Path) -> dict:
    """Sequences/s of the training step, sasrec vs vmr, fp32 vs bf16 autocast (5 epochs each)."""
    import torch

    from vmr.model.config import load_config
    from vmr.train.trainer import train

    out = {}
    for name, sets, mods in (("sasrec", ["model.kind=sasrec"], []),
                             ("vmr", ["model.kind=vmr", "model.item_id_emb=true"], ["text_cls"])):
        for amp in (False, True):
            cfg = load_config(None, sets + ["train.epochs=3", "train.eval_every=100",
                                            f"train.amp={'true' if amp else 'false'}"])
            data = load_inputs(inputs, mods)
            d = Path("/tmp/tp") / f"{name}-{amp}"
            d.mkdir(parents=True, exist_ok=True)
            torch.cuda.reset_peak_memory_stats()
            train(cfg, data, d, quiet=True)
            import csv
            rows = [r for r in csv.DictReader(open(d / "metrics.csv"))][1:]   # skip warm-up epoch
            sps = sum(float(r["seq_per_s"]) for r in rows) / len(rows)
            sec = sum(float(r["seconds"]) for r in rows) / len(rows)
            out[f"{name}{'-amp' if amp else ''}"] = {
                "seq_per_s": round(sps, 1), "s_per_epoch": round(sec, 3),
                "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
            print(name, amp, out[f"{name}{'-amp' if amp else ''}"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", default=".gpu")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/out/gpu"))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="explore")
    ap.add_argument("--export", nargs="+", default=None, help="DATASET_DIR CACHE...")
    ap.add_argument("--skip-throughput", action="store_true")
    a = ap.parse_args()
    if a.export:
        export(a.export[0], a.export[1:], Path(a.inputs))
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result = {"device": None}
    import torch
    result["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if not a.skip_throughput:
        result["throughput"] = throughput(Path(a.inputs))
    jobs = [(n, s, a.inputs, "/tmp/explore", seed) for seed in a.seeds for n, s in GRIDS[a.grid].items()
            if (a.only is None or n in a.only) and "@" not in n]
    jobs += [(n.split("@")[0], s, a.inputs, "/tmp/explore", int(n.split("@")[1]))
             for n, s in GRIDS[a.grid].items() if "@" in n and (a.only is None or n in a.only)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(a.workers) as pool:
        result["runs"] = []
        for r in pool.imap_unordered(run_one, jobs):
            result["runs"].append(r)
            (out / "explore.json").write_text(json.dumps(result, indent=1))
    result["wall_s"] = round(time.time() - t0, 1)
    (out / "explore.json").write_text(json.dumps(result, indent=1))
    print("total", result["wall_s"], "s")


if __name__ == "__main__":
    main()
