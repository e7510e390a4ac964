"""The keys of a run's config, as dataclasses: every key with its default and a short comment
(docs/MODEL.md documents each). A leaf: the model classes read their settings from these, and
vmr/model/config.py loads, checks and writes them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    kind: str = "vmr"            # a kind registered in vmr/model/kinds.py (vmr, sasrec, pop)
    d_model: int = 128           # width of every token (modality tokens and sequence positions)
    n_heads: int = 2
    n_layers: int = 2            # transformer blocks of the sequence encoder
    item_layers: int = 1         # transformer blocks of the item (modality-fusion) encoder
    ffn_mult: int = 4            # feed-forward width = ffn_mult * d_model
    dropout: float = 0.5         # dropout on embeddings, residual branches and attention weights
    max_len: int = 50            # keep the last N items of a history
    share: str = "tie"           # item/sequence transformer blocks: tie | init | none
    item_id_emb: bool = True     # learn a per-item ID embedding besides the content
    id_fusion: str = "residual"  # token: ID added to each modality token | residual: to the fused output
    id_dropout: float = 0.0      # training: chance to replace an item's ID by a learned "unknown" vector
    # items with no training interaction: unknown (scored from content) | own (untrained ID row)
    untrained_ids: str = "unknown"
    item_dropout: float = 0.1    # dropout inside the item encoder (tokens and its blocks)
    item_norm: bool = True       # L2-normalise the projected modality tokens before pooling
    fusion_pool: str = "max"     # pool over the modality tokens: max (paper eq. 3) | mean | gate
    early_fusion: bool = False   # sum the modality tokens into one before the fusion transformer
    modality_dropout: float = 0.0  # sequence stage: chance to hide each present modality of an item
    objective: str = "causal"    # causal (next item at every position) | masked (paper 3.2.3)
    mask_rate: float = 0.2       # masked objective: share of positions that become targets
    temperature: float = 0.1     # >0: L2-normalise user vectors and divide logits by it; 0: plain dot product
    repeat_bias: bool = True     # learn a score term for items already in the history, by recency
    repeat_item_bias: bool = False  # with repeat_bias: plus a learned term per item (repeat-prone items)


@dataclass
class PretrainConfig:
    epochs: int = 0              # item-level pre-training epochs (0 = no pre-training stage)
    batch_size: int = 512
    lr: float = 1e-3
    w_pwc: float = 1.0           # pair-wise contrastive (visual vs text), symmetric InfoNCE
    w_pwm: float = 1.0           # pair-wise matching head with hard negatives, BCE
    w_i: float = 1.0             # fused view vs visual-only view (VALOR-style grouping)
    w_s: float = 1.0             # fused view vs text-only view
    w_is: float = 1.0            # fused view vs itself under dropout + random modality masking
    modality_drop: float = 0.3   # L_{I-S}: probability of masking each present modality per view


@dataclass
class TrainConfig:
    epochs: int = 200            # upper bound; early stopping usually ends sooner
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema: float = 0.0             # >0: validate and keep a moving average of the weights, this decay per step
    # staged: the first N sequence epochs leave the item-ID rows at their start (zero after
    # --init-from) and train the content side only; the IDs join from epoch N+1
    id_warmup: int = 0
    transfer_lr: float = 1.0     # --init-from: lr multiplier for the weights loaded from the source
    freeze_epochs: int = 0       # --init-from: the content parts --freeze fixes stay fixed N epochs
    anchor: float = 0.0          # --init-from: pull the loaded weights toward the source's, per step
    lowrank: int = 0             # --init-from: train each loaded weight matrix as start + a rank-r update
    patience: int = 10           # epochs without a better valid NDCG@10 before stopping
    loss: str = "full"           # full (softmax over all items) | sampled (shared sampled negatives)
    n_negatives: int = 1024      # sampled loss: negatives shared across the batch
    eval_every: int = 1          # validate every N epochs
    eval_batch: int = 1024
    seed: int = 42
    device: str = "auto"         # auto | cpu | cuda[:N]
    threads: int = 0             # torch CPU threads (0 = auto: vmr/parallel.py)
    amp: bool = True             # bfloat16 autocast where native (CUDA; CPUs with AVX512-BF16/AMX)
    compile: bool = False        # CUDA only: torch.compile the model
    max_minutes: float = 0.0     # stop after this wall-clock budget (0 = none); the best checkpoint is kept
    tensorboard: bool = False    # also log metrics.csv's rows to RUN/tensorboard/ (vmr[tensorboard])


@dataclass
class DataConfig:
    modalities: list[str] = field(default_factory=list)   # empty = every modality in the cache
    feature_norm: str = "standardize"   # standardize | center_l2 | l2 (vmr/model/features.py)


@dataclass
class EvalConfig:
    # exclude: the user's past items are not ranked (S3-Rec) | include: all items (RecBole)
    history: str = "exclude"
    # after training, choose the weight of the last-item similarity term on validation, under
    # this protocol (vmr/evaluate/similarity.py); false: the model alone
    similarity: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
