"""`vmr export`'s portable files: the user tower as TorchScript (user_tower.ts) and the item
embeddings as .npy and .safetensors, used from a fresh Python that cannot import vmr, reproduce
`vmr recommend` exactly for a float32 run (train.amp = false)."""

import json
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import torch

from helpers import run_cli
from helpers.synth import make_dataset

N_USERS = 20

# Runs with `python -I -S`: no environment variables, no user site, no .pth files (the editable
# install's path hook lives in one), so only the virtualenv's packages are importable, not vmr.
OUTSIDE = r"""
import json, sys
sys.path.append(sys.argv[1])
try:
    import vmr
    has_vmr = True
except ImportError:
    has_vmr = False
import numpy as np
import torch
from safetensors.numpy import load_file

d = sys.argv[2]
histories = json.loads(open(sys.argv[3], encoding="utf-8").read())
tower = torch.jit.load(d + "/user_tower.ts")
items_np = np.load(d + "/item_embeddings.npy")
same = bool(np.array_equal(load_file(d + "/item_embeddings.safetensors")["item_embeddings"],
                           items_np))
items = torch.from_numpy(items_np)
ids = open(d + "/item_ids.txt", encoding="utf-8").read().split("\n")[:-1]
index = {x: i for i, x in enumerate(ids)}
top, batch_scores = {}, {}
for user, hist_ids in histories.items():
    h = [index[x] for x in hist_ids]
    with torch.no_grad():
        s = (tower(torch.tensor([h])) @ items.T)[0]
    s[h] = -float("inf")
    order = torch.sort(s, descending=True, stable=True).indices[:10].tolist()
    top[user] = [[ids[j], float(s[j])] for j in order]
# all users in one left-padded batch
width = max(len(h) for h in histories.values())
rows = [[-1] * (width - len(h)) + [index[x] for x in h] for h in histories.values()]
with torch.no_grad():
    sb = tower(torch.tensor(rows)) @ items.T
for (user, hist_ids), row in zip(histories.items(), sb):
    batch_scores[user] = [float(row[index[x]]) for x, _ in top[user]]
print(json.dumps({"has_vmr": has_vmr, "safetensors_equal": same, "top": top,
                  "batch": batch_scores}))
"""


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("portable")
    ds = make_dataset(root, n_users=120)
    run = root / "run"
    code, _, err = run_cli("train", "--data", ds, "--out", run, "--set", "train.amp=false",
                           "--set", "train.epochs=3", "--set", "model.d_model=32",
                           "--set", "model.max_len=6", "--set", "train.device=cpu")
    assert code == 0, err
    return ds, run


def test_torchscript_tower_reproduces_vmr_recommend_without_vmr(float32_run, tmp_path):
    from vmr.data.dataset import load_dataset

    ds_path, run = float32_run
    out = tmp_path / "serving"
    code, stdout, err = run_cli("export", "--run", run, "--out", out)
    assert code == 0, err
    assert "user_tower.ts" in stdout and "note:" not in stdout    # a float32 run: exact
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"user_tower.ts", "item_embeddings.safetensors"} <= set(manifest["files"])
    ts = manifest["user_tower_ts"]
    assert ts["precision"] == ts["run_precision"] == "float32" and ts["max_len"] == 6

    ds = load_dataset(ds_path)
    users = ds.user_ids[:N_USERS]
    histories = {u: [ds.item_ids[i] for i in ds.sequences[k]] for k, u in enumerate(users)}
    assert any(len(h) > 6 for h in histories.values())    # longer than max_len: cut
    hist_file = tmp_path / "histories.json"
    hist_file.write_text(json.dumps(histories))
    purelib = sysconfig.get_paths()["purelib"]
    r = subprocess.run([sys.executable, "-I", "-S", "-c", OUTSIDE, purelib, str(out),
                        str(hist_file)], capture_output=True, text=True, timeout=300,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["has_vmr"] is False          # the files were used without vmr
    assert got["safetensors_equal"] is True

    for user in users:
        code, rec, err = run_cli("recommend", "--run", run, "--user", user, "--top", 10,
                                 "--format", "json")
        assert code == 0, err
        want = [(r["item"], r["score"]) for r in json.loads(rec)["items"]]
        mine = got["top"][user]
        assert [i for i, _ in mine] == [i for i, _ in want], user      # same items, same order
        assert np.allclose([s for _, s in mine], [s for _, s in want], rtol=0, atol=1e-4)
        # one left-padded batch of every user gives the same scores
        assert np.allclose(got["batch"][user], [s for _, s in want], rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind,objective", [("sasrec", "causal"), ("sasrec", "masked"),
                                            ("vmr", "causal"), ("vmr", "masked"),
                                            ("pop", "causal")])
def test_traced_tower_equals_the_model_for_every_history_length(kind, objective):
    """Bit-for-bit what vmr's own tower computes (TowerView, float32): empty histories, one
    item, longer than max_len, and padded batches."""
    from vmr.model.config_keys import ModelConfig
    from vmr.model.kinds import model_kind
    from vmr.model.towers import TowerView
    from vmr.serve.portable import build_user_tower

    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, d_model=16, n_heads=2, max_len=5, objective=objective)
    model = model_kind(kind)(cfg, 30, {"text": 8}).eval()
    if model.uses_features:
        model.items.set_features({"text": torch.randn(30, 8)},
                                 {"text": torch.rand(30) > 0.2})
    view = TowerView(model, torch.device("cpu"), amp=False)
    tower = build_user_tower(model, view.item_embeddings())
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 4, 5, 6, 11):
        h = rng.integers(0, 30, n)
        x = torch.from_numpy(h).view(1, -1) if n else torch.full((1, 2), -1)
        assert torch.equal(tower(x), view.user_vectors([h])), n
    hs = [rng.integers(0, 30, n) for n in (3, 1, 7)]
    batch = torch.full((3, 7), -1, dtype=torch.long)
    for r, h in enumerate(hs):
        batch[r, 7 - len(h):] = torch.from_numpy(h)
    assert torch.allclose(tower(batch), view.user_vectors(hs), atol=1e-5)
