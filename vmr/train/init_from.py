"""`vmr train --init-from SOURCE_RUN [--freeze]`: start a run on one catalogue from a run
trained on another with the same feature encoders.

Everything but the item-ID parameters is loaded from the source's best checkpoint (else its last);
the ID table starts fresh (vmr/model/cross_catalogue.py). The run's config starts from the source's
config.toml (so the model's shape and modalities match) without its pre-training stage, then
--config / --set / --seed apply;
the settings that decide the weights' shapes and meaning must stay the source's. `--freeze`
keeps the content parts fixed: the modality projections, modality embeddings, [mask] tokens,
the item encoder's LayerNorm, fusion blocks, output projection and content scale. Under
`model.share = tie` the fusion blocks are the first sequence blocks, so those stay fixed too.
run.json records the source (`init`), and `--resume` keeps a frozen run frozen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vmr.errors import VmrError
from vmr.model.config import apply_override, check_config, config_from_dict, load_config
from vmr.model.config_keys import Config
from vmr.model.kinds import model_kind
from vmr.model.rundir import RunDir, read_checkpoint
from vmr.model.cross_catalogue import check_same_encoders, load_non_id

# model settings that decide what the transferred weights are (shapes and meaning)
ARCH_KEYS = ("kind", "d_model", "n_heads", "n_layers", "item_layers", "ffn_mult", "max_len",
             "share", "id_fusion", "fusion_pool", "early_fusion", "item_norm")
# the content parts of the item encoder that --freeze keeps fixed
FROZEN_PARTS = ("proj", "mod_emb", "mask_tok", "ln", "head", "content_scale")


@dataclass
class Init:
    """Where a run starts from: the source checkpoint's weights (None when resuming: the run's
    own checkpoint holds them) and whether the content parts stay fixed."""
    source: Path
    checkpoint: str
    state: dict | None
    freeze: bool

    def record(self) -> dict:
        """What run.json keeps under `init`."""
        return {"run": str(self.source), "checkpoint": self.checkpoint, "freeze": self.freeze}

    def label_suffix(self) -> str:
        return "-init" + ("-frozen" if self.freeze else "")

    def apply(self, model) -> None:
        """Load the non-ID weights (fresh runs), start the ID rows where the zero-shot model
        has them, and freeze the content parts (--freeze)."""
        if self.state is not None:
            load_non_id(model, self.state, f"--init-from {self.source}")
            start_ids_as_unknown(model)
        if self.freeze:
            freeze_content(model)


def open_source(init_from: str | Path) -> tuple[RunDir, Path, dict]:
    """The source run's directory, checkpoint path (best.pt, else checkpoint.pt) and checkpoint."""
    rd = RunDir(init_from)
    if not rd.path.exists():
        raise VmrError(f"--init-from {init_from}: run directory not found")
    rd.require()
    path = rd.checkpoint("auto")
    ckpt = read_checkpoint(path)
    kind = ckpt["model_args"]["kind"]
    if model_kind(kind).trained_by != "gradient":
        raise VmrError(f"--init-from {init_from}: a {kind} run has no weights to start from "
                       "(only its item counts)")
    return rd, path, ckpt


def source_config(init_from: str, config: str | None, overrides: list[str]) -> Config:
    """The new run's config: --config if given, else the source's without its pre-training
    stage (pretrain.epochs = 0: the source's item encoder is already pre-trained, and pre-training
    again, with fresh heads, would move it before the first validated state, which must be the
    zero-shot model); then --set (`--set pretrain.epochs=N` pre-trains on the target anyway)."""
    if config is not None:
        return load_config(config, overrides)
    cfg = config_from_dict(open_source(init_from)[2]["config"])
    cfg.pretrain.epochs = 0
    for item in overrides:
        apply_override(cfg, item)
    check_config(cfg)
    return cfg


def prepare_init(init_from: str, cfg: Config, data, cache: str, freeze: bool) -> Init:
    """Check that the source fits the new run (model settings, encoders, dimensions) and
    return what the trainer applies."""
    rd, path, ckpt = open_source(init_from)
    src = ckpt["model_args"]
    where = f"--init-from {rd.path}"
    for key in ARCH_KEYS:
        a, b = src["config"].get(key), getattr(cfg.model, key)
        if a != b:
            raise VmrError(f"{where}: model.{key} is {a!r} there but {b!r} here; a transferred "
                           f"model keeps the source's shape (drop --set model.{key})")
    if model_kind(cfg.model.kind).uses_features:
        check_same_encoders(f"{where}", rd.read_info().get("features") or {}, src["dims"],
                            cache, data.feature_attrs, data.dims)
    if freeze and not model_kind(cfg.model.kind).uses_features:
        raise VmrError(f"--freeze: a {cfg.model.kind} model has no content encoder to keep fixed")
    return Init(rd.path.resolve(), path.name, ckpt["model"], freeze)


def resumed_init(record: dict | None) -> Init | None:
    """A transferred run being resumed: no weights to load (its checkpoint has them), but a
    frozen run stays frozen."""
    if not isinstance(record, dict) or "run" not in record:
        return None
    return Init(Path(record["run"]), str(record.get("checkpoint", "")), None,
                bool(record.get("freeze")))


def start_ids_as_unknown(model) -> None:
    """A transferred run's ID rows start as the zero-shot model scores unknown items: zero, or
    the source's learned unknown vector (model.id_dropout). The run's first state is then the
    zero-shot model itself (validated as epoch 0), and fine-tuning starts from there instead of
    from content plus random noise."""
    import torch

    items = getattr(model, "items", None)
    if items is None or getattr(items, "id_emb", None) is None:
        return
    with torch.no_grad():
        unk = items.unk_id if items.unk_id is not None else None
        items.id_emb.weight.copy_(unk.expand_as(items.id_emb.weight) if unk is not None
                                  else torch.zeros_like(items.id_emb.weight))


def content_parts(model) -> list[tuple[str, list]]:
    """(name, parameters) of the item encoder's content parts, the ones --freeze keeps fixed."""
    import torch

    items = getattr(model, "items", None)
    if items is None:
        raise VmrError("--freeze: this model has no content encoder to keep fixed")
    parts = [(name, getattr(items, name)) for name in FROZEN_PARTS]
    parts += [(f"blocks.{i}", blk) for i, blk in enumerate(items.blocks[: items.n_blocks])]
    return [(name, [part] if isinstance(part, torch.nn.Parameter) else list(part.parameters()))
            for name, part in parts]


def freeze_content(model) -> list[str]:
    """Stop gradients into the item encoder's content parts; returns the parts' names."""
    frozen = []
    for name, params in content_parts(model):
        for p in params:
            p.requires_grad_(False)
        frozen.append(name)
    return frozen
