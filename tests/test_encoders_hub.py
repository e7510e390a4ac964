"""Encoders from the local Hugging Face cache: `st:ORG/NAME` and `open_clip:hf-hub:ORG/NAME`.

A tiny hub-style cache is built on disk the way the hub client lays it out
(models--org--name/{blobs/<sha256>, snapshots/<rev>/<file> -> ../../blobs/<sha256>, refs/main}),
holding a tiny BERT sentence-transformers model (seeded random weights, saved with
sentence-transformers' own save) and a tiny open_clip model (seeded random weights as
open_clip_pytorch_model.bin + open_clip_config.json). Random weights: these tests check
resolution, loading and pooling, not what the features mean. The network is cut during loading.
Helpers here are imported by the other test_encoders_* modules."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.media import PY, REPO, TINY_CLIP, write_dataset

from vmr.errors import VmrError
from vmr.extract.encoders import identify, load_encoder
from vmr.fsio import sha256_file

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "lip", "##stick", "a", "long",
         "text", "about", "blue", "nail", "polish", "the", "of", "shampoo", "for", "hair"]
TEXTS = ["red lipstick", "a long text about the blue nail polish of the red lipstick",
         "shampoo for hair"]


def st_modules():
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules
    return modules


def tiny_bert(root: Path, seed: int = 0) -> Path:
    """A plain transformers directory: a 16-d, 1-layer BERT with seeded random weights."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


def tiny_st(root: Path, plain: Path, pooling: str = "mean", dense: int = 0) -> Path:
    """A sentence-transformers directory around `plain`: Transformer -> Pooling(pooling)
    [-> Dense(16 -> dense)] -> Normalize, saved by sentence-transformers itself."""
    import torch
    from sentence_transformers import SentenceTransformer

    m = st_modules()
    mods = [m.Transformer(str(plain), max_seq_length=32), m.Pooling(16, pooling)]
    if dense:
        torch.manual_seed(1)
        mods.append(m.Dense(16, dense))
    mods.append(m.Normalize())
    SentenceTransformer(modules=mods, device="cpu").save(str(root))
    return root


def put_in_hub_cache(cache: Path, repo_id: str, src: Path, rev: str = "abc") -> Path:
    """Copy the files of `src` into a hub-style cache as repository `repo_id`, revision `rev`
    (blobs named by their sha256, snapshot files linking to them, refs/main naming `rev`)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return snap


def tiny_clip_repo(root: Path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> Path:
    """An open_clip hub repository: open_clip_config.json + seeded random weights."""
    import open_clip
    import torch

    root.mkdir(parents=True, exist_ok=True)
    (root / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY_CLIP, "preprocess_cfg": {"mean": list(mean), "std": list(std)}}))
    cfg = root.parent / "vmr-tiny-hub-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    torch.save(open_clip.create_model("vmr-tiny-hub-clip", pretrained=None).state_dict(),
               str(root / "open_clip_pytorch_model.bin"))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Source directories (outside any cache) of the tiny models."""
    base = tmp_path_factory.mktemp("models")
    plain = tiny_bert(base / "plain")
    return {"plain": plain, "st": tiny_st(base / "st", plain),
            "st_dense": tiny_st(base / "st_dense", plain, dense=8),
            "st_cls": tiny_st(base / "st_cls", plain, pooling="cls"),
            "clip": tiny_clip_repo(base / "clip")}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache that huggingface_hub (and so vmr) uses, with the network cut."""
    from huggingface_hub import constants  # reads its environment once, at import

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def no_network(*a, **k):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return cache


def reference(src: Path, texts, pooling: str):
    """[CLS] / masked mean of the last hidden states, computed with transformers directly."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    model = AutoModel.from_pretrained(str(src)).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    if pooling == "cls":
        return h[:, 0].numpy()
    m = batch["attention_mask"].unsqueeze(-1).float()
    return ((h * m).sum(1) / m.sum(1)).numpy()


# ------------------------------------------------------------------------------------ st: hub id
def test_st_hub_id_resolves_offline_with_every_pooling(models, hub):
    snap = put_in_hub_cache(hub, "vmr-test/tiny-bert", models["st"])
    ident = identify("st:vmr-test/tiny-bert", "text")
    assert ident.name == "st:vmr-test/tiny-bert"
    # the blob name stands for the hash: same identity as hashing the weights file itself
    assert ident.weights == "sha256:" + sha256_file(models["st"] / "model.safetensors")
    assert ident.pooling == "cls"  # the default
    # the model's own modules, spelled out
    assert identify("st:vmr-test/tiny-bert", "text", "model").pooling == "model(mean+normalize)"
    want_mean = reference(models["plain"], TEXTS, "mean")
    for pooling, want in [("cls", reference(models["plain"], TEXTS, "cls")), ("mean", want_mean),
                          ("model", want_mean / np.linalg.norm(want_mean, axis=1, keepdims=True))]:
        enc = load_encoder(ident, pooling=pooling)
        assert enc.dim == 16 and enc.max_length == 32
        np.testing.assert_allclose(enc.encode(enc.tokenize(TEXTS)), want, rtol=1e-4, atol=1e-5)
    assert str(snap).startswith(str(hub))


def test_st_model_pooling_runs_the_models_own_modules(models, hub):
    put_in_hub_cache(hub, "vmr-test/dense", models["st_dense"])
    put_in_hub_cache(hub, "vmr-test/cls", models["st_cls"])
    dense = identify("st:vmr-test/dense", "text", "model")
    assert dense.pooling.startswith("model(mean+dense[sha256:") and dense.pooling.endswith(
        "]+normalize)")
    enc = load_encoder(dense)
    f = enc.encode(enc.tokenize(TEXTS))
    assert f.shape == (3, 8) and enc.dim == 8  # the Dense module projects 16 -> 8
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    # same Transformer weights, other pooling config: same weights id, other pooling id
    cls = identify("st:vmr-test/cls", "text", "model")
    assert cls.weights == dense.weights and cls.pooling == "model(cls+normalize)"
    want = reference(models["plain"], TEXTS, "cls")
    got = load_encoder(cls).encode(load_encoder(cls).tokenize(TEXTS))
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-5)


def test_plain_transformers_dir_pools_tokens_and_refuses_model(models, hub):
    ident = identify(f"st:{models['plain']}", "text")
    assert ident.name == "st:plain" and ident.pooling == "cls"
    enc = load_encoder(ident)
    np.testing.assert_allclose(enc.encode(enc.tokenize(TEXTS)),
                               reference(models["plain"], TEXTS, "cls"), rtol=1e-4, atol=1e-5)
    with pytest.raises(VmrError, match="defines no pooling of its own"):
        identify(f"st:{models['plain']}", "text", "model")
    with pytest.raises(VmrError, match="expected cls, mean, model"):
        identify(f"st:{models['plain']}", "text", "max")


@pytest.mark.parametrize("spec", ["st:vmr-test/absent", "open_clip:hf-hub:vmr-test/absent"])
def test_not_cached_is_one_line_naming_id_and_cache_dir(hub, spec):
    modality = "text" if spec.startswith("st:") else "image"
    t = time.monotonic()
    with pytest.raises(VmrError) as e:
        identify(spec, modality)
    assert time.monotonic() - t < 10
    msg = str(e.value)
    assert "vmr-test/absent" in msg and str(hub) in msg and "\n" not in msg
    assert "hf download vmr-test/absent" in msg


def test_incomplete_cache_entries_are_named(models, hub):
    snap = put_in_hub_cache(hub, "vmr-test/tiny-bert", models["st"])
    (snap.parent.parent / "refs" / "main").write_text("deadbeef")
    with pytest.raises(VmrError, match="names snapshot 'deadbeef', which is not in"):
        identify("st:vmr-test/tiny-bert", "text")
    (snap.parent.parent / "refs" / "main").unlink()  # no ref, one snapshot: that one
    assert identify("st:vmr-test/tiny-bert", "text").name == "st:vmr-test/tiny-bert"
    clip = put_in_hub_cache(hub, "vmr-test/clip", models["clip"])
    (clip / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(VmrError, match="has no open_clip weights"):
        identify("open_clip:hf-hub:vmr-test/clip", "image")
    with pytest.raises(VmrError, match="no such directory ./nope"):
        identify("st:./nope", "text")


def test_cli_not_cached_error_uses_hf_home(tmp_path):
    ds = write_dataset(tmp_path / "ds", ["a", "b"], text=["red lipstick", "blue nail polish"])
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "hfhome"), HF_HUB_OFFLINE="1")
    t = time.monotonic()
    p = subprocess.run([PY, "-m", "vmr", "extract", "--data", ds, "--modality", "text",
                        "--model", "st:org/not-here"], capture_output=True, text=True, env=env,
                       cwd=str(REPO))
    assert time.monotonic() - t < 30  # a fresh interpreter importing the CLI, not a hub timeout
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model st:org/not-here: org/not-here")
    assert str(tmp_path / "hfhome" / "hub") in lines[0]


# ---------------------------------------------------------------------------- open_clip:hf-hub:
def test_open_clip_hub_repo_loads_offline_with_its_preprocessing(models, hub):
    import open_clip
    import torch

    put_in_hub_cache(hub, "vmr-test/tiny-clip", models["clip"])
    ident = identify("open_clip:hf-hub:vmr-test/tiny-clip", "image")
    cfg_sha = sha256_file(models["clip"] / "open_clip_config.json")[:16]
    assert ident.name == f"open_clip:hf-hub:vmr-test/tiny-clip[config sha256:{cfg_sha}]"
    assert ident.weights == "sha256:" + sha256_file(models["clip"] / "open_clip_pytorch_model.bin")
    enc = load_encoder(ident, device="cpu")
    assert enc.dim == 16 and enc.pixels.crop == 32
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got = enc.encode(frames)
    torch.manual_seed(0)  # the same seeded weights, normalised with the repo's mean / std
    ref = open_clip.create_model("vmr-tiny-hub-clip", pretrained=None).eval()
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        want = ref.encode_image(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(VmrError, match="cannot encode text"):
        identify("open_clip:hf-hub:vmr-test/tiny-clip", "text")
    with pytest.raises(VmrError, match="expected open_clip:hf-hub:ORG/NAME"):
        identify("open_clip:hf-hub:../x", "image")
