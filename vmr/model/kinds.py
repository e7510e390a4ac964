"""The model kinds, as data: adding a model kind means adding one entry here (and its class).

Imports nothing heavy: the config reads the names from here to check `model.kind`, and
vmr/model/registry.py builds models from the `target` of each entry."""

from __future__ import annotations

from dataclasses import dataclass

from vmr.errors import VmrError


@dataclass(frozen=True)
class ModelKind:
    name: str
    target: str             # "module:Class"
    fit: str                # "gradient" (the trainer's stages) | "counts" (model.fit(prefixes))
    uses_features: bool     # reads the feature cache
    help: str


MODEL_KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("vmr", "vmr.model.recommender:Recommender", "gradient", True,
              "the multimodal recommender (content features + optional item IDs)"),
    ModelKind("sasrec", "vmr.model.recommender:Recommender", "gradient", False,
              "ID-only SASRec baseline (cross-entropy over all items)"),
    ModelKind("pop", "vmr.model.popularity:Popularity", "counts", False,
              "popularity baseline (training-interaction counts)"),
)}


def model_kind(name: str) -> ModelKind:
    if name not in MODEL_KINDS:
        raise VmrError(f"unknown model kind {name!r} (known: {', '.join(MODEL_KINDS)})")
    return MODEL_KINDS[name]
