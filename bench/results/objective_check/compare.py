"""Compare two output folders of scenarios.py (before and after a change) file by file.

    python compare.py BEFORE AFTER

- every .pt (checkpoints, pretrain.pt, the exports' user_tower.pt, the probes of the exported
  towers): loaded, walked recursively; every tensor must be torch.equal with the same dtype and
  shape, every other value equal;
- metrics.csv: every column but the timings (seconds, seq_per_s, eval_seconds) identical, as text;
- .json: identical, but for the values of keys that are times or speeds (train_seconds,
  users_per_s, ...: those must exist in both), and with the folders' own paths made neutral;
- .npy: np.array_equal; .safetensors: the same tensors and metadata (the header's metadata
  order varies from one save to the next, so neither its bytes nor manifest.json's sha256 of it
  are compared); .txt, .toml: identical text (the folders' paths made neutral);
- curves.png is not compared (its curves include timings). user_tower.ts is compared by its
  outputs (the probes), not as bytes: the archive is the same from one save to the next of the
  same code, but it holds the scripted and traced code with the source lines it came from
  (debug info), so any edit of vmr/model/sequence.py or vmr/serve/portable.py changes its bytes,
  and with them manifest.json's size and sha256 of it. Those two manifest values are listed
  apart ("ts_archive") and do not fail the comparison.
Exits 1 on any other difference; prints a summary either way."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

TIMING_COLUMNS = {"seconds", "seq_per_s", "eval_seconds"}
VOLATILE_KEYS = {"train_seconds", "seconds", "eval_seconds", "created", "created_at",
                 "exported_at", "time", "timestamp", "elapsed_s", "users_per_s"}
SKIPPED = {".ts", ".png"}


class Tally:
    def __init__(self):
        self.tensors = 0
        self.values = 0
        self.files: dict[str, int] = {}
        self.diffs: list[str] = []

    def file(self, kind: str) -> None:
        self.files[kind] = self.files.get(kind, 0) + 1


def walk(a, b, where: str, t: Tally) -> None:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        t.tensors += 1
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or \
                a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            t.diffs.append(f"{where}: tensors differ")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            t.diffs.append(f"{where}: keys differ {sorted(set(a) ^ set(b))}")
        for k in a:
            if k in b:
                walk(a[k], b[k], f"{where}.{k}", t)
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            t.diffs.append(f"{where}: lengths or types differ")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{where}[{i}]", t)
        return
    t.values += 1
    if type(a) is not type(b) or a != b:
        if not (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)):
            t.diffs.append(f"{where}: {a!r} != {b!r}")


def neutral(text: str, roots: tuple[str, str]) -> str:
    """text with either folder's path (the longer first: one may prefix the other) as <OUT>."""
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root + "/", "<OUT>/")
    return text


def strip_volatile(x, roots: tuple[str, str]):
    """x with volatile keys' values replaced by a marker and the folders' own paths neutral."""
    if isinstance(x, dict):
        out = {k: ("<volatile>" if k in VOLATILE_KEYS else strip_volatile(v, roots))
               for k, v in x.items()}
        st = out.get("files", {}).get("item_embeddings.safetensors") if isinstance(
            out.get("files"), dict) else None
        if isinstance(st, dict) and "sha256" in st:
            st["sha256"] = "<header order varies>"
        return out
    if isinstance(x, list):
        return [strip_volatile(v, roots) for v in x]
    if isinstance(x, str):
        return neutral(x, roots)
    return x


def metrics_rows(path: Path) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def compare_file(rel: str, pa: Path, pb: Path, roots: tuple[str, str], t: Tally) -> None:
    suffix = pa.suffix
    if suffix in SKIPPED:
        t.file(suffix + " (not compared)")
        return
    t.file(suffix if pa.name != "metrics.csv" else "metrics.csv")
    if suffix == ".pt":
        a = torch.load(pa, map_location="cpu", weights_only=False)
        b = torch.load(pb, map_location="cpu", weights_only=False)
        walk(strip_volatile(a, roots), strip_volatile(b, roots), rel, t)
    elif pa.name == "metrics.csv":
        walk(metrics_rows(pa), metrics_rows(pb), rel, t)
    elif suffix == ".json":
        walk(strip_volatile(json.loads(pa.read_text()), roots),
             strip_volatile(json.loads(pb.read_text()), roots), rel, t)
    elif suffix == ".npy":
        if not np.array_equal(np.load(pa), np.load(pb)):
            t.diffs.append(f"{rel}: arrays differ")
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(pa, "pt") as fa, safe_open(pb, "pt") as fb:
            walk(dict(sorted(fa.metadata().items())), dict(sorted(fb.metadata().items())),
                 rel + ".metadata", t)
            walk({k: fa.get_tensor(k) for k in sorted(fa.keys())},
                 {k: fb.get_tensor(k) for k in sorted(fb.keys())}, rel, t)
    else:
        if neutral(pa.read_text(), roots) != neutral(pb.read_text(), roots):
            t.diffs.append(f"{rel}: text differs")


def main(before: Path, after: Path) -> int:
    t = Tally()
    roots = (str(before.resolve()), str(after.resolve()))
    names_a = {p.relative_to(before).as_posix() for p in before.rglob("*") if p.is_file()
               and not p.relative_to(before).as_posix().startswith("data/")}
    names_b = {p.relative_to(after).as_posix() for p in after.rglob("*") if p.is_file()
               and not p.relative_to(after).as_posix().startswith("data/")}
    for rel in sorted(names_a ^ names_b):
        t.diffs.append(f"{rel}: only in one folder")
    for rel in sorted(names_a & names_b):
        compare_file(rel, before / rel, after / rel, roots, t)
    ts = [d for d in t.diffs if ".files.user_tower.ts." in d]
    diffs = [d for d in t.diffs if d not in ts]
    print(json.dumps({"files": t.files, "tensors_compared": t.tensors,
                      "other_values_compared": t.values, "differences": len(diffs),
                      "ts_archive": len(ts)}, indent=1))
    for d in ts:
        print("TS_ARCHIVE", d)
    for d in diffs[:50]:
        print("DIFF", d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
