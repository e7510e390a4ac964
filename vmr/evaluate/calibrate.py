"""What `vmr train` chooses on the validation split after training, in this order, and records
in run.json for `load_run` to apply: the weight of the last-item similarity term
(vmr/evaluate/similarity.py), then, on a dataset with new items, the new-item gain
(vmr/evaluate/new_item_gain.py) with that weight in place."""

from __future__ import annotations

from pathlib import Path


def calibrate_run(run: str | Path) -> dict:
    """Choose what applies to a run's best checkpoint and record it in run.json -> {"similarity":
    (weight, {weight: metric}), "gain": (gain, {gain: metric})}, each key only where it applies
    (an empty dict, and nothing written, where nothing does)."""
    from vmr.evaluate import similarity
    from vmr.evaluate.new_item_gain import choose_new_item_gain
    from vmr.model.loaded import load_run

    loaded = load_run(run, "best")
    chosen: dict = {}
    if similarity.applies(loaded):
        chosen["similarity"] = similarity.choose_similarity_weight(loaded)
        loaded.model.similarity_weight = chosen["similarity"][0]
    items = getattr(loaded.model, "items", None)
    if loaded.dataset.new_items and items is not None and getattr(items, "any_unknown", False):
        chosen["gain"] = choose_new_item_gain(loaded)
    if not chosen:
        return chosen
    info = loaded.run.read_info()
    for key, name in (("similarity", "similarity_weight"), ("gain", "new_item_gain")):
        if key in chosen:
            value, scores = chosen[key]
            info[name] = value
            info[f"{name}_valid"] = {f"{v:g}": m for v, m in scores.items()}
    loaded.run.write_info(info)
    return chosen
