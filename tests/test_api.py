"""The Python API (vmr/api.py, docs/API.md): the documented example runs as written, the
functions return what the commands print, and importing or calling vmr leaves the process as
it was (random generators, threads, the glibc allocator)."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ENV, REPO, run_cli
from helpers.synth import make_dataset

COLOURS = ["red", "green", "blue", "gold"]


def raw_files(root: Path) -> None:
    """interactions.csv (user,item,time) and items.csv (item,title) from the planted synthetic
    dataset: the title's colour word is the item's topic."""
    make_dataset(root, with_features=False)
    rows = ["user,item,time"]
    for line in (root / "seq.txt").read_text().splitlines():
        user, *items = line.split()
        rows += [f"{user},{item},{t}" for t, item in enumerate(items)]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    items = sorted({r.split(",")[1] for r in rows[1:]})
    titles = [f"{i},{COLOURS[int(i[1])]} {COLOURS[int(i[1])]} thing number {i[3:]}" for i in items]
    (root / "items.csv").write_text("item,title\n" + "\n".join(titles) + "\n")


def python_blocks() -> list[str]:
    text = (REPO / "docs" / "API.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_documented_example_runs(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) == 2
    raw_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(blocks[0], "docs/API.md (example)", "exec"), ns)
    import vmr

    assert isinstance(ns["run"], vmr.Run)
    m = ns["metrics"]
    assert set(m) >= {"HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR", "users", "items"}
    assert m == json.loads((tmp_path / "runs/full/metrics_test.json").read_text())
    assert m["NDCG@10"] > 0.2          # the planted topics are learnable from the titles
    recs = ns["recs"]
    assert [r["rank"] for r in recs] == [1, 2, 3] and {"i0-01", "i0-02"}.isdisjoint(
        r["item"] for r in recs)
    assert recs[0]["title"].startswith("red")      # the history is all topic 0
    assert (tmp_path / "serving" / "user_tower.ts").is_file()
    assert ns["index"] == Path("gallery") / "index.html" and ns["index"].is_file()

    # the serving block needs only torch and numpy, and agrees with run.recommend
    exec(compile(blocks[1], "docs/API.md (serving)", "exec"), ns)
    assert [ns["ids"][j] for j in ns["top"]] == [r["item"] for r in recs]
    assert [float(ns["scores"][j]) for j in ns["top"]] == pytest.approx(
        [r["score"] for r in recs], abs=1e-5)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    import vmr

    root = tmp_path_factory.mktemp("api")
    ds = make_dataset(root, n_users=60, with_features=False)
    return vmr.fit(ds, root / "run", overrides=["model.kind=sasrec", "train.epochs=1",
                                                  "model.d_model=16", "train.device=cpu"])


def test_api_returns_what_the_commands_print(api_run, capsys):
    import vmr

    run = vmr.load(api_run.path)
    metrics = run.evaluate(k=[10, 5])
    code, out, _ = run_cli("eval", "--run", api_run.path, "--k", 5, 10)
    assert code == 0
    assert metrics == json.loads((api_run.path / "metrics_test.json").read_text())
    assert f"NDCG@10  {metrics['NDCG@10']:.4f}" in out
    user = run.dataset.user_ids[2]
    recs = run.recommend(user=user, top=4)
    code, out, _ = run_cli("recommend", "--run", api_run.path, "--user", user, "--top", 4,
                           "--format", "json")
    assert json.loads(out)["items"] == recs
    hist = [run.dataset.item_ids[i] for i in run.dataset.sequences[2]]
    assert run.recommend(history=hist, top=4) == recs


def test_api_failures_are_one_line_vmr_errors(api_run, tmp_path):
    import vmr
    from vmr.errors import VmrError

    cases = [
        (lambda: vmr.prepare(tmp_path / "none.csv", tmp_path / "d", colour="red"),
         "vmr.prepare: unknown option 'colour'"),
        (lambda: vmr.fit(api_run.dataset, overrides={"train.nope": 1}), "train.nope"),
        (lambda: vmr.load(tmp_path / "missing"), "not found"),
        (lambda: api_run.recommend(user="nobody"), "unknown user id 'nobody'"),
        (lambda: api_run.recommend(history=["i0-01", "zzz"]), "history: unknown item id 'zzz'"),
        (lambda: api_run.recommend(), "exactly one of"),
        (lambda: api_run.evaluate(k=0), "positive integers"),
        (lambda: vmr.extract_features(api_run.dataset, "text", colour=1), "unknown option 'colour'"),
    ]
    for call, text in cases:
        with pytest.raises(VmrError) as e:
            call()
        assert text in str(e.value) and "\n" not in str(e.value)


SIDE_EFFECTS = r"""
import json, random, sys
import vmr
assert "torch" not in sys.modules, "import vmr loaded torch"
import numpy as np, torch
import vmr.allocator
random.seed(7); np.random.seed(7); torch.manual_seed(7); torch.set_num_threads(2)
before = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist())
run = vmr.fit(sys.argv[1], sys.argv[2], overrides={"model.kind": "sasrec", "train.epochs": 1,
              "model.d_model": 16, "train.threads": 1, "train.seed": 3})
run.evaluate(k=10)
run.recommend(user=run.dataset.user_ids[0], top=3)
after = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist())
print(json.dumps({"rng_same": before == after, "threads": torch.get_num_threads(),
                  "allocator": vmr.allocator._applied,
                  "cli_loaded": "vmr.cli" in sys.modules}))
"""


def test_import_and_calls_leave_the_process_as_it_was(tmp_path):
    ds = make_dataset(tmp_path, n_users=40, with_features=False)
    r = subprocess.run([sys.executable, "-c", SIDE_EFFECTS, str(ds), str(tmp_path / "run")],
                       capture_output=True, text=True, env=ENV, cwd=str(REPO), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {"rng_same": True, "threads": 2, "allocator": None,
                   "cli_loaded": False}


def test_only_the_cli_sets_the_allocator():
    """keep_freed_memory is process-wide: the commands call it, nothing a library user
    imports does."""
    callers = set()
    for path in (REPO / "vmr").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                    node.func, "attr", None)) == "keep_freed_memory":
                callers.add(path.relative_to(REPO).as_posix())
    assert callers == {"vmr/cli.py"}


def test_the_api_shows_real_signatures_and_docstrings():
    """help() and inspect.signature() of each API function show the function itself, and no API
    name is also a subpackage (vmr.extract, vmr.train are modules and nothing else)."""
    import inspect
    import types

    import vmr
    import vmr.api
    import vmr.extract.runner  # noqa: F401  (binds the subpackages on vmr)
    import vmr.train.session  # noqa: F401

    for name in ("prepare", "extract_features", "fit", "load"):
        f = getattr(vmr, name)
        assert f is getattr(vmr.api, name) and inspect.isfunction(f)
        kinds = {p.kind for p in inspect.signature(f).parameters.values()}
        assert inspect.Parameter.VAR_POSITIONAL not in kinds and len(f.__doc__) > 40
    assert list(inspect.signature(vmr.fit).parameters)[:4] == ["data", "out", "config", "overrides"]
    assert inspect.isclass(vmr.Run)
    for sub in ("extract", "train", "cache", "data", "model", "evaluate", "serve"):
        assert not hasattr(vmr.api, sub) or isinstance(getattr(vmr.api, sub), types.ModuleType)
    assert type(vmr.extract) is types.ModuleType and type(vmr.train) is types.ModuleType
    assert type(sys.modules["vmr"]) is types.ModuleType


def test_no_module_class_is_reassigned():
    """No module of vmr swaps a module's class (the old callable-subpackage trick)."""
    hits = [p.relative_to(REPO).as_posix() for p in (REPO / "vmr").rglob("*.py")
            if "__class__ =" in p.read_text(encoding="utf-8")]
    assert hits == []
