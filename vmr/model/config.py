"""A run's config: loaded from TOML, overridden with `--set a.b=v`, checked, written back.
The keys and their defaults are the dataclasses of vmr/model/config_keys.py; every key is
documented in docs/MODEL.md ("The config").

Unknown keys and wrongly typed values are errors; so are settings that do not fit together,
including those of the chosen model kind (its `check_config`, vmr/model/kinds.py). The resolved
config is saved into the run directory as `config.toml`, so a run can always be reproduced from
its directory alone."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from pathlib import Path

from vmr.errors import VmrError
from vmr.model.config_keys import Config
from vmr.model.kinds import MODEL_KINDS, model_kind
from vmr.model.losses import SEQUENCE_LOSSES
from vmr.model.objectives import OBJECTIVES

# the values a string key may take; model.kind, model.objective and train.loss: the registered
# kinds, objectives and losses (see `choices`)
CHOICES = {
    ("model", "share"): ("tie", "init", "none"),
    ("model", "id_fusion"): ("token", "residual"),
    ("model", "fusion_pool"): ("max", "mean", "gate"),
    ("model", "untrained_ids"): ("unknown", "own"),
    ("data", "feature_norm"): ("standardize", "center_l2", "l2"),
    ("eval", "history"): ("exclude", "include"),
}


def _coerce(section: str, name: str, value, typ, where: str):
    origin = typing.get_origin(typ)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise VmrError(f"{where}: {section}.{name} must be a list of strings, got {value!r}")
        return list(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise VmrError(f"{where}: {section}.{name} must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise VmrError(f"{where}: {section}.{name} must be an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VmrError(f"{where}: {section}.{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise VmrError(f"{where}: {section}.{name} must be a finite number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise VmrError(f"{where}: {section}.{name} must be a string, got {value!r}")
        allowed = choices(section, name)
        if allowed and value not in allowed:
            raise VmrError(f"{where}: {section}.{name} must be one of {', '.join(allowed)}, "
                           f"got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {typ}")


def choices(section: str, name: str) -> tuple[str, ...] | None:
    """The values a string key may take (None: any), the registries' as they are now."""
    if (section, name) == ("model", "kind"):
        return tuple(MODEL_KINDS)
    if (section, name) == ("model", "objective"):
        return tuple(OBJECTIVES)
    if (section, name) == ("train", "loss"):
        return tuple(SEQUENCE_LOSSES)
    return CHOICES.get((section, name))


def _section_types(section_obj) -> dict[str, type]:
    hints = typing.get_type_hints(type(section_obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(section_obj)}


def apply_dict(cfg: Config, data: dict, where: str) -> Config:
    """Overlay a nested dict (as read from TOML) onto cfg; unknown keys are errors."""
    sections = {f.name for f in dataclasses.fields(cfg)}
    if not isinstance(data, dict):
        raise VmrError(f"{where}: expected a table of config sections")
    for section, values in data.items():
        if section not in sections:
            raise VmrError(f"{where}: unknown config section [{section}] "
                           f"(known: {', '.join(sorted(sections))})")
        if not isinstance(values, dict):
            raise VmrError(f"{where}: [{section}] must be a table of keys")
        obj = getattr(cfg, section)
        types = _section_types(obj)
        for name, value in values.items():
            if name not in types:
                raise VmrError(f"{where}: unknown config key {section}.{name} "
                               f"(known: {', '.join(sorted(types))})")
            setattr(obj, name, _coerce(section, name, value, types[name], where))
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise VmrError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise VmrError(f"{p}: not valid TOML: {e}") from None
        apply_dict(cfg, data, str(p))
    for item in overrides:
        apply_override(cfg, item)
    check_config(cfg)
    return cfg


def apply_override(cfg: Config, item: str) -> None:
    if "=" not in item:
        raise VmrError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=0.002")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key.count(".") != 1:
        raise VmrError(f"--set {item!r}: the key must be SECTION.NAME, e.g. model.d_model")
    section, name = key.split(".")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw                      # a bare word is a string: --set model.kind=sasrec
    apply_dict(cfg, {section: {name: value}}, f"--set {key}")


def check_config(cfg: Config) -> None:
    """Cross-field checks (single values are checked as they are read)."""
    m, t = cfg.model, cfg.train
    if m.d_model <= 0 or m.d_model % m.n_heads:
        raise VmrError(f"model.d_model ({m.d_model}) must be a positive multiple of "
                       f"model.n_heads ({m.n_heads})")
    for name in ("dropout", "item_dropout", "modality_dropout", "id_dropout"):
        if not 0 <= getattr(m, name) < 1:
            raise VmrError(f"model.{name} must be in [0, 1), got {getattr(m, name)}")
    model_kind(m.kind).check_config(cfg)      # what only this kind requires
    if not 0 < m.mask_rate < 1:
        raise VmrError(f"model.mask_rate must be in (0, 1), got {m.mask_rate}")
    if m.max_len < 2:
        raise VmrError(f"model.max_len must be at least 2, got {m.max_len}")
    check_bounds(cfg)
    for name in ("n_layers", "item_layers", "ffn_mult", "n_heads"):
        if getattr(m, name) < 1:
            raise VmrError(f"model.{name} must be at least 1")
    if m.share == "tie" and m.item_layers > m.n_layers:
        raise VmrError("model.share = tie needs model.item_layers <= model.n_layers")
    if m.repeat_item_bias and not m.repeat_bias:
        raise VmrError("model.repeat_item_bias = true needs model.repeat_bias = true")
    if t.batch_size < 1 or t.epochs < 0 or t.lr <= 0:
        raise VmrError("train.batch_size and train.lr must be positive, train.epochs >= 0")
    if not 0 <= t.ema < 1:
        raise VmrError(f"train.ema must be in [0, 1) (0 = off), got {t.ema}")
    if not 0 <= t.anchor < 1:
        raise VmrError(f"train.anchor must be in [0, 1) (0 = off), got {t.anchor}")
    if t.lowrank < 0 or (t.lowrank and t.anchor):
        raise VmrError(f"train.lowrank must be >= 0 (0 = off), got {t.lowrank}, and holds the "
                       "loaded weights near their start on its own: leave train.anchor at 0")
    if t.id_warmup < 0 or t.freeze_epochs < 0 or t.transfer_lr <= 0:
        raise VmrError(f"train.id_warmup ({t.id_warmup}) and train.freeze_epochs "
                       f"({t.freeze_epochs}) must be >= 0, train.transfer_lr positive "
                       f"({t.transfer_lr})")
    for mod in cfg.data.modalities:
        if mod not in ("text", "image", "video"):
            raise VmrError(f"data.modalities: unknown modality {mod!r} (text, image, video)")


# upper bounds on sizes: far above any model vmr trains, far below what would exhaust memory
BOUNDS = {("model", "max_len"): 8192, ("model", "d_model"): 8192, ("model", "n_heads"): 256,
          ("model", "n_layers"): 64, ("model", "item_layers"): 64, ("model", "ffn_mult"): 64,
          ("train", "batch_size"): 1 << 20, ("train", "eval_batch"): 1 << 20,
          ("train", "n_negatives"): 1 << 24, ("pretrain", "batch_size"): 1 << 20,
          ("train", "epochs"): 1_000_000, ("pretrain", "epochs"): 1_000_000}
MAX_WEIGHT_BYTES = 16 << 30     # the weights a config implies (float32), besides the item table
MAX_ATTENTION_BYTES = 64 << 30  # one batch's attention scores (float32)


def check_bounds(cfg: Config) -> None:
    """Sizes within sane bounds, and the memory they imply (weights, one batch's attention
    scores) too: `--set model.max_len=100000000` is refused, not a 30 GiB allocation."""
    for (section, name), top in BOUNDS.items():
        value = getattr(getattr(cfg, section), name)
        if value > top:
            raise VmrError(f"{section}.{name} = {value} is beyond the supported maximum {top}")
    m, t = cfg.model, cfg.train
    blocks = m.n_layers + m.item_layers
    weights = 4 * (m.max_len * m.d_model + blocks * (4 + 2 * m.ffn_mult) * m.d_model ** 2)
    attention = 4 * t.batch_size * m.n_heads * m.max_len ** 2
    for what, need, top in (("weights", weights, MAX_WEIGHT_BYTES),
                            ("attention scores of one batch", attention, MAX_ATTENTION_BYTES)):
        if need > top:
            raise VmrError(f"model.max_len {m.max_len}, d_model {m.d_model}, n_layers "
                           f"{m.n_layers}, train.batch_size {t.batch_size}: the {what} would "
                           f"take {need / 2**30:.0f} GiB (at most {top >> 30} GiB); "
                           "choose smaller values")


def to_toml(cfg: Config) -> str:
    """Serialise the resolved config (flat tables of scalars/lists of strings)."""
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            if isinstance(v, bool):
                s = "true" if v else "false"
            elif isinstance(v, (int, float)):
                s = repr(v)
            elif isinstance(v, list):
                s = "[" + ", ".join(_toml_str(x) for x in v) + "]"
            else:
                s = _toml_str(v)
            lines.append(f"{k} = {s}")
        lines.append("")
    return "\n".join(lines)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_from_dict(data: dict) -> Config:
    """The config a checkpoint stored. Keys added to vmr since it was written take the value
    that reproduces the model it was trained as (a run without the key had no repeat term)."""
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict):
        old = {"repeat_bias": False, "repeat_item_bias": False, "untrained_ids": "own"}
        data = {**data, "model": {**{k: v for k, v in old.items() if k not in model}, **model}}
    return apply_dict(Config(), data, "checkpoint config")
