"""The model kinds are one place (vmr/model/kinds.py): the recipe of docs/DESIGN.md ("Add a model
kind") tried with a toy kind registered at test time, which then trains, evaluates and reloads
through the real commands; no module compares a kind's name; and the weights keep the names that
checkpoints written before SASRec had its own class carry. And a loss registered at test time
("Add a loss") is the one training uses, and so is an objective ("Add an objective"; the
objectives on their own: tests/test_objectives.py)."""

import ast
import contextlib
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import cli_one_line, run_cli
from helpers.synth import make_dataset
from vmr.model.config import load_config
from vmr.model.config_keys import ModelConfig
from vmr.model.kinds import MODEL_KINDS, model_kind, register
from vmr.model import history
from vmr.model.losses import SEQUENCE_LOSSES, SequenceLoss
from vmr.model.objectives import OBJECTIVES, Objective
from vmr.model.objectives import register as register_objective
from vmr.model.registry import build_model, make_model_args
from vmr.model.sequence import SequenceModel

PKG = Path(__file__).resolve().parent.parent / "vmr"
SET = ["--set", "model.d_model=16", "--set", "train.epochs=2", "--set", "train.device=cpu",
       "--set", "train.threads=1"]


@contextlib.contextmanager
def unregistered(table, cls):
    """`cls` taken out of its registry (vmr.model.named.Named) for the block, then back."""
    table.pop(getattr(cls, table.attr))
    try:
        yield
    finally:
        table.register(cls)


class HashedIDs(SequenceModel):
    """A toy kind: items share ID rows by their index modulo 7 (the recipe's sequential case:
    an item tower under the shared sequence tower)."""

    kind = "toy-hashed"
    help = "items share 7 ID rows (a test's toy)"
    id_keys = ("buckets.weight",)

    def make_item_tower(self, cfg, n_items, dims):
        self.items = None
        self.buckets = nn.Embedding(7, cfg.d_model)

    def item_embeddings(self, idx=None):
        if idx is None:
            idx = torch.arange(self.n_items, device=self.buckets.weight.device)
        return self.buckets(idx % 7)


@pytest.fixture
def toy_kind():
    register(HashedIDs)
    yield HashedIDs
    MODEL_KINDS.pop(HashedIDs.kind)


def test_a_kind_registered_at_test_time_trains_evaluates_and_reloads(tmp_path, toy_kind):
    from vmr.model.loaded import load_run

    ds = make_dataset(tmp_path, n_users=60, length=6)
    run = tmp_path / "toy"
    code, _, err = run_cli("train", "--data", ds, "--out", run, "--set", "model.kind=toy-hashed",
                           *SET)
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == "toy-hashed" and info["label"] == "toy-hashed"
    assert info["best_epoch"] in (1, 2)
    loaded = load_run(run)
    assert type(loaded.model) is HashedIDs
    table = loaded.model.item_embeddings()
    assert torch.equal(table[0], table[7]) and not torch.equal(table[0], table[1])
    code, out, err = run_cli("eval", "--run", str(run), "--k", "10")
    assert code == 0, err
    metrics = json.loads((run / "metrics_test.json").read_text())
    assert 0 <= metrics["NDCG@10"] <= metrics["HR@10"] <= 1 and metrics["users"] == 60


def test_an_unregistered_kind_is_refused_and_the_kinds_own_checks_apply(toy_kind):
    with unregistered(MODEL_KINDS, toy_kind), pytest.raises(
            Exception, match="model.kind must be one of vmr, sasrec, pop, got"):
        load_config(overrides=["model.kind=toy-hashed"])
    assert load_config(overrides=["model.kind=toy-hashed"]).model.kind == "toy-hashed"
    # the base class's check: only a content encoder with item IDs can drop them
    with pytest.raises(Exception, match="model.id_dropout = 0.1 needs model.kind = vmr"):
        load_config(overrides=["model.kind=toy-hashed", "model.id_dropout=0.1"])


def test_unknown_kind_on_the_command_line_is_one_line(tmp_path):
    line = cli_one_line("train", "--data", tmp_path, "--out", tmp_path / "r",
                        "--set", "model.kind=nope")
    assert "model.kind must be one of vmr, sasrec, pop" in line


def _kind_comparisons(source: str) -> list[str]:
    """Comparisons of something named *kind* with a registered kind's name (or a tuple of them)."""
    names = set(MODEL_KINDS)
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        consts = [o for o in operands if isinstance(o, ast.Constant) and o.value in names
                  or isinstance(o, (ast.Tuple, ast.List, ast.Set)) and any(
                      isinstance(e, ast.Constant) and e.value in names for e in o.elts)]
        if consts and any("kind" in ast.unparse(o) for o in operands if o not in consts):
            found.append(ast.unparse(node))
    return found


def test_no_module_compares_a_model_kinds_name():
    bad = {p.relative_to(PKG).as_posix(): hits for p in sorted(PKG.rglob("*.py"))
           if (hits := _kind_comparisons(p.read_text(encoding="utf-8")))}
    assert bad == {}, "ask the kind's class (vmr/model/base.py) instead"
    # the check itself finds the forms it looks for
    planted = 'if cfg.model.kind == "vmr" or args["kind"] in ("sasrec", "pop") or kind != "x": pass'
    assert _kind_comparisons(planted) == ["cfg.model.kind == 'vmr'",
                                          "args['kind'] in ('sasrec', 'pop')"]


def _block(prefix):
    return [f"{prefix}.{part}.{w}" for part in ("qkv", "out", "ln1", "ff1", "ff2", "ln2")
            for w in ("weight", "bias")]


# The weights' names, in order (the optimizer's state follows the parameters' order), of the
# checkpoints written while SASRec was a branch of one Recommender class (main at d6db5ea; d_model
# 8, one block each, text features): a checkpoint of then must load into the classes of now.
OLD_PARAMETERS = {
    "sasrec": ["repeat", *_block("seq_blocks.0"), "item_table.weight", "seq.mask_emb",
               "seq.pos.weight", "seq.ln.weight", "seq.ln.bias"],
    "vmr": ["repeat", *_block("seq_blocks.0"), "items.mod_emb", "items.mask_tok",
            "items.content_scale", "items.proj.text.weight", "items.proj.text.bias",
            "items.id_emb.weight", "items.ln.weight", "items.ln.bias", "items.head.weight",
            "items.head.bias", "seq.mask_emb", "seq.pos.weight", "seq.ln.weight", "seq.ln.bias"],
}
OLD_STATE = {   # the state dict also names the shared blocks where they are shared
    "sasrec": OLD_PARAMETERS["sasrec"] + _block("seq.blocks.0"),
    "vmr": OLD_PARAMETERS["vmr"][:21] + _block("items.blocks.0") + OLD_PARAMETERS["vmr"][21:]
    + _block("seq.blocks.0"),
}


@pytest.mark.parametrize("kind", ["sasrec", "vmr"])
def test_weights_keep_their_names_and_order(kind):
    cfg = ModelConfig(kind=kind, d_model=8, n_heads=2, n_layers=1, item_layers=1)
    model = build_model(make_model_args(cfg, 5, {"text": 4}))
    assert type(model) is model_kind(kind)
    assert [n for n, _ in model.named_parameters()] == OLD_PARAMETERS[kind]
    assert list(model.state_dict()) == OLD_STATE[kind]
    # a state dict of these names loads strictly into a model initialised otherwise
    state = model.state_dict()
    torch.manual_seed(1)
    fresh = build_model(make_model_args(cfg, 5, {"text": 4}))
    assert not torch.equal(fresh.state_dict()["seq.pos.weight"], state["seq.pos.weight"])
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


class PlainSoftmax(SequenceLoss):
    """A toy loss (the recipe of docs/DESIGN.md, "Add a loss"): the full softmax written with
    F.cross_entropy, no repeat term; counts its calls."""

    calls = 0

    def __call__(self, model, inp, tgt, replace_mask, neg_idx=None):
        PlainSoftmax.calls += 1
        sel = tgt >= 0
        table = model.item_embeddings()
        out = model.encode(inp, table, replace_mask)[sel]
        return F.cross_entropy(model.logits(out, table), tgt[sel])


def test_a_loss_registered_at_test_time_is_what_training_uses(tmp_path, monkeypatch):
    monkeypatch.setitem(SEQUENCE_LOSSES, "toy-plain", PlainSoftmax)
    ds = make_dataset(tmp_path, n_users=60, length=6)
    code, _, err = run_cli("train", "--data", ds, "--out", tmp_path / "r", "--set",
                           "model.kind=sasrec", "--set", "train.loss=toy-plain", *SET)
    assert code == 0, err
    assert PlainSoftmax.calls > 0
    assert load_config(overrides=["train.loss=toy-plain"]).train.loss == "toy-plain"
    monkeypatch.delitem(SEQUENCE_LOSSES, "toy-plain")
    with pytest.raises(Exception, match="train.loss must be one of full, sampled, got"):
        load_config(overrides=["train.loss=toy-plain"])


class NextFromMask(Objective):
    """A toy objective (the recipe of docs/DESIGN.md, "Add an objective"): causal attention, and
    only a row's last item is a target, read at a [mask] in its place, as at prediction time
    (one slot appended); counts its training batches."""

    name = "toy-next-from-mask"
    help = "the next item read at an appended [mask] (a test's toy)"
    prediction_slots = 1
    batches = 0

    def window(self, max_len):
        return max_len, 2

    def training_batch(self, rows, n_items, device, generator=None):
        NextFromMask.batches += 1
        rm = torch.zeros_like(rows, dtype=torch.bool)
        rm[:, -1] = True
        tgt = torch.full_like(rows, -100)
        tgt[:, -1] = rows[:, -1]
        return rows, rm, tgt

    def fixed_targets(self, rows):
        return float((rows[:, -1] >= 0).sum())

    def repeat_pairs(self, inp, tgt, sel):
        return history.training_pairs(torch.where(sel, tgt, inp), sel, False)


@pytest.fixture
def toy_objective():
    register_objective(NextFromMask)
    yield NextFromMask
    OBJECTIVES.pop(NextFromMask.name)


def test_an_objective_registered_at_test_time_trains_evaluates_and_exports(tmp_path, toy_kind,
                                                                          toy_objective):
    from vmr.model.loaded import load_run

    ds = make_dataset(tmp_path, n_users=60, length=6)
    run = tmp_path / "toy"
    code, _, err = run_cli("train", "--data", ds, "--out", run, "--set", "model.kind=toy-hashed",
                           "--set", "model.objective=toy-next-from-mask", *SET)
    assert code == 0, err
    assert NextFromMask.batches > 0
    assert 'objective = "toy-next-from-mask"' in (run / "config.toml").read_text()
    loaded = load_run(run)
    assert type(loaded.model.seq.objective) is NextFromMask
    code, _, err = run_cli("eval", "--run", str(run), "--k", "10")
    assert code == 0, err
    metrics = json.loads((run / "metrics_test.json").read_text())
    assert 0 <= metrics["NDCG@10"] <= metrics["HR@10"] <= 1 and metrics["users"] == 60
    # the export prepares histories as the objective says: one [mask] slot appended
    code, _, err = run_cli("export", "--run", str(run), "--out", tmp_path / "exp")
    assert code == 0, err
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["user_tower_ts"]["objective"] == "toy-next-from-mask"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # torch.jit's deprecation notice
        tower = torch.jit.load(str(tmp_path / "exp" / "user_tower.ts"))
    table = loaded.model.item_embeddings().detach()
    want = loaded.model.user_vectors(torch.tensor([[3, 4, 0]]), table)
    assert torch.allclose(tower(torch.tensor([[3, 4]])), want, atol=1e-5)
    with unregistered(OBJECTIVES, toy_objective), pytest.raises(
            Exception, match="model.objective must be one of causal, masked, got"):
        load_config(overrides=["model.objective=toy-next-from-mask"])
