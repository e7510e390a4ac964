"""The model kinds: `model.kind` names one of the classes registered here, and every question
that depends on the kind (does it read features, can it be pre-trained, how is it fitted, what
must its config satisfy, how is it built) is asked of that class (vmr/model/base.py), never by
comparing its name.

Adding a kind: a `ModelKind` subclass in a module of its own, and one `register` line below
(docs/DESIGN.md, "Add a model kind")."""

from __future__ import annotations

from vmr.errors import VmrError
from vmr.model.base import ModelKind
from vmr.model.popularity import Popularity
from vmr.model.recommender import Recommender
from vmr.model.sasrec import SASRec

MODEL_KINDS: dict[str, type[ModelKind]] = {}


def register(cls: type[ModelKind]) -> type[ModelKind]:
    """Make `cls` the kind `cls.kind` (a name not taken)."""
    if not cls.kind or cls.kind in MODEL_KINDS:
        raise ValueError(f"model kind {cls.kind!r}: empty or taken")
    MODEL_KINDS[cls.kind] = cls
    return cls


register(Recommender)      # vmr: the multimodal recommender
register(SASRec)           # sasrec: the ID-only baseline
register(Popularity)       # pop: training-interaction counts


def model_kind(name: str) -> type[ModelKind]:
    if name not in MODEL_KINDS:
        raise VmrError(f"unknown model kind {name!r} (known: {', '.join(MODEL_KINDS)})")
    return MODEL_KINDS[name]
