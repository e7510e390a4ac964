"""`vmr eval` end to end on small real runs (prepare -> train -> eval), checked against a
plain-Python ranking of the same model's scores."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from helpers.runs import ITEMS, build_runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build_runs(tmp_path_factory.mktemp("evalruns"))


def brute_metrics(run: Path, split: str, include_history: bool, ks=(5, 10),
                  checkpoint: str = "best") -> dict:
    """Score every item for every user with the loaded model and rank the target in Python
    (history items, when ranked, with the model's repeat term: the bucket of the steps back
    from the last item to the item's most recent occurrence)."""
    from vmr.model.loaded import load_run

    loaded = load_run(run, checkpoint=checkpoint)
    bias = loaded.history_bias()
    ds = loaded.dataset
    items = loaded.item_embeddings().detach().double().numpy()
    ranks = []
    for seq in ds.sequences:
        cut = {"test": 1, "valid": 2}[split]
        if len(seq) < cut + 1 or (split == "valid" and len(seq) < 3):
            continue
        hist, target = np.asarray(seq[:-cut]), int(seq[-cut])
        u = loaded.user_vectors([hist]).detach().double().numpy()[0]
        scores = (items @ u).astype(np.float32).tolist()
        if include_history and bias is not None:
            for back, j in enumerate(reversed(hist.tolist())):
                if back == list(reversed(hist.tolist())).index(j):    # most recent occurrence
                    scores[j] += float(bias[min(back.bit_length(), 5)])
        skip = set() if include_history else set(hist.tolist())
        ranks.append(1 + sum(1 for j, s in enumerate(scores)
                             if j != target and j not in skip and s >= scores[target]))
    r = np.array(ranks)
    out = {}
    for k in ks:
        out[f"HR@{k}"] = float(np.mean(r <= k))
        out[f"NDCG@{k}"] = float(np.mean(np.where(r <= k, 1 / np.log2(r + 1), 0)))
    out["MRR"] = float(np.mean(1 / r))
    out["users"] = len(r)
    out["items"] = len(ds.item_ids)
    return out


def close(a: dict, b: dict, tol: float = 0.03) -> bool:
    """Metrics agree; float32 vs float64 scoring may flip a near-tie, so allow one user."""
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol for k in a)


@pytest.mark.parametrize("kind", ["pop", "sasrec"])
def test_eval_matches_brute_force_and_writes_json(runs, kind):
    run = runs[kind]
    code, out, err = run_cli("eval", "--run", str(run), "--k", "5", "10")
    assert code == 0, err
    written = json.loads((run / "metrics_test.json").read_text())
    protocol = written.pop("protocol")
    par = written.pop("parallelism")                       # what the ranking ran on, how fast
    assert par["threads"] >= 1 and par["users_per_s"] > 0 and par["source"] in (
        "auto", "OMP_NUM_THREADS")
    by_freq = written.pop("buckets")["frequency"]          # tests/test_cold_items.py checks them
    assert list(by_freq) == ["0", "1-4", "5-19", "20+"]
    assert sum(g["users"] for g in by_freq.values()) == written["users"]
    assert protocol == {"split": "test", "include_history": False, "checkpoint": "best.pt",
                        "ranking": "full", "ties": "against the target", "similarity_weight": 0.0}
    assert list(written) == ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR", "users", "items"]
    assert written["users"] == 45 and written["items"] == len(ITEMS)
    assert close(written, brute_metrics(run, "test", include_history=False))
    assert f"{written['HR@10']:.4f}" in out and "MRR" in out and str(run) in out
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_eval_popularity_ties_count_against_target(runs):
    """Popularity scores tie a lot; ties must not help the target (exact brute-force match)."""
    from vmr.evaluate.metrics import evaluate_model
    from vmr.model.loaded import load_run

    loaded = load_run(runs["pop"])
    pairs = loaded.dataset.split_sequences("test")
    out = evaluate_model(loaded, [h for h, _ in pairs], [t for _, t in pairs], [1, 3],
                         return_ranks=True)
    pop = loaded.item_embeddings()[:, 0].tolist()
    for (h, t), r in zip(pairs, out["ranks"].tolist()):
        skip = set(h.tolist())
        beaten_by = [j for j, s in enumerate(pop) if j != t and j not in skip and s >= pop[t]]
        assert r == 1 + len(beaten_by)


def test_k_option_both_spellings(runs):
    run = runs["sasrec"]
    assert run_cli("eval", "--run", str(run), "--k", "3", "--k", "20", "--k", "1")[0] == 0
    a = json.loads((run / "metrics_test.json").read_text())
    assert run_cli("eval", "--run", str(run), "--k", "20", "1", "3")[0] == 0
    b = json.loads((run / "metrics_test.json").read_text())
    assert a.pop("parallelism")["users_per_s"] > 0 and b.pop("parallelism")     # timings differ
    assert a == b
    assert list(a)[:6] == ["HR@1", "NDCG@1", "HR@3", "NDCG@3", "HR@20", "NDCG@20"]
    assert a["HR@1"] <= a["HR@3"] <= a["HR@20"]


def test_eval_valid_split_include_history_and_last_checkpoint(runs):
    run = runs["sasrec"]
    code, out, err = run_cli("eval", "--run", str(run), "--split", "valid",
                             "--include-history", "--checkpoint", "last")
    assert code == 0, err
    m = json.loads((run / "metrics_valid.json").read_text())
    assert m.pop("protocol") == {"split": "valid", "include_history": True,
                                 "checkpoint": "checkpoint.pt", "ranking": "full",
                                 "ties": "against the target", "similarity_weight": 0.0}
    assert m.pop("buckets")["edges"] == [1, 5, 20]
    m.pop("parallelism")
    assert close(m, brute_metrics(run, "valid", include_history=True, checkpoint="last"))
    assert "history included" in out and "checkpoint.pt" in out


def test_eval_errors_are_one_line(runs, tmp_path):
    code, out, err = run_cli("eval", "--run", str(tmp_path / "nope"))
    assert code == 1 and err.startswith("error: run directory not found") and err.count("\n") == 1
    code, _, err = run_cli("eval", "--run", str(runs["data"]))
    assert code == 1 and "not a vmr run directory" in err and err.count("\n") == 1
    half = tmp_path / "half"
    half.mkdir()
    (half / "run.json").write_text((runs["sasrec"] / "run.json").read_text())
    code, _, err = run_cli("eval", "--run", str(half))
    assert code == 1 and "no checkpoint best.pt" in err and "Traceback" not in err
    (half / "checkpoint.pt").write_bytes((runs["sasrec"] / "checkpoint.pt").read_bytes())
    code, _, err = run_cli("eval", "--run", str(half))
    assert code == 1 and "--checkpoint last" in err
    code, _, err = run_cli("eval", "--run", str(runs["sasrec"]), "--k", "0")
    assert code != 0 and "--k" in err


def test_eval_valid_reproduces_the_trainers_best_validation(runs):
    """The trainer (TrainData sequences) and `vmr eval` (the prepared Dataset's split column)
    select the same valid pairs and rank them in the same precision: the numbers agree."""
    run = runs["sasrec"]
    code, _, err = run_cli("eval", "--run", str(run), "--split", "valid", "--k", "5", "10")
    assert code == 0, err
    got = json.loads((run / "metrics_valid.json").read_text())
    best = json.loads((run / "run.json").read_text())["best_valid"]
    for k in ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR"):
        assert got[k] == pytest.approx(best[k], abs=1e-9), k
