"""The Python API: the pipeline as functions (docs/API.md has a worked example).

    ds = vmr.prepare("log.csv", "data/", items="items.csv", text_columns=["title"])
    vmr.extract_features("data/", "text")             # {"cache", "modality", "summary"}
    run = vmr.fit("data/", "runs/full", overrides={"train.epochs": 20})
    run.evaluate(k=(5, 10))                           # the metrics dict; writes metrics_test.json
    run.recommend(user="u1", top=10)                  # [{"rank", "item", "score", "title"}, ...]
    run = vmr.load("runs/full")

Every function does what the command of the same name does and fails the same way (VmrError,
one line). Nothing here changes the process: `vmr.fit` and `vmr.load` restore the random
number generators they found, `vmr.fit`, `vmr.extract_features` and `Run.evaluate` torch's
thread count (each call picks its own: vmr/parallel.py), and the glibc allocator setting of
vmr/allocator.py is left to the command line (`vmr train`, `vmr eval`), which owns its process."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

from vmr.errors import VmrError


# what a field's annotation accepts (the option dataclasses use these few)
_ACCEPTS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
            "list[str]": (list, tuple)}


def _type_error(what: str, name: str, want: str, value) -> TypeError:
    return TypeError(f"{what}: {name} must be {want}, not {type(value).__name__} {value!r:.40}")


def _check_value(what: str, name: str, annotation: str, value) -> None:
    """`value` fits the field's annotation (e.g. "int", "str | None", "list[str] | None"):
    a TypeError naming the argument otherwise (kcore="5" is not silently compared as text)."""
    parts = [p.strip() for p in str(annotation).split("|")]
    if value is None and "None" in parts:
        return
    for p in (p for p in parts if p != "None"):
        types = _ACCEPTS.get(p)
        if types is None:
            return                   # an annotation this check does not know: left alone
        if isinstance(value, bool) and bool not in types:
            continue
        if isinstance(value, types) and (p != "list[str]" or all(isinstance(x, str)
                                                                 for x in value)):
            return
    raise _type_error(what, name, " or ".join(parts), value)


def _options(cls, fixed: dict, given: dict, what: str):
    """cls(**fixed, **given), with a one-line error for an option cls does not have and a
    TypeError naming an option of the wrong type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = [n for n in fields if n not in fixed]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise VmrError(f"{what}: unknown option {unknown[0]!r} (known: {', '.join(known)})")
    for name, value in {**fixed, **given}.items():
        _check_value(what, name, fields[name].type, value)
    return cls(**fixed, **given)


@contextlib.contextmanager
def _keep_threads():
    """torch's thread count as the caller had it, whatever the call chose (vmr/parallel.py)."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _pathlike(value, name: str, what: str, optional: bool = False) -> str | None:
    """A path argument as a string; a TypeError naming the argument for anything else."""
    import os

    if value is None and optional:
        return None
    if isinstance(value, (str, os.PathLike)) and str(value):
        return str(value)
    raise _type_error(what, name, "a path (str or pathlib.Path)", value)


def _positive_int(value, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(what, name, "a positive int", value)
    if value < 1:
        raise VmrError(f"{what}: {name} must be at least 1, got {value}")
    return value


def _device(device, what: str) -> str:
    """A torch device string that exists here: 'cpu', 'cuda', 'cuda:N'."""
    import torch

    if not isinstance(device, str):
        raise _type_error(what, "device", "a str such as 'cpu' or 'cuda:0'", device)
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise VmrError(f"{what}: device {device!r} is not a device (use 'cpu', 'cuda' or "
                       "'cuda:N')") from None
    if dev.type not in ("cpu", "cuda"):
        raise VmrError(f"{what}: device {device!r}: vmr runs on 'cpu' or 'cuda'")
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index or 0) >= torch.cuda.device_count()):
        raise VmrError(f"{what}: device {device!r} is not available here "
                       f"({torch.cuda.device_count()} CUDA devices)")
    return device


def _path(data, what: str = "vmr") -> str:
    """A dataset directory given as a path or as a Dataset."""
    path = getattr(data, "path", data)
    if path is None:
        raise VmrError("this Dataset has no directory; pass the dataset directory instead")
    return _pathlike(path, "data", what)


def prepare(interactions: str | Path, out: str | Path, **options):
    """`vmr prepare`: write the dataset directory `out` and return it loaded (a Dataset).
    Options are PrepareOptions' fields (`vmr prepare --help`): items, text_columns (a list or
    "a,b"), image_column, video_column, fmt, kcore, preset, ..."""
    from vmr.data.dataset import load_dataset
    from vmr.data.prepare import PrepareOptions, prepare_dataset

    if isinstance(options.get("text_columns"), str):
        options["text_columns"] = [c.strip() for c in options["text_columns"].split(",")
                                   if c.strip()]
    for k in ("items", "media_root"):
        options[k] = _pathlike(options.get(k), k, "vmr.prepare", optional=True)
    opts = _options(PrepareOptions, {"interactions": _pathlike(interactions, "interactions",
                                                               "vmr.prepare"),
                                     "out": _pathlike(out, "out", "vmr.prepare")},
                    options, "vmr.prepare")
    prepare_dataset(opts)
    return load_dataset(out)


def extract_features(data, modality: str, **options) -> dict:
    """`vmr extract`: encode every item's `modality` into the feature cache; returns
    {"cache": path, "modality": modality, "summary": the text the command prints}. Options are
    ExtractOptions' fields: model, cache, fps, max_frames, pooling, batch_size, workers, ...,
    engine="ray" with ray_address (docs/SCALE.md)."""
    from vmr.extract.runner import ExtractOptions, run_extract

    if options.get("cache") is not None:
        options["cache"] = _pathlike(options["cache"], "cache", "vmr.extract_features")
    opts = _options(ExtractOptions, {"data": _path(data, "vmr.extract_features"), "modality": modality},
                    options, "vmr.extract_features")
    with _keep_threads():
        summary = run_extract(opts)
    from vmr.cache.read import resolve_cache

    cache = resolve_cache(opts.data, opts.cache)
    return {"cache": str(cache), "modality": modality, "summary": summary}


def _override_list(overrides) -> list[str]:
    """--set strings from a list of "key=value" or a dict {"train.epochs": 3, ...}."""
    if isinstance(overrides, str):
        raise VmrError('overrides: give a list of "section.key=value" strings or a dict')
    if isinstance(overrides, dict):
        out = []
        for k, v in overrides.items():
            text = ("true" if v else "false") if isinstance(v, bool) else (
                v if isinstance(v, (int, float)) else json.dumps(v))
            out.append(f"{k}={text}")
        return out
    return [str(o) for o in overrides]


def fit(data, out: str | Path | None = None, config: str | Path | None = None,
        overrides=(), **kw) -> "Run":
    """`vmr train`: train into the run directory `out` (default runs/<kind>-<time>) and return
    it loaded. `overrides`: ["train.epochs=3", ...] or {"train.epochs": 3}; keyword options are
    TrainRequest's: cache, stage, modalities, seed, resume."""
    from vmr.train.device_rng import rng_state, set_rng_state
    from vmr.train.session import TrainRequest, start_training

    for k in ("cache", "init_from"):
        if kw.get(k) is not None:
            kw[k] = _pathlike(kw[k], k, "vmr.fit")
    req = _options(TrainRequest, {"data": _path(data, "vmr.fit"),
                                  "out": _pathlike(out, "out", "vmr.fit", optional=True),
                                  "config": _pathlike(config, "config", "vmr.fit", True),
                                  "overrides": _override_list(overrides)}, kw, "vmr.fit")
    rng = rng_state()
    try:
        with _keep_threads():
            run_dir = start_training(req)
    finally:                      # training seeds the global generators; give them back
        set_rng_state(rng)
    return load(run_dir)


def load(run_dir: str | Path, checkpoint: str = "auto", device: str = "cpu") -> "Run":
    """A trained run: its best checkpoint ('auto': best.pt, else checkpoint.pt; or 'best',
    'last'), with its dataset and features, checked against what it was trained on."""
    import torch

    from vmr.model.loaded import load_run

    run_dir = _pathlike(run_dir, "run_dir", "vmr.load")
    if checkpoint not in ("auto", "best", "last"):
        raise VmrError(f"checkpoint must be 'auto', 'best' or 'last', got {checkpoint!r}")
    device = _device(device, "vmr.load")
    with torch.random.fork_rng(devices=[]):   # building the model draws initial weights
        return Run(load_run(run_dir, checkpoint, device=device))


class Run:
    """A trained run: `evaluate`, `recommend`, `export`, `gallery`. Attributes: path, config
    (the resolved Config), dataset, info (run.json), checkpoint (the file loaded)."""

    def __init__(self, loaded):
        self._loaded = loaded
        self.path: Path = loaded.run_dir
        self.config = loaded.config
        self.dataset = loaded.dataset
        self.info: dict = loaded.info
        self.checkpoint: Path = loaded.checkpoint

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, kind={self.config.model.kind!r}, " \
               f"checkpoint={self.checkpoint.name!r})"

    def evaluate(self, k=(5, 10), split: str = "test", include_history: bool | None = None,
                 progress: bool = False) -> dict:
        """`vmr eval`: full-ranking HR@k, NDCG@k, MRR (plus users, items, protocol); also
        writes RUN/metrics_<split>.json as the command does. include_history None: the run's
        own protocol (eval.history)."""
        from vmr.evaluate.run_eval import evaluate_run

        if not isinstance(k, (int, list, tuple)):
            raise _type_error("evaluate", "k", "an int or a list of ints", k)
        ks = [k] if isinstance(k, int) else list(k)
        if split not in ("test", "valid"):
            raise VmrError(f"split must be 'test' or 'valid', got {split!r}")
        if not ks or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in ks):
            raise VmrError(f"k must be positive integers, got {k!r}")
        with _keep_threads():
            return evaluate_run(self.path, ks=ks, split=split, include_history=include_history,
                                loaded=self._loaded, progress=progress)

    def recommend(self, user: str | None = None, history=None, top: int = 10,
                  exclude_history: bool = True) -> list[dict]:
        """`vmr recommend`: the top items for a known user (all of their history) or a history
        (item ids, oldest first): [{"rank", "item", "score", "title"}, ...], best first."""
        from vmr.serve.recommend import recommend_for

        if (user is None) == (history is None):
            raise VmrError("give exactly one of user= or history=")
        if user is not None and not isinstance(user, str):
            raise _type_error("recommend", "user", "a str (user ids are strings: '7', not 7)",
                              user)
        if history is not None and not (isinstance(history, str) or (
                isinstance(history, (list, tuple)) and all(isinstance(x, str) for x in history))):
            raise _type_error("recommend", "history", "a list of item id strings (or one "
                              "space-separated str)", history)
        _positive_int(top, "top", "recommend")
        doc = recommend_for(self._loaded, user=user, history=history, top=top,
                            exclude_history=exclude_history, what="history")
        return doc["items"]

    def export(self, out: str | Path, index: str = "exact") -> Path:
        """`vmr export`: item embeddings, user tower (also as TorchScript) into `out`."""
        from vmr.serve.export import export_run

        out = _pathlike(out, "out", "export")
        export_run(self.path, out, index=index)
        return Path(out)

    def gallery(self, out: str | Path, users: int = 5, top: int = 10) -> Path:
        """`vmr gallery`: a static HTML site of `users` users' recommendations; returns the
        path of its index.html."""
        from vmr.serve.gallery import write_gallery

        out = _pathlike(out, "out", "gallery")
        _positive_int(users, "users", "gallery")
        _positive_int(top, "top", "gallery")
        return write_gallery(self.path, out, users=users, top=top, loaded=self._loaded)["index"]

