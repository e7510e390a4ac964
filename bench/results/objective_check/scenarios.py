"""Run the objective scenarios of issue 21 ("objectives chosen through one factory") with the vmr
found at CODE (a source tree: PYTHONPATH=CODE) into OUT, on the tests' synthetic dataset.

    python scenarios.py CODE OUT [--data DATA]

Every command runs as `python -m vmr ...` in its own process, one thread (OMP_NUM_THREADS=1,
train.threads=1), on CPU. The dataset is built once (tests/helpers/synth.make_dataset of the
tree at CODE) into DATA (default OUT/data); pass the same --data to both trees so that the runs
read the very same files. compare.py then compares two OUT folders."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

FAST = ["model.d_model=16", "model.n_heads=2", "model.n_layers=1", "model.item_layers=1",
        "train.batch_size=32", "train.threads=1", "train.device=cpu", "model.max_len=6",
        "train.patience=100"]

# name -> the --set overrides of a training run
TRAININGS = {
    "vmr_causal_pretrain": ["model.kind=vmr", "pretrain.epochs=2", "train.epochs=3"],
    "vmr_masked": ["model.kind=vmr", "model.objective=masked", "pretrain.epochs=1",
                   "train.epochs=3"],
    "sasrec_causal": ["model.kind=sasrec", "train.epochs=3"],
    "sasrec_masked": ["model.kind=sasrec", "model.objective=masked", "train.epochs=3"],
    "vmr_masked_sampled": ["model.kind=vmr", "model.objective=masked", "train.loss=sampled",
                           "train.n_negatives=16", "model.repeat_item_bias=true",
                           "train.epochs=3"],
    "sasrec_causal_sampled_f32": ["model.kind=sasrec", "train.loss=sampled",
                                  "train.n_negatives=16", "model.repeat_item_bias=true",
                                  "train.amp=false", "train.epochs=2"],
    "vmr_masked_resumed": ["model.kind=vmr", "model.objective=masked", "train.epochs=2"],
}
EVALUATED = ["vmr_causal_pretrain", "vmr_masked", "sasrec_masked"]
EXPORTED = ["vmr_masked", "sasrec_masked", "sasrec_causal", "sasrec_causal_sampled_f32"]

# run in the tree under test: the exported towers (TorchScript and Export) on histories of
# every length, written as tensors
PROBE = r"""
import json, sys
import torch
from vmr.serve.export import load_export
d = sys.argv[1]
exp = load_export(d)
ids = open(d + "/item_ids.txt", encoding="utf-8").read().split("\n")[:-1]
hist = [ids[(7 * k + 3) % len(ids): (7 * k + 3) % len(ids) + k] for k in range(0, 12)]
hist = [h for h in hist if h]
out = {"export_user_vectors": torch.from_numpy(exp.user_vectors(hist))}
tower = torch.jit.load(d + "/user_tower.ts")
index = {x: i for i, x in enumerate(ids)}
rows = [[index[x] for x in h] for h in hist]
with torch.no_grad():
    out["ts_one_by_one"] = torch.cat([tower(torch.tensor([r])) for r in rows])
    width = max(len(r) for r in rows)
    out["ts_batch"] = tower(torch.tensor([[-1] * (width - len(r)) + r for r in rows]))
torch.save(out, sys.argv[2])
"""


def vmr(code: Path, cwd: Path, *args) -> str:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    r = subprocess.run([sys.executable, *args], cwd=str(cwd), env=env, capture_output=True,
                       text=True, timeout=1200)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, args))}\n{r.stderr[-3000:]}")
    return r.stdout


def build_data(code: Path, data: Path) -> Path:
    if (data / "ds").exists():
        return data / "ds"
    vmr(code, data.parent, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
        "from helpers.synth import make_dataset; from pathlib import Path; "
        "make_dataset(Path(sys.argv[2]), n_users=120)", str(code / "tests"), str(data))
    return data / "ds"


def train(code: Path, out: Path, ds: Path, name: str, sets: list[str], *extra) -> Path:
    run = out / "runs" / name
    args = ["-m", "vmr", "train", "--data", str(ds), "--out", str(run), *extra]
    for s in FAST + sets:
        args += ["--set", s]
    vmr(code, out, *args)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("code", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=None)
    a = ap.parse_args()
    code, out = a.code.resolve(), a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    where = vmr(code, out, "-c", "import vmr; print(vmr.__file__)").strip()
    assert where.startswith(str(code)), where
    ds = build_data(code, (a.data or out / "data").resolve())
    runs = {name: train(code, out, ds, name, sets) for name, sets in TRAININGS.items()}
    # resume: two epochs, then on to four from the last checkpoint
    vmr(code, out, "-m", "vmr", "train", "--data", str(ds), "--out",
        str(runs["vmr_masked_resumed"]), "--resume", "--set", "train.epochs=4")
    results = out / "results"
    results.mkdir(exist_ok=True)
    for name in EVALUATED:
        for protocol in ("--include-history", "--exclude-history"):
            for split in ("test", "valid"):
                vmr(code, out, "-m", "vmr", "eval", "--run", str(runs[name]), "--k", "5", "10",
                    "--split", split, protocol)
                shutil.copy(runs[name] / f"metrics_{split}.json",
                            results / f"eval_{name}_{split}{protocol[1:]}.json")
        rec = vmr(code, out, "-m", "vmr", "recommend", "--run", str(runs[name]), "--user",
                  "u003", "--top", "10", "--format", "json")
        (results / f"recommend_{name}.json").write_text(rec)
    for name in EXPORTED:
        exp = out / "exports" / name
        vmr(code, out, "-m", "vmr", "export", "--run", str(runs[name]), "--out", str(exp))
        vmr(code, out, "-c", PROBE, str(exp), str(results / f"export_probe_{name}.pt"))
    print(json.dumps({"out": str(out), "runs": sorted(runs)}))


if __name__ == "__main__":
    main()
