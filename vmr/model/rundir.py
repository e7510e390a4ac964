"""The run directory, and the one checkpoint schema. Every reader and writer of a run goes
through this module; no other module names a run's files.

    RUN/config.toml          the resolved config (`vmr train --resume` reads it back)
    RUN/run.json             what ran: status, label, data, cache, modalities, identities,
                             precision, best epoch (1-based) and its validation metrics
    RUN/metrics.csv          one row per stage and epoch (1-based), appended as training goes
    RUN/curves.png           training loss and validation metrics per epoch
    RUN/checkpoint.pt        the latest checkpoint (resume)
    RUN/best.pt              the best on validation NDCG@10 (eval, recommend, export)
    RUN/pretrain.pt          the model after item-level pre-training
    RUN/metrics_<split>.json written by `vmr eval` (metrics_<split>@<name>-<fp>.json: zero-shot
                             on another dataset, `vmr eval --data`: its folder's name and the
                             first 8 hex digits of its dataset fingerprint, so two datasets
                             both called `data` never share a file)

A checkpoint is a plain dict (as nanoGPT's): `format`, `model_args` (enough to rebuild the model
with `vmr.model.registry.build_model`, from the checkpoint alone), `model` (state dict),
`config` (the whole resolved config), `stage`, `epoch` (1-based; 0 = before the first),
`vmr_version`, and for resuming `optimizer`, `heads`, `rng`, `best`, `bad_epochs`. It holds only
tensors and plain Python values, and is always read with `torch.load(weights_only=True)`: no
file in a run directory can run code when vmr opens it."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from vmr.errors import VmrError
from vmr.fsio import atomic_write_bytes, one_line, write_json_atomic

CHECKPOINT_FORMAT = 2
CHECKPOINT_KEYS = ("format", "model_args", "model", "config", "stage", "epoch")
CHECKPOINTS = {"best": "best.pt", "last": "checkpoint.pt"}
# cache attributes that change from one extraction to the next without changing the vectors
# "engine" (local or ray) decides where the vectors were computed, not what they are; run.json
# files written before it was volatile still hold it, so comparisons drop it on both sides
VOLATILE_ATTRS = {"vmr_version", "created", "batch_size", "shard", "shard_unit", "dtype",
                  "engine"}


class RunDir:
    """The paths of one run directory and the reading and writing of its JSON files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_toml = self.path / "config.toml"
        self.info = self.path / "run.json"
        self.csv = self.path / "metrics.csv"
        self.curves = self.path / "curves.png"
        self.last = self.path / CHECKPOINTS["last"]
        self.best = self.path / CHECKPOINTS["best"]
        self.pretrain = self.path / "pretrain.pt"

    def metrics_json(self, split: str, target: str | None = None) -> Path:
        """metrics_<split>.json; metrics_<split>@<target>.json for a zero-shot evaluation on
        another dataset (`target`: see `zero_shot_tag`)."""
        return self.path / (f"metrics_{split}@{target}.json" if target else f"metrics_{split}.json")

    @staticmethod
    def ranks_of(metrics_path: str | Path) -> Path:
        """Each user's rank (vmr/evaluate/paired.py) beside a metrics file:
        ranks_<split>[@<target>].parquet beside metrics_<split>[@<target>].json."""
        p = Path(metrics_path)
        return p.with_name("ranks_" + p.name[len("metrics_"):-len(".json")] + ".parquet")

    def find_zero_shot(self, split: str, on: str) -> Path | None:
        """The zero-shot metrics file `vmr report --on ON` means: metrics_<split>@ON.json when
        ON is a full tag (NAME-FINGERPRINT, or a file of older versions named NAME alone),
        else the one metrics_<split>@ON-<fingerprint>.json; None when there is none; a one-line
        error when ON names several datasets of that name."""
        exact = self.metrics_json(split, on)
        if exact.is_file():
            return exact
        head = f"metrics_{split}@{on}-"
        found = sorted(p for p in (self.path.iterdir() if self.path.is_dir() else [])
                       if p.name.startswith(head) and p.name.endswith(".json")
                       and re.fullmatch(r"[0-9a-f]{8}", p.name[len(head):-5]))
        if len(found) > 1:
            tags = ", ".join(p.name[len(f"metrics_{split}@"):-5] for p in found)
            raise VmrError(f"{self.path}: --on {on} names {len(found)} datasets of that name "
                           f"({tags}); give the one meant in full, e.g. --on {tags.split(', ')[0]}")
        return found[0] if found else None

    def holds_run(self) -> bool:
        """Whether a run can be continued from here (its checkpoint.pt exists). A directory
        whose first checkpoint.pt could not be written (a full disk) holds no run: rerunning
        the same command starts it again."""
        return self.last.exists()

    def require(self) -> "RunDir":
        """Check that this is a run directory written by `vmr train`."""
        if not self.path.exists():
            raise VmrError(f"run directory not found: {self.path}")
        if not self.path.is_dir():
            raise VmrError(f"{self.path}: not a directory (a run directory written by "
                           "`vmr train` is expected)")
        if not self.info.is_file():
            raise VmrError(f"{self.path}: not a vmr run directory (no run.json; is it the --out "
                           "of `vmr train`?)")
        return self

    def checkpoint(self, which: str = "best") -> Path:
        """The checkpoint file: 'best', 'last', or 'auto' (best.pt, else checkpoint.pt)."""
        if which == "auto":
            which = "best" if self.best.is_file() else "last"
        path = self.path / CHECKPOINTS[which]
        if not path.is_file():
            other = "last" if which == "best" else "best"
            hint = (f"; try --checkpoint {other}" if (self.path / CHECKPOINTS[other]).is_file()
                    else "; has training finished its first epoch?")
            raise VmrError(f"{self.path}: no checkpoint {path.name}{hint}")
        return path

    def read_info(self) -> dict:
        return read_json_object(self.info)

    def write_info(self, info: dict) -> None:
        write_json_atomic(self.info, info)


def read_json_object(path: Path) -> dict:
    """A JSON object from `path`, or a one-line error naming the file."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VmrError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VmrError(f"{path}: unreadable ({one_line(e)})") from None
    if not isinstance(obj, dict):
        raise VmrError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def save_checkpoint(ckpt: dict, path: Path) -> None:
    """Write a checkpoint atomically (serialised in memory first, so a full disk is a plain
    OSError, not torch's RuntimeError, and the previous file stays intact)."""
    import torch

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(path, buf.getbuffer())


def read_checkpoint_file(path: Path, keys: tuple[str, ...]) -> dict:
    """torch.load with weights_only (no file can run code), as a dict holding `keys`; one-line
    errors for planted, damaged or foreign files."""
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses objects that could run code: a planted or foreign file
        raise VmrError(f"{path}: refused, the file holds objects other than tensors and plain "
                       f"values (not written by vmr, or tampered with): {one_line(e, 120)}") \
            from None
    except Exception as e:  # a truncated, empty or foreign file
        raise VmrError(f"{path}: cannot read it, the file is truncated or damaged "
                       f"({one_line(e)})") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise VmrError(f"{path}: not a vmr file of this kind (missing {', '.join(missing)})")
    bad = [k for k in ("model", "config", "model_args") if k in keys and not (
        isinstance(obj[k], dict) and all(isinstance(x, str) for x in obj[k]))]
    if "model" in keys and not bad and not all(isinstance(v, torch.Tensor)
                                               for v in obj["model"].values()):
        bad = ["model"]
    if bad:
        raise VmrError(f"{path}: damaged, its {bad[0]} entry is not a table of the kind vmr "
                       "writes")
    return obj


def read_checkpoint(path: Path) -> dict:
    """A checkpoint of the schema above, read safely."""
    ckpt = read_checkpoint_file(path, CHECKPOINT_KEYS)
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise VmrError(f"{path}: checkpoint format {ckpt['format']!r}, this vmr reads "
                       f"{CHECKPOINT_FORMAT} (retrain the run with this version)")
    return ckpt


def zero_shot_tag(dataset) -> str:
    """What names a zero-shot evaluation's file: the target folder's name and the first 8 hex
    digits of its fingerprint (`vmr report --on NAME` finds it by the name alone)."""
    return f"{Path(dataset.path).name}-{dataset_fingerprint(dataset)[:8]}"


def dataset_fingerprint(dataset) -> str:
    """sha256 of what a model's indices mean: the item ids in order, and every user's id and
    item sequence (and the new items kept out of training, when there are any). Re-preparing
    that reorders items, changes histories or picks other new items changes it."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    h.update("\n".join(dataset.item_ids).encode("utf-8"))
    h.update(b"\0users\0")
    h.update("\n".join(dataset.user_ids).encode("utf-8"))
    for s in dataset.sequences:
        h.update(np.asarray(s, dtype=np.int64).tobytes())
        h.update(b"|")
    new = list(getattr(dataset, "new_items", None) or [])
    if new:
        h.update(b"\0new\0" + "\n".join(new).encode("utf-8"))
    return h.hexdigest()


def identity_diff(a: dict, b: dict, ignore=()) -> list[str]:
    """The keys on which two feature identities differ, volatile attributes (and `ignore`)
    left out on both sides (a run.json may hold an identity written by an older vmr)."""
    skip = VOLATILE_ATTRS | set(ignore)
    return sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))


def feature_identity(attrs: dict, feats=None, present=None) -> dict:
    """What decides a cached modality's vectors: the cache attributes (encoder, weights,
    settings) and, given the loaded matrix, a sha256 of its values and presence mask."""
    ident = {k: _plain(attrs[k]) for k in sorted(attrs) if k not in VOLATILE_ATTRS}
    if feats is not None:
        import hashlib

        h = hashlib.sha256(feats.numpy().tobytes())
        if present is not None:
            h.update(present.numpy().tobytes())
        ident["values_sha256"] = h.hexdigest()
    return ident


def _plain(v):
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return v
