"""The new-item gain. Items that did not exist at training time (the strict new-item protocol,
`vmr prepare --new-items`) are scored from their content alone, next to items whose trained ID
vector adds to their score: their scores come out systematically low, and on Beauty the default
model ranked none of 2,279 new-item test targets in its top 10. One scalar, chosen on the
validation split (the gain with the best validation NDCG@10 over all targets, the smallest on a
tie), multiplies the new items' *candidate* vectors (the model's own columns: not those of the
last-item similarity term, which carry no ID for any item); their vectors as inputs in a history
stay as they are. run.json records it (`new_item_gain`, and `new_item_gain_valid`: the metric at every
gain tried; vmr/evaluate/calibrate.py chooses it after training); `load_run` applies it to
evaluation, recommendation and export."""

from __future__ import annotations

GAINS = tuple(round(1.0 + 0.05 * i, 2) for i in range(11))     # 1.0 .. 1.5
METRIC = "NDCG@10"


def choose_new_item_gain(loaded, gains=GAINS) -> tuple[float, dict[float, float]]:
    """(the gain with the best validation METRIC, {gain: METRIC}) for a loaded run."""
    import numpy as np

    from vmr.evaluate.metrics import evaluate_model
    from vmr.evaluate.run_eval import split_targets
    from vmr.model.towers import TowerView

    hist, tgt = split_targets(loaded.dataset, "valid")
    # the model as loaded: with the similarity weight it carries (chosen before the gain)
    plain = TowerView(loaded.model, loaded.device, loaded.config.train.amp)
    hist = [np.asarray(h, dtype=np.int64) for h in hist]
    users = plain.user_vectors(hist)     # histories never carry the gain: computed once
    include = loaded.config.eval.history == "include"     # the run's own protocol
    scores = {}
    for g in gains:
        scores[g] = evaluate_model(plain.with_gain(g), hist, tgt, [10], users=users,
                                   include_history=include)[METRIC]
    best = max(gains, key=lambda g: (scores[g], -g))
    return best, scores
