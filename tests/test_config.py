import pytest

from vmr.errors import VmrError
from vmr.model.config import load_config, to_toml
from vmr.model.config_keys import Config


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["train.lr=0.002", "model.kind=sasrec", "model.item_id_emb=false",
                             "data.modalities=['text']"])
    assert cfg.train.lr == 0.002 and cfg.model.kind == "sasrec"
    assert cfg.model.item_id_emb is False and cfg.data.modalities == ["text"]


def test_toml_round_trip(tmp_path):
    cfg = load_config(None, ["model.d_model=32", "pretrain.epochs=3"])
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    again = load_config(p)
    assert again == cfg and isinstance(again, Config)


@pytest.mark.parametrize("text, fragment", [
    ("[model]\nd_modle = 3\n", "unknown config key model.d_modle"),
    ("[modle]\nd_model = 3\n", "unknown config section [modle]"),
    ("[model]\nd_model = 'big'\n", "model.d_model must be an integer"),
    ("[model]\nshare = 'sometimes'\n", "model.share must be one of tie, init, none"),
    ("[model]\nd_model = 30\nn_heads = 4\n", "multiple of model.n_heads"),
    ("[train\n", "not valid TOML"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, text, fragment):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(VmrError) as e:
        load_config(p)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_bad_overrides():
    with pytest.raises(VmrError, match="expected KEY=VALUE"):
        load_config(None, ["train.lr"])
    with pytest.raises(VmrError, match="SECTION.NAME"):
        load_config(None, ["lr=1"])
    with pytest.raises(VmrError, match="must be true or false"):
        load_config(None, ["model.item_id_emb=yes"])
    with pytest.raises(VmrError, match="config file not found"):
        load_config("/nonexistent.toml")


def test_every_config_key_is_documented_and_example_configs_load():
    """docs/MODEL.md names every key of every section, and the files in configs/ load (unknown
    keys would be errors)."""
    import dataclasses
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "MODEL.md").read_text()
    cfg = Config()
    missing = [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg)
               for f in dataclasses.fields(getattr(cfg, s.name))
               if f"\n{f.name} = " not in doc]
    assert not missing, f"config keys missing from docs/MODEL.md: {missing}"
    files = sorted((root / "configs").glob("*.toml"))
    assert {p.stem for p in files} >= {"default", "paper", "sasrec", "content"}
    loaded = {p.stem: load_config(p) for p in files}
    assert loaded["default"] == Config()
    assert loaded["paper"].model.objective == "masked" and loaded["paper"].pretrain.epochs > 0
    assert loaded["sasrec"].model.kind == "sasrec"
    # the content config is exactly the benchmark row it was chosen as (docs/BENCHMARKS.md)
    assert loaded["content"] == load_config(None, [
        "eval.history=include", "model.item_id_emb=false", "model.repeat_item_bias=true",
        "model.modality_dropout=0.2", "model.d_model=256"])
