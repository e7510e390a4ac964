"""A post-hoc mixture of target runs with a transfer source (issue 23): each run's scores (as
`vmr eval` ranks them, its similarity term included) plus beta times the source's zero-shot
scores on the run's dataset (the model `vmr eval --run SOURCE --data DATASET` ranks with), beta
chosen on validation NDCG@10 from BETAS (the smallest on a tie). Asks whether the source adds
anything a scratch run lacks, without training: if validation rejects every beta > 0, no
mixing of the two would be chosen either.

    .venv/bin/python bench/source_mixture.py --source SOURCE_RUN --out OUT.json RUN_DIR ...

Every RUN_DIR must be trained on one dataset (the source is loaded on it once). Prints and
writes per run: the beta chosen, validation and test NDCG@10 at beta 0 and at the chosen beta,
and both curves over BETAS. Full ranking, history excluded, one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from common import use_checkout

use_checkout()

BETAS = (0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3)


class Mixture:
    """Two dual towers as one: item vectors side by side, the second user vector times beta."""

    def __init__(self, run, source, beta: float):
        self.run, self.source, self.beta = run, source, beta

    def item_embeddings(self):
        import torch

        return torch.cat([self.run.item_embeddings().float(),
                          self.source.item_embeddings().float()], 1)

    def user_vectors(self, histories):
        import torch

        return torch.cat([self.run.user_vectors(histories).float(),
                          self.beta * self.source.user_vectors(histories).float()], 1)


def curves(run, source) -> dict:
    """{split: [NDCG@10 at each beta]} for the valid and test splits."""
    from vmr.evaluate.metrics import evaluate_model
    from vmr.evaluate.run_eval import split_targets

    out = {}
    for split in ("valid", "test"):
        hist, tgt = split_targets(run.dataset, split)
        out[split] = [evaluate_model(Mixture(run, source, b), hist, tgt, [10])["NDCG@10"]
                      for b in BETAS]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--source", required=True, help="the source run (`vmr train --init-from`'s)")
    ap.add_argument("--out", required=True, help="JSON file for the results")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from vmr.model.cross_catalogue import load_run_on
    from vmr.model.loaded import load_run

    torch.set_num_threads(1)
    t0 = time.time()
    loaded = [load_run(r) for r in a.runs]
    data = {str(r.dataset.path) for r in loaded}
    if len(data) != 1:
        raise SystemExit(f"the runs are trained on {len(data)} datasets; give runs of one")
    source = load_run_on(a.source, data.pop(), None, "best")
    rows = []
    for path, run in zip(a.runs, loaded):
        c = curves(run, source)
        best = max(range(len(BETAS)), key=lambda i: (c["valid"][i], -i))
        rows.append({"run": path, "beta": BETAS[best], "valid": [c["valid"][0], c["valid"][best]],
                     "test": [c["test"][0], c["test"][best]], "curves": c})
        print(f"{path}: beta {BETAS[best]:g}; valid {c['valid'][0]:.4f} -> {c['valid'][best]:.4f}"
              f", test {c['test'][0]:.4f} -> {c['test'][best]:.4f}", flush=True)
    doc = {"source": a.source, "betas": list(BETAS), "rows": rows,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, one thread",
           "seconds": round(time.time() - t0, 1)}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
