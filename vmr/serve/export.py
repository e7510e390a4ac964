"""`vmr export`: item embeddings and the user tower of a run, for serving outside vmr.

The export directory holds
- `item_embeddings.npy`  float32 [N, d]; row k is the item on line k of `item_ids.txt`
- `item_ids.txt`         one item id per line (UTF-8)
- `user_tower.pt`        {"format", "kind", "model_args", "config", "model" (state dict)}: tensors
                         and plain values only (loads with torch.load(weights_only=True));
                         `load_export(dir).user_vectors(...)` rebuilds the tower from it
- `user_tower.ts`        the user tower as TorchScript, usable with torch alone (no vmr):
                         LongTensor [B, L] of item indices (line order of item_ids.txt), oldest
                         first, left-padded with -1 -> float32 user vectors [B, d]; the item
                         table is baked in (vmr/serve/portable.py, docs/API.md)
- `item_embeddings.safetensors`  the same matrix as item_embeddings.npy, key "item_embeddings"
                         (written where the safetensors package is installed)
- `index.faiss`          only with --index faiss: an HNSW inner-product index over the rows
- `manifest.json`        what was exported from where, sizes and sha256 of every file.
It is written into a temporary sibling directory and renamed into place, so an interrupted export
leaves the previous export (or none), never a partial one.

Without vmr (the top 10 of a history, by inner product, history items left out):

    import numpy as np, torch
    tower = torch.jit.load("serving/user_tower.ts")
    items = torch.from_numpy(np.load("serving/item_embeddings.npy"))
    ids = open("serving/item_ids.txt", encoding="utf-8").read().split("\n")[:-1]
    hist = [ids.index(i) for i in ("i1", "i2", "i3")]
    scores = (tower(torch.tensor([hist])) @ items.T)[0]
    scores[hist] = -float("inf")
    top = [ids[j] for j in torch.sort(scores, descending=True, stable=True).indices[:10]]

To rank history items too, add manifest.json's `repeat_term` to their scores instead: for the
item r steps back from the last one (its most recent occurrence), values[min(r.bit_length(), 5)]
(plus item_values[j] for item j, when the run learned a term per item); with a
`similarity_term`, also subtract from the last item's score what its columns [a, b) give it
(user[a:b] @ items[last, a:b]).

user_tower.ts runs in float32; it equals `vmr recommend` exactly for float32 runs (train.amp =
false, or no native bfloat16 where the run was trained), and up to bfloat16 rounding for runs
that trained and recommend under bfloat16 autocast (manifest.json: user_tower_ts.run_precision).
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np

from vmr.errors import VmrError
from vmr.fsio import one_line, os_reason, sha256_file
from vmr.serve.outdir import exchange as _exchange  # noqa: F401 (tests swap with it)
from vmr.serve.outdir import check_replaceable, export_entry, legacy_export, write_swapped

FORMAT = 2
KIND = "vmr export"     # manifest.json's "kind": proof that vmr wrote the folder
INDEXES = ("exact", "faiss")
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128


def import_faiss():
    """faiss is the optional extra `ann`; a clear error when it is missing."""
    try:
        import faiss
    except ImportError:
        raise VmrError("--index faiss needs the optional faiss package: "
                       "pip install 'vmr[ann]' (or faiss-cpu)") from None
    return faiss


def build_faiss_index(vectors: np.ndarray):
    """An HNSW graph over the rows for approximate maximum-inner-product search."""
    faiss = import_faiss()
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def _tower_state(loaded) -> dict:
    """The user tower as a plain dict of tensors and values: the checkpoint's model_args and
    weights, enough for `build_model` to rebuild it (read back with weights_only)."""
    ck = loaded.ckpt
    return {"format": FORMAT, "kind": ck["model_args"]["kind"], "model_args": ck["model_args"],
            "config": ck["config"], "model": ck["model"],
            "similarity_weight": float(getattr(loaded.model, "similarity_weight", 0.0))}


def _repeat_term(loaded) -> dict | None:
    """What manifest.json says about the repeat term (vmr/model/history.py), None without one."""
    bias = loaded.history_bias() if hasattr(loaded, "history_bias") else None
    if bias is None:
        return None
    items = loaded.item_repeat_bias() if hasattr(loaded, "item_repeat_bias") else None
    return {"values": [round(float(v), 6) for v in bias.cpu()],
            "item_values": (None if items is None else
                            [round(float(v), 6) for v in items.cpu()]),   # item_ids.txt order
            "bucket": "min(bit_length(r), 5); r = steps back from the history's last item to "
                      "the item's most recent occurrence (0 = the last item)",
            "applies": "added to score(u, j) of every item j in the history, when history items "
                       "are ranked at all"}


def _similarity_term(loaded, dim: int) -> dict | None:
    """What manifest.json says about the last-item similarity term (item embeddings `dim` wide),
    None without one."""
    w = float(getattr(loaded.model, "similarity_weight", 0.0))
    if not w:
        return None
    return {"weight": w, "columns": [loaded.model.cfg.d_model, int(dim)],
            "applies": "inside the inner product: columns [a, b) of item_embeddings hold each "
                       "item's unit content, of a user vector the weight times its last item's; "
                       "when history items are ranked too, subtract from the last history "
                       "item's score what those columns give it from itself (the user vector's "
                       "columns [a, b) times that item's), as the repeat term is added"}


def _embeddings(run_dir: Path):
    """The run loaded on the CPU, its item ids and its item embeddings, checked for export."""
    import torch

    from vmr.model.loaded import load_run

    loaded = load_run(run_dir, "auto", device="cpu")
    item_ids = list(loaded.dataset.item_ids)
    bad = next((i for i in item_ids if "\n" in i or "\r" in i), None)
    if bad is not None:
        raise VmrError(f"item id {bad!r} contains a line break; item_ids.txt cannot hold it")
    with torch.no_grad():
        emb = loaded.item_embeddings().detach().float().cpu().numpy()
    if emb.shape[0] != len(item_ids):
        raise VmrError(f"{run_dir}: the model has {emb.shape[0]} item embeddings but the "
                       f"dataset has {len(item_ids)} items")
    return loaded, item_ids, emb


def _write_export(tmp: Path, loaded, emb: np.ndarray, item_ids: list[str], run_dir: Path,
                  index: str) -> list[str]:
    """Write the export's files into `tmp`, manifest.json last; returns the portable files."""
    import torch

    from vmr._version import __version__

    np.save(tmp / "item_embeddings.npy", np.ascontiguousarray(emb, dtype=np.float32))
    (tmp / "item_ids.txt").write_text("".join(f"{i}\n" for i in item_ids), encoding="utf-8")
    buf = io.BytesIO()  # torch.save to a file hides a full disk in a RuntimeError
    torch.save(_tower_state(loaded), buf)
    (tmp / "user_tower.pt").write_bytes(buf.getbuffer())
    from vmr.serve.portable import tower_manifest, write_portable

    portable = write_portable(loaded, tmp, emb)
    if index == "faiss":
        import_faiss().write_index(build_faiss_index(emb), str(tmp / "index.faiss"))
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(tmp.iterdir())}
    manifest = {
        "kind": KIND, "format": FORMAT, "vmr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": str(run_dir.resolve()), "checkpoint": loaded.checkpoint.name,
        "dataset": str(getattr(loaded.dataset, "path", "") or ""),
        "items": int(emb.shape[0]), "dim": int(emb.shape[1]),
        "score": "inner_product: score(u, j) = <user_vector(u), item_embeddings[j]>",
        "repeat_term": _repeat_term(loaded), "similarity_term": _similarity_term(loaded, emb.shape[1]),
        "user_tower_ts": tower_manifest(loaded),
        "index": ("faiss-hnsw" if index == "faiss" else "exact"),
        "faiss": ({"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION,
                   "efSearch": HNSW_EF_SEARCH} if index == "faiss" else None),
        "files": files,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return portable


def export_run(run: str | Path, out: str | Path, index: str = "exact") -> str:
    """Export a run's item embeddings and user tower to `out` (see the module docstring)."""
    if index not in INDEXES:
        raise VmrError(f"--index: unknown index '{index}' (use {' or '.join(INDEXES)})")
    if index == "faiss":
        import_faiss()  # fail before any work
    out = Path(out)
    check_export_out(out)
    run_dir = Path(run)
    loaded, item_ids, emb = _embeddings(run_dir)
    ckpt_file = loaded.checkpoint.name
    portable = write_swapped(
        out, lambda tmp: _write_export(tmp, loaded, emb, item_ids, run_dir, index),
        check_export_out, f"cannot write export {out}", "export")
    from vmr.serve.portable import run_precision

    note = ("" if run_precision(loaded) == "float32" else
            "\nnote: user_tower.ts runs in float32, the run in bfloat16 autocast: its scores "
            "differ from `vmr recommend`'s by bfloat16 rounding (train with --set train.amp=false "
            "for an exact match)")
    return (f"exported {emb.shape[0]} items (d={emb.shape[1]}) from {run_dir} ({ckpt_file}) to "
            f"{out}: item_embeddings.npy, item_ids.txt, user_tower.pt, {', '.join(portable)}"
            + (", index.faiss" if index == "faiss" else "") + ", manifest.json" + note)


def check_export_out(out: Path) -> None:
    """`--out` must be absent, empty, or an export vmr wrote (vmr/serve/outdir.py)."""
    check_replaceable(out, "manifest.json", KIND, (FORMAT,), export_entry, "vmr export",
                      legacy_export)


class Export:
    """A loaded export: item ids and embeddings, the user tower, and top-k search."""

    def __init__(self, path: str | Path):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"load_export: path must be a str or Path, not {type(path).__name__}")
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        ids_path, emb_path = self._checked("item_ids.txt"), self._checked("item_embeddings.npy")
        try:
            self.item_ids = ids_path.read_text(encoding="utf-8").split("\n")[:-1]
            self.item_embeddings = np.load(emb_path, allow_pickle=False)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise VmrError(f"{self.path}: cannot read the export ({one_line(e)})") from None
        emb = self.item_embeddings
        if emb.ndim != 2 or emb.dtype != np.float32 or emb.shape[0] != len(self.item_ids):
            raise VmrError(f"{emb_path}: {emb.dtype} {tuple(emb.shape)} does not fit "
                           f"{len(self.item_ids)} item ids (float32 [items, d] expected)")
        self.item_index = {x: i for i, x in enumerate(self.item_ids)}
        if len(self.item_index) != len(self.item_ids):
            raise VmrError(f"{ids_path}: an item id appears twice")
        self._tower = None
        self._amp = False        # set from the run's config when the tower is loaded
        self._faiss = None

    def _checked(self, name: str) -> Path:
        """The path of an export file whose size and sha256 match manifest.json's record."""
        path = self.path / name
        rec = self.manifest["files"].get(name)
        if not isinstance(rec, dict):
            raise VmrError(f"{self.path / 'manifest.json'}: does not list {name}")
        if path.is_symlink() or not path.is_file():
            raise VmrError(f"{path}: missing (the export is incomplete; export the run again)")
        try:
            ok = path.stat().st_size == rec.get("bytes") and sha256_file(path) == rec.get("sha256")
        except OSError as e:
            raise VmrError(f"{path}: cannot read it ({os_reason(e)})") from None
        if not ok:
            raise VmrError(f"{path}: its size or sha256 differs from manifest.json's record (the "
                           "file was changed or damaged after export; export the run again)")
        return path

    def user_vectors(self, histories: list[list[str]]) -> np.ndarray:
        """User vectors [B, d] for histories of item ids (oldest first)."""
        import torch

        idx = []
        for h in histories:
            unknown = next((x for x in h if x not in self.item_index), None)
            if unknown is not None:
                raise VmrError(f"unknown item id '{unknown}' (not in {self.path / 'item_ids.txt'})")
            idx.append(np.array([self.item_index[x] for x in h], dtype=np.int64))
        tower = self._load_tower()
        from vmr.model import precision
        from vmr.model.objectives import objective_of
        from vmr.model.towers import pad_histories, trim_padding

        cfg = tower.cfg
        seq = trim_padding(pad_histories(idx, cfg.max_len, objective_of(cfg)))
        with torch.no_grad(), precision.autocast(torch.device("cpu"), self._amp):
            return tower.user_vectors(seq, torch.from_numpy(self.item_embeddings)).float().numpy()

    def _load_tower(self):

        if self._tower is None:
            from vmr.model.config import config_from_dict
            from vmr.model.registry import build_model
            from vmr.model.rundir import read_checkpoint_file

            path = self._checked("user_tower.pt")
            state = read_checkpoint_file(path, ("format", "model_args", "config", "model"))
            if state["format"] != FORMAT:
                raise VmrError(f"{path}: export format {state['format']!r}, this vmr reads "
                               f"{FORMAT} (export the run again)")
            self._amp = config_from_dict(state["config"]).train.amp   # the run's precision
            model = build_model(state["model_args"], str(path))
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as e:
                raise VmrError(f"{path}: the weights do not fit its model_args "
                               f"({str(e).splitlines()[0][:160]})") from None
            weight = state.get("similarity_weight", 0.0)    # vmr/evaluate/similarity.py
            if weight:
                model.similarity_weight = float(weight)
            self._tower = model.eval()
        return self._tower

    def search(self, user_vectors: np.ndarray, k: int, exact: bool | None = None):
        """Top-k (indices [B, k], scores [B, k]) by inner product; faiss when the export has an
        index and exact is not True."""
        q = np.ascontiguousarray(user_vectors, dtype=np.float32)
        k = min(k, len(self.item_ids))
        use_faiss = (self.path / "index.faiss").is_file() if exact is None else not exact
        if use_faiss:
            if self._faiss is None:
                self._faiss = import_faiss().read_index(str(self._checked("index.faiss")))
            scores, idx = self._faiss.search(q, k)
            return idx, scores
        return exact_search(self.item_embeddings, q, k)


def _read_manifest(path: Path) -> dict:
    """manifest.json of an export, checked: a JSON object of vmr's kind and format listing its
    files; one line naming the file otherwise."""
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise VmrError(f"{path}: not a vmr export (no manifest.json)")
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VmrError(f"{mpath}: unreadable ({one_line(e)}); export the run again") from None
    if not isinstance(doc, dict):
        raise VmrError(f"{mpath}: not a vmr export manifest (not a JSON object)")
    if doc.get("format") != FORMAT:
        raise VmrError(f"{mpath}: unknown export format {doc.get('format')!r}")
    if doc.get("kind", KIND) != KIND or not isinstance(doc.get("files"), dict):
        raise VmrError(f"{mpath}: not a vmr export manifest (kind {doc.get('kind')!r}, "
                       "no file list)")
    return doc


def exact_search(items: np.ndarray, queries: np.ndarray, k: int, chunk: int | None = None):
    """Exact maximum-inner-product top-k, chunked over items so that one score block stays
    around 64 M floats: (indices [B, k], scores [B, k]), best first."""
    import torch

    items_t = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    chunk = chunk or max(4096, (1 << 26) // max(1, q.shape[0]))
    best_s = torch.full((q.shape[0], 0), -float("inf"))
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for s in range(0, items_t.shape[0], chunk):
        sc = q @ items_t[s:s + chunk].T
        top = torch.topk(sc, min(k, sc.shape[1]), dim=1)
        cand_s = torch.cat([best_s, top.values], dim=1)
        cand_i = torch.cat([best_i, top.indices + s], dim=1)
        keep = torch.topk(cand_s, min(k, cand_s.shape[1]), dim=1)
        best_s, best_i = keep.values, torch.gather(cand_i, 1, keep.indices)
    return best_i.numpy(), best_s.numpy()


def load_export(path: str | Path) -> Export:
    return Export(path)
