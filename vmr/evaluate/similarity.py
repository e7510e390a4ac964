"""The last-item similarity term: score(u, j) = <u, h_j> + w * cos(x_last, x_j), where x are the
frozen content features the model reads (each modality at unit length, averaged over the
modalities: `ItemEncoder.unit_content`) and x_last is the user's most recent item.

A model's content path learns what an item's features say in the model's own narrow space,
next to IDs that carry each trained item's popularity; it loses how close two items' raw
features are. On Amazon Beauty the next item is often a near twin of the last one (another
shade, size or scent of the same product line), and a plain nearest-neighbour ranking by the
last item's text puts 6 % of test targets in the top 10, new items as often as seen ones, where
the model puts 2 % of the new ones. One weight w, chosen on the validation split after training
(the w in WEIGHTS with the best validation NDCG@10, the smallest on a tie; w = 0 is the model
alone), adds that signal back. It needs no training and no ID: it serves new items exactly as
seen ones.

The term keeps the dual tower: the model appends the unit content to every item vector and
w * (the last item's) to every user vector (vmr/model/recommender.py), so evaluation,
`vmr recommend`, the export and its ANN index score it with one dot product. run.json records it
(`similarity_weight`, and `similarity_weight_valid`: the metric at every w tried); `load_run`
applies it. It is chosen under the run's own protocol (`eval.history`). Where the history is
ranked too, the last item would get the whole weight from its similarity to itself; that share
is taken out of its score (vmr/model/history.py, `ranked_history_terms`), so the term ranks the
other items, past ones included, by their similarity to the last item, and the last item as
the model and its repeat term do."""

from __future__ import annotations

WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
METRIC = "NDCG@10"


def applies(loaded) -> bool:
    """Whether a loaded run gets the term: a model with content features and `eval.similarity`
    on."""
    items = getattr(loaded.model, "items", None)
    return (hasattr(loaded.model, "similarity_weight") and items is not None
            and bool(getattr(items, "modalities", None)) and bool(loaded.config.eval.similarity))


def choose_similarity_weight(loaded, weights=WEIGHTS) -> tuple[float, dict[float, float]]:
    """(the weight with the best validation METRIC under the run's protocol, {weight: METRIC})
    for a loaded run; the model is left with weight 0."""
    import numpy as np

    from vmr.evaluate.metrics import evaluate_model
    from vmr.evaluate.run_eval import split_targets
    from vmr.model.towers import TowerView

    model, d = loaded.model, loaded.model.cfg.d_model
    include = loaded.config.eval.history == "include"
    hist, tgt = split_targets(loaded.dataset, "valid")
    hist = [np.asarray(h, dtype=np.int64) for h in hist]
    model.similarity_weight = 1.0
    try:
        view = TowerView(model, loaded.device, loaded.config.train.amp)
        unit = view.user_vectors(hist)      # [u, x_last]: the weight only scales x_last
        scores = {}
        for w in weights:
            users = unit.clone()
            users[:, d:] *= w
            scores[w] = evaluate_model(view, hist, tgt, [10], users=users,
                                       include_history=include)[METRIC]
    finally:
        model.similarity_weight = 0.0
    best = max(weights, key=lambda w: (scores[w], -w))
    return best, scores
