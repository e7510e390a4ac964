"""What the trainer trains on: the dataset's sequences and, for models that read content,
the standardised features of the cache, with the identities run.json records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vmr.cache import read as cache_read
from vmr.data import splits
from vmr.errors import VmrError
from vmr.model.config_keys import Config
from vmr.model.features import load_features
from vmr.model.kinds import model_kind
from vmr.model.rundir import dataset_fingerprint, feature_identity


@dataclass
class TrainData:
    item_ids: list[str]
    sequences: list[np.ndarray]
    feats: dict[str, torch.Tensor]          # standardised float32 [N, d_m] per modality
    present: dict[str, torch.Tensor]        # bool [N] per modality
    feature_attrs: dict[str, dict]
    fingerprint: str = ""                   # vmr.model.rundir.dataset_fingerprint
    new_items: np.ndarray | None = None     # item indices kept out of training (splits.py)
    prefixes: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        self.prefixes = splits.train_prefixes(self.sequences, self.new_items)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.feats.items()}

    def identities(self) -> dict:
        """What run.json records so readers can refuse a changed dataset or cache."""
        return {"dataset_fingerprint": self.fingerprint,
                "features": {m: feature_identity(a, self.feats[m], self.present[m])
                             for m, a in self.feature_attrs.items()}}


def load_train_data(data_dir: str | Path, cache: str | Path | None, cfg: Config) -> TrainData:
    from vmr.data.dataset import load_dataset

    ds = load_dataset(data_dir)
    if model_kind(cfg.model.kind).uses_features:
        from vmr.extract.freshness import check_fresh

        cache_path = cache_read.resolve_cache(data_dir, cache)
        feats, present, attrs = load_features(cache_path, ds.item_ids, cfg.data.modalities or None,
                                              cfg.data.feature_norm)
        check_fresh(data_dir, cache_path, sorted(feats))   # no row made from changed content
    else:
        feats, present, attrs = {}, {}, {}
    seqs = [np.asarray(s, dtype=np.int64) for s in ds.sequences]
    data = TrainData(ds.item_ids, seqs, feats, present, attrs, dataset_fingerprint(ds),
                     ds.new_item_indices())
    check_fits(data, cfg)
    return data


def check_fits(data: TrainData, cfg: Config) -> None:
    if not any(len(p) >= 2 for p in data.prefixes):
        raise VmrError("the training split is empty: no user has 2 or more training items "
                       "(check the dataset's k-core and sequence lengths)")
    if not len(splits.target_pairs(data.sequences, "valid")[1]):
        raise VmrError("the validation split is empty: no user has 3 or more interactions")
    if cfg.train.loss == "sampled" and cfg.train.n_negatives >= len(data.item_ids):
        raise VmrError(f"train.n_negatives ({cfg.train.n_negatives}) must be smaller than the "
                       f"number of items ({len(data.item_ids)}); use train.loss = \"full\"")
