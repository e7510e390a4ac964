"""The model kinds: `model.kind` names one of the classes registered here, and every question
that depends on the kind (does it read features, can it be pre-trained, how is it fitted, what
must its config satisfy, how is it built) is asked of that class (vmr/model/base.py), never by
comparing its name.

Adding a kind: a `ModelKind` subclass in a module of its own, and one `register` line below
(docs/DESIGN.md, "Add a model kind")."""

from __future__ import annotations

from vmr.model.base import ModelKind
from vmr.model.named import Named
from vmr.model.popularity import Popularity
from vmr.model.recommender import Recommender
from vmr.model.sasrec import SASRec

MODEL_KINDS = Named("kind", "model kind")
register = MODEL_KINDS.register


register(Recommender)      # vmr: the multimodal recommender
register(SASRec)           # sasrec: the ID-only baseline
register(Popularity)       # pop: training-interaction counts


def model_kind(name: str) -> type[ModelKind]:
    return MODEL_KINDS.lookup(name)
