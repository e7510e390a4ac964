"""The last-item similarity term (vmr/evaluate/similarity.py): its arithmetic in the dual
tower, its choice on validation after training, and that evaluation, recommendation and the
export all score with it; runs without it score as before."""

import json

import numpy as np
import pytest
import torch

from helpers import cli_one_line, run_cli
from vmr.model.config_keys import ModelConfig
from vmr.model.recommender import Recommender


def _model(seed=0, n=12, dim=8):
    torch.manual_seed(seed)
    m = Recommender(ModelConfig(d_model=16, n_heads=2), n, {"text": dim})
    feats = torch.randn(n, dim)
    present = torch.ones(n, dtype=torch.bool)
    present[3] = False                           # an item without text: no similarity at all
    m.items.set_features({"text": feats}, {"text": present})
    return m.eval(), feats, present


def test_the_term_adds_weight_times_cosine_to_the_last_item():
    m, feats, present = _model()
    seq = torch.tensor([[-1, 4, 7], [2, 5, 3], [-1, -1, -1]])
    with torch.no_grad():
        plain = m.user_vectors(seq, m.item_embeddings()) @ m.item_embeddings().T
        m.similarity_weight = 2.5
        table = m.item_embeddings()
        scores = m.user_vectors(seq, table) @ table.T
    assert table.shape == (12, 16 + 8)
    cos = torch.nn.functional.normalize(feats, dim=1) @ torch.nn.functional.normalize(feats, dim=1).T
    cos[3] = cos[:, 3] = 0.0
    assert torch.allclose(scores[0] - plain[0], 2.5 * cos[7], atol=1e-4)
    assert torch.allclose(scores[1] - plain[1], torch.zeros(12), atol=1e-4)   # last item: no text
    assert torch.allclose(scores[2], plain[2], atol=1e-5)                      # empty history


def _twins(root, n_pairs=60, n_users=120, length=7, seed=0):
    """Items in pairs with (almost) the same features; in every history, each item at an even
    position is followed by its twin, so the validation target (position 5) is always the last
    item's twin."""
    from vmr.data.prepare import PrepareOptions, prepare_dataset
    from vmr.extract.importer import import_features

    rng = np.random.default_rng(seed)
    items = [f"p{k:03d}{s}" for k in range(n_pairs) for s in "ab"]
    lines = []
    for u in range(n_users):
        seq = []
        while len(seq) < length:
            k = int(rng.integers(n_pairs))
            seq += [f"p{k:03d}a", f"p{k:03d}b"]
        lines.append(f"u{u:03d} " + " ".join(seq[:length]))
    root.mkdir(parents=True, exist_ok=True)
    (root / "seq.txt").write_text("\n".join(lines) + "\n")
    out = root / "ds"
    prepare_dataset(PrepareOptions(interactions=str(root / "seq.txt"), out=str(out),
                                   fmt="sequences", kcore=1))
    base = rng.normal(size=(n_pairs, 16))
    feats = np.repeat(base, 2, axis=0) + 0.01 * rng.normal(size=(2 * n_pairs, 16))
    np.save(root / "feat.npy", feats.astype(np.float32))
    (root / "ids.txt").write_text("\n".join(items) + "\n")
    import_features(data=str(out), modality="text", features=str(root / "feat.npy"),
                    ids=str(root / "ids.txt"), dim=None, cache=None, dtype="float32",
                    overwrite=False)
    return out


TINY = ["--set", "model.d_model=16", "--set", "train.device=cpu", "--set", "train.epochs=1"]


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    data = _twins(root)
    run = root / "run"
    code, out, err = run_cli("train", "--data", data, "--out", run, *TINY)
    assert code == 0, err
    return data, run, out


def test_training_chooses_a_weight_on_validation_and_records_it(twin_run):
    _, run, out = twin_run
    info = json.loads((run / "run.json").read_text())
    w = info["similarity_weight"]
    scores = {float(k): v for k, v in info["similarity_weight_valid"].items()}
    assert w > 0 and scores[w] == max(scores.values()) and scores[w] > scores[0.0]
    assert f"last-item similarity weight {w:g}, chosen on validation" in out


def test_eval_recommend_and_export_score_with_the_chosen_weight(twin_run, tmp_path):
    from vmr.model.loaded import load_run
    from vmr.serve.export import load_export

    data, run, _ = twin_run
    info = json.loads((run / "run.json").read_text())
    w0 = info["similarity_weight"]
    code, _, err = run_cli("eval", "--run", run, "--split", "valid", "--k", "10")
    assert code == 0, err
    m = json.loads((run / "metrics_valid.json").read_text())
    assert m["NDCG@10"] == pytest.approx(info["similarity_weight_valid"][f"{info['similarity_weight']:g}"],
                                         abs=1e-6)
    assert m["protocol"]["similarity_weight"] == info["similarity_weight"]
    code, _, err = run_cli("eval", "--run", run, "--split", "valid", "--include-history")
    assert code == 0, err                          # ranking the history too: the term stays
    assert json.loads((run / "metrics_valid.json").read_text())["protocol"]["similarity_weight"] == w0
    code, _, err = run_cli("eval", "--run", run, "--k", "10")
    assert code == 0, err
    code, _, err = run_cli("report", run, "--out", tmp_path / "rep")
    assert code == 0, err
    w = info["similarity_weight"]
    assert f"last-item similarity weight {w:g}" in (tmp_path / "rep" / "report.md").read_text()
    loaded = load_run(run)
    assert loaded.model.similarity_weight == info["similarity_weight"]
    code, _, err = run_cli("export", "--run", run, "--out", tmp_path / "exp")
    assert code == 0, err
    exp = load_export(tmp_path / "exp")
    term = exp.manifest["similarity_term"]
    assert term["weight"] == info["similarity_weight"] and term["columns"] == [16, 32]
    hist = [loaded.dataset.item_ids[i] for i in loaded.dataset.sequences[0][:4]]
    mine = loaded.user_vectors([np.array([loaded.dataset.item_index[x] for x in hist])])
    theirs = exp.user_vectors([hist])
    assert theirs.shape[1] == 16 + 16
    assert np.allclose(mine.numpy(), theirs, atol=1e-4)


def test_without_the_setting_nothing_is_chosen(twin_run, tmp_path):
    data, _, _ = twin_run
    code, out, err = run_cli("train", "--data", data, "--out", tmp_path / "off", *TINY,
                             "--set", "eval.similarity=false")
    assert code == 0, err
    info = json.loads((tmp_path / "off" / "run.json").read_text())
    assert "similarity_weight" not in info and "similarity weight" not in out


def test_with_history_ranked_the_weight_is_chosen_under_that_protocol(twin_run, tmp_path):
    data, _, _ = twin_run
    run = tmp_path / "include"
    code, out, err = run_cli("train", "--data", data, "--out", run, *TINY,
                             "--set", "eval.history=include")
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    w = info["similarity_weight"]
    assert w > 0 and f"last-item similarity weight {w:g}" in out
    code, _, err = run_cli("eval", "--run", run, "--split", "valid", "--k", "10")
    assert code == 0, err                           # the run's protocol: history included
    m = json.loads((run / "metrics_valid.json").read_text())
    assert m["protocol"]["include_history"] and m["protocol"]["similarity_weight"] == w
    assert m["NDCG@10"] == pytest.approx(info["similarity_weight_valid"][f"{w:g}"], abs=1e-6)


def test_history_ranked_the_last_item_gets_nothing_from_itself(twin_run, tmp_path):
    """With the history ranked, every item gets w * cos(last, j) on top of what it scores
    without the term (the repeat term included), except the last item itself."""
    import shutil

    from vmr.model.loaded import load_run
    from vmr.serve.recommend import top_items

    _, run, _ = twin_run
    plain = tmp_path / "plain"
    shutil.copytree(run, plain)
    info = json.loads((plain / "run.json").read_text())
    w = info.pop("similarity_weight")
    (plain / "run.json").write_text(json.dumps(info))
    with_term, without = load_run(run), load_run(plain)
    assert with_term.history_bias() is not None           # the repeat term is there too
    hist = np.asarray(with_term.dataset.sequences[3][:5], dtype=np.int64)
    n = len(with_term.dataset.item_ids)
    got = dict(top_items(with_term, hist, n, exclude_history=False))
    base = dict(top_items(without, hist, n, exclude_history=False))
    unit = with_term.model.items.unit_content().float()
    cos = (unit @ unit[int(hist[-1])]).numpy()
    last = int(hist[-1])
    for j in range(n):
        want = base[j] + (0.0 if j == last else w * float(cos[j]))
        assert got[j] == pytest.approx(want, abs=1e-4), j
    assert cos[last] == pytest.approx(1.0, abs=1e-5)       # what is taken out is the whole w
    # the export's recipe (vmr/serve/export.py) gives the same scores without vmr's ranking code
    from vmr.serve.export import load_export

    code, _, err = run_cli("export", "--run", run, "--out", tmp_path / "exp")
    assert code == 0, err
    exp = load_export(tmp_path / "exp")
    items = np.load(tmp_path / "exp" / "item_embeddings.npy")
    user = exp.user_vectors([[with_term.dataset.item_ids[i] for i in hist]])[0]
    scores = items @ user
    values, (a, b) = exp.manifest["repeat_term"]["values"], exp.manifest["similarity_term"]["columns"]
    for back, j in enumerate(hist[::-1].tolist()):
        if back == hist[::-1].tolist().index(j):                # its most recent occurrence
            scores[j] += values[min(back.bit_length(), 5)]
    scores[last] -= user[a:b] @ items[last, a:b]
    assert np.allclose(scores, [got[j] for j in range(n)], atol=1e-3)


def test_a_bad_weight_in_run_json_is_a_one_line_error(twin_run, tmp_path):
    import shutil

    _, run, _ = twin_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    info = json.loads((copy / "run.json").read_text())
    info["similarity_weight"] = "high"
    (copy / "run.json").write_text(json.dumps(info))
    line = cli_one_line("eval", "--run", copy, "--split", "valid")
    assert "similarity_weight" in line and "run.json" in line
